"""Caption files for the demo corpus, written the way the real ones look.

- `youtube_auto_vtt`: a YouTube automatic-caption WebVTT as yt-dlp saves it (compare
  ../shared/data/youtube_vtt/auto_*.vtt): `Kind: captions` / `Language: en` header, cues with
  `align:start position:0%`, each line of speech shown as a two-line cue (previous line on top, the new
  line below with one `<HH:MM:SS.mmm><c> word</c>` tag per word after the first, the first word's time
  being the cue start), then a 10 ms "flash" cue holding the finished line and a blank line, so every
  line appears twice ("rolling" captions). Style "classic" is lower case without punctuation (older
  auto captions); "modern" keeps the script's capitals and punctuation (2024+ auto captions).
- `srt`: a plain SubRip file as a human captioner writes it: one cue per sentence (first word start
  to last word end), wrapped into lines of at most 42 characters, with the script's capitals and
  punctuation; optionally CRLF line endings, as many SRT writers produce.
- `merlot_annotation`: a MERLOT / YT-Temporal style annotation JSON (compare
  ../shared/data/yttemporal/*.grover.json): `subtitles` = [{"word", "time"}] (the ASR-style words and
  their start times), `denoised` = chunks of {"noisyasr", "cleanasr", ...} where cleanasr is the
  capitalised, punctuated text (here: the generator's script, not a language model's output, which
  `model_name` says), and `info` = a youtube-dl metadata subset.

All times come from the narration's words, so every caption is truthful to the audio (to the ms).
"""
from __future__ import annotations

import json
from typing import Sequence

from pipeline.demo.script import VideoScript, Word, normalize_words

MAX_LINE_CHARS = 40  # YouTube's auto-caption lines are at most about 40 characters
FLASH = 0.010


def _ts(seconds: float, sep: str = ".") -> str:
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def caption_token(word: str, style: str) -> str:
    """How a script token is written in a caption of `style` ("classic": lower case, no punctuation)."""
    if style == "classic":
        return " ".join(normalize_words(word))
    return word


def caption_lines(words: Sequence[Word], style: str, max_chars: int = MAX_LINE_CHARS,
                  max_gap: float = 2.0) -> list[list[tuple[str, Word]]]:
    """Group words into caption lines: a new line when the text would pass `max_chars` or after a pause."""
    lines: list[list[tuple[str, Word]]] = []
    current: list[tuple[str, Word]] = []
    width = 0
    for w in words:
        token = caption_token(w.word, style)
        if not token:
            continue
        pause = bool(current) and w.start - current[-1][1].end > max_gap
        if current and (width + 1 + len(token) > max_chars or pause):
            lines.append(current)
            current, width = [], 0
        width += len(token) + (1 if current else 0)
        current.append((token, w))
    if current:
        lines.append(current)
    return lines


def youtube_auto_vtt(words: Sequence[Word], duration: float, style: str = "modern") -> str:
    lines = caption_lines(words, style)
    out = ["WEBVTT", "Kind: captions", "Language: en", ""]
    previous_text = " "
    for i, line in enumerate(lines):
        start = line[0][1].start
        tagged = line[0][0] + "".join(f"<{_ts(w.start)}><c> {token}</c>" for token, w in line[1:])
        plain = " ".join(token for token, _ in line)
        if i + 1 == len(lines):  # the last line stays up a little after its last word, with no flash
            end = max(min(duration, line[-1][1].end + 1.5), line[-1][1].end)
            out += [f"{_ts(start)} --> {_ts(end)} align:start position:0%", previous_text, tagged, ""]
            break
        flash_start = lines[i + 1][0][1].start - FLASH
        out += [f"{_ts(start)} --> {_ts(flash_start)} align:start position:0%", previous_text, tagged, ""]
        out += [f"{_ts(flash_start)} --> {_ts(flash_start + FLASH)} align:start position:0%", plain, " ", ""]
        previous_text = plain
    return "\n".join(out) + "\n"


def srt(script: VideoScript, crlf: bool = False, max_chars: int = 42) -> str:
    """One cue per spoken sentence (first word start to last word end), wrapped at `max_chars`."""
    blocks = []
    for step in script.steps:
        words = list(step.words)
        for sentence in step.sentences:
            n = len(sentence.split())
            said, words = words[:n], words[n:]
            wrapped = [l for l in caption_lines(said, "modern", max_chars=max_chars, max_gap=1e9)]
            text = "\n".join(" ".join(token for token, _ in line) for line in wrapped)
            blocks.append(f"{len(blocks) + 1}\n{_ts(said[0].start, ',')} --> {_ts(said[-1].end, ',')}\n{text}\n")
    text = "\n".join(blocks)
    return text.replace("\n", "\r\n") if crlf else text


def merlot_annotation(script: VideoScript, chunk_words: int = 80) -> str:
    subtitles = []
    for w in script.words:
        for token in normalize_words(w.word):
            subtitles.append({"word": token, "time": w.start})
    denoised, noisy, clean = [], [], []
    for step in script.steps:
        noisy += [t for w in step.words for t in normalize_words(w.word)]
        clean += step.sentences
        if len(noisy) >= chunk_words or step is script.steps[-1]:
            denoised.append({"noisyasr": " ".join(noisy), "cleanasr": " ".join(clean), "top_p": None,
                             "ctx_ppl": None, "model_name": "tvts-demo-script"})
            noisy, clean = [], []
    shapes = sorted({s.scene.shape for s in script.steps})
    info = {
        "id": script.youtube_id,
        "uploader": "TVTS demo",
        "upload_date": f"2026{1 + script.index % 12:02d}{1 + script.index % 28:02d}",
        "title": script.title,
        "description": "A narrated sequence of coloured shapes, generated for the TVTS demo corpus.",
        "categories": ["Education"],
        "tags": ["shapes", "colours"] + shapes,
        "duration": int(round(script.duration)),
        "webpage_url": f"https://www.youtube.com/watch?v={script.youtube_id}",
        "ext": "mp4",
        "width": 320,
        "height": 240,
        "fps": 15,
        "subtitles": {},
    }
    return json.dumps({"denoised": denoised, "info": info, "subtitles": subtitles})
