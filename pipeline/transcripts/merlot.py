"""MERLOT / YT-Temporal-180M per-video annotation JSON -> words.

`parse_merlot(text, name, duration=None) -> Transcript` (pipeline.transcripts.load.load_words sorts/cleans).

The file is an object with `subtitles` (word-level YouTube ASR: `[{"word": "guys", "time": 0.0}, ...]`,
`time` = the word's start in seconds), optionally `denoised` (chunks `{"noisyasr", "cleanasr", ...}`: a
language model's punctuated, cased rewrite of consecutive stretches of the ASR) and `info` (youtube-dl
metadata; `info.duration` bounds the last word). A bare list of `{word, time}` (or `{word, start, end}`)
objects is accepted too.

Times: a word ends where the next one starts; the last one 1 s after its start (at most the duration).

Clean words: each `denoised` chunk is located in the subtitle words (its `noisyasr` tokens matched
exactly from where the previous chunk ended, else searched for, else assumed to follow the previous
chunk), and its `cleanasr` tokens are aligned onto that stretch by dynamic time warping over an edit
distance cost (pipeline/transcripts/align.py). The clean words replace the noisy ones of that stretch; subtitle words
outside every chunk stay as they are. `Transcript.notes` records how many words came from clean text.
Entries without a usable word or time are skipped; a file with neither `subtitles` nor such a list is
a `StageError(caption_parse)`.
"""
from __future__ import annotations

import json
import math

from pipeline.errors import StageError
from pipeline.transcripts.align import align_words
from pipeline.transcripts.types import STAGE, Transcript, Word

LAST_WORD_SECONDS = 1.0


def _number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x >= 0 else None


def _timed_words(entries: list, duration: float | None) -> list[Word]:
    rows: list[tuple[str, float, float | None]] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        word = entry.get("word")
        start = _number(entry.get("time", entry.get("start")))
        if not isinstance(word, str) or not word.strip() or start is None:
            continue
        rows.append((word.strip(), start, _number(entry.get("end"))))
    rows.sort(key=lambda r: r[1])
    words: list[Word] = []
    for i, (word, start, end) in enumerate(rows):
        if end is None:
            end = rows[i + 1][1] if i + 1 < len(rows) else start + LAST_WORD_SECONDS
        if duration is not None:
            end = min(end, max(duration, start))
        words.append(Word(word, start, max(end, start)))
    return words


def _locate(noisy: list[str], words: list[str], cursor: int) -> int:
    """Index where the chunk's noisy tokens start in the subtitle words."""
    n = len(noisy)
    if words[cursor:cursor + n] == noisy:
        return cursor
    probe = noisy[: min(n, 8)]
    for i in range(len(words) - len(probe) + 1):
        if words[i:i + len(probe)] == probe:
            return i
    return cursor


def parse_merlot(text: str, name: str = "<merlot json>", duration: float | None = None) -> Transcript:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StageError(STAGE, "caption_parse", f"{name}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, list):
        data = {"subtitles": data}
    if not isinstance(data, dict) or not isinstance(data.get("subtitles"), list):
        raise StageError(STAGE, "caption_parse",
                         f"{name}: JSON without a 'subtitles' list of {{word, time}}: not a MERLOT annotation")
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    if duration is None:
        duration = _number(info.get("duration"))
    timed = _timed_words(data["subtitles"], duration)
    denoised = data.get("denoised") if isinstance(data.get("denoised"), list) else []
    plain = [w.word for w in timed]
    out: list[Word] = []
    cursor = 0
    n_clean = 0
    for chunk in denoised:
        if not isinstance(chunk, dict):
            continue
        noisy = str(chunk.get("noisyasr") or "").split()
        clean = str(chunk.get("cleanasr") or "").split()
        if not noisy or not clean or cursor >= len(timed):
            continue
        begin = _locate(noisy, plain, cursor)
        if begin < cursor:  # chunks overlap or repeat: keep what is already aligned
            continue
        stop = min(len(timed), begin + len(noisy))
        out.extend(timed[cursor:begin])
        aligned = align_words(clean, timed[begin:stop])
        out.extend(aligned)
        n_clean += len(aligned)
        cursor = stop
    out.extend(timed[cursor:])
    language = info.get("language") if isinstance(info.get("language"), str) else None
    return Transcript(out, "merlot", language, notes={"clean_words": n_clean, "asr_words": len(timed)})
