"""WebVTT captions (YouTube auto-generated and manual) -> words. Also the cue reader SRT shares.

`parse_vtt(text, name) -> Transcript` (raw words; pipeline.transcripts.load.load_words sorts and cleans).

Reading. Lines are scanned once; only a timing line (`00:01.000 --> 00:02.000 [settings]`, hours
optional, `.` or `,` before the milliseconds) opens a cue, and the cue's text runs until a blank line or
the next timing line, so a missing blank line between cues is fine. Everything outside cues is ignored:
the `WEBVTT` header, `Kind:`/`Language:` (the language is kept), youtube-dl's `Style:` + `::cue` + `##`
lines, STYLE/NOTE/REGION blocks and cue identifiers. CRLF, CR and LF line ends all work.

YouTube auto captions (the file has inline word timing tags `<00:00:14.670>`): each cue shows the
previous line again (rolling captions) above the new one, and a 10 ms "flash" cue repeats the lines
between them. A line is new when it carries word timing tags; an untagged line ("now", "[Music]") is
new unless it repeats a line of the previous cue; the repeats at the top of a cue are dropped, so each
spoken word comes out once. In a new line the text before the first tag starts at the cue start, the text after
each tag at that tag's time; a word ends where the next one starts, the last one of a cue at the cue's
end. Colour classes `<c.colorXXXXXX>`, nested `<c>`, and a `</c>` left on the next line are markup
only.

Manual captions (no word tags): the words of a cue are spread over the cue's time in proportion to
their character length. If the file is rolling anyway (a converted auto caption: many cues begin with
the previous cue's last line), the repeated leading lines are dropped the same way.

Markup: tags `<...>` and SSA overrides `{\\...}` are removed, HTML entities (`&amp;`, `&nbsp;`, `&#39;`)
decoded.
"""
from __future__ import annotations

import html
import re
from typing import NamedTuple

from pipeline.transcripts.types import Transcript, Word

_TS = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
TIMING_LINE = re.compile(r"^\s*" + _TS + r"\s*-->\s*" + _TS + r"(?:\s.*)?$")
WORD_TAG = re.compile(r"<" + _TS + r">")
ANY_TAG = re.compile(r"<[^<>]*>")
SSA_TAG = re.compile(r"\{\\[^{}]*\}")
_SPACES = re.compile(r"\s+")
_LANGUAGE = re.compile(r"^\s*Language:\s*([A-Za-z][A-Za-z0-9_-]*)\s*$", re.IGNORECASE)


def timestamp(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000.0


class Cue(NamedTuple):
    start: float
    end: float
    lines: list[str]  # raw text lines (markup kept)


def read_cues(text: str, drop_counter_lines: bool = False) -> tuple[list[Cue], dict]:
    """Split a VTT/SRT document into cues; also return header facts ({"language": ...})."""
    header: dict = {}
    cues: list[Cue] = []
    current: Cue | None = None
    # A cue closed by a blank line before any text (some converters write an empty line right after
    # the timing line) takes the orphan text block that follows, unless that is a cue identifier.
    pending: Cue | None = None
    orphans: list[str] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for lineno, line in enumerate(lines):
        match = TIMING_LINE.match(line)
        if match:
            if pending is not None and len(orphans) > 1:
                pending.lines.extend(orphans[:-1])  # the last line right before the timing is its id
            pending, orphans = None, []
            g = match.groups()
            start, end = timestamp(*g[0:4]), timestamp(*g[4:8])
            if current is not None and drop_counter_lines and current.lines and current.lines[-1].strip().isdigit():
                current.lines.pop()  # SRT counter of the next cue, written without a blank line before it
            current = Cue(start, max(end, start), [])
            cues.append(current)
            continue
        if not line.strip():
            if current is not None:
                # A line of spaces inside YouTube cues is a placeholder line: the text may go on after it.
                if line != "" and _continues_after_space_line(lines, lineno):
                    continue
                if not current.lines:
                    pending = current
                current = None
            elif pending is not None and orphans:
                if not orphans[0].lstrip().startswith(("NOTE", "STYLE", "REGION")):
                    pending.lines.extend(orphans)
                pending, orphans = None, []
            continue
        if current is not None:
            current.lines.append(line)
        elif pending is not None:
            orphans.append(line)
        elif not cues:
            lang = _LANGUAGE.match(line)
            if lang and "language" not in header:
                header["language"] = lang.group(1)
    if pending is not None and orphans:
        pending.lines.extend(orphans)
    return cues, header


def _continues_after_space_line(lines: list[str], lineno: int) -> bool:
    """A whitespace-only line followed by a non-empty, non-timing line: the cue goes on."""
    nxt = lines[lineno + 1] if lineno + 1 < len(lines) else ""
    return bool(nxt.strip()) and not TIMING_LINE.match(nxt)


def plain(line: str) -> str:
    """Markup-free text of one caption line, whitespace collapsed."""
    if "<" in line:
        line = ANY_TAG.sub("", line)
    if "{" in line:
        line = SSA_TAG.sub("", line)
    if "&" in line:
        line = html.unescape(line)
    return " ".join(line.replace("\u00a0", " ").split())


def spread(words: list[str], start: float, end: float) -> list[Word]:
    """Words over [start, end] in proportion to their character length (+1 for the space)."""
    if len(words) == 1:
        return [Word(words[0], start, end)]
    if not words:
        return []
    weights = [len(w) + 1 for w in words]
    total = float(sum(weights))
    out, acc = [], 0.0
    for w, weight in zip(words, weights):
        w_start = start + (end - start) * acc / total
        acc += weight
        out.append(Word(w, w_start, start + (end - start) * acc / total))
    return out


def _tagged_line_words(line: str, cue: Cue) -> list[Word]:
    """Words of a line with inline timing tags: text before the first tag starts at the cue start."""
    parts = WORD_TAG.split(line)  # text, (h, m, s, ms), text, (h, m, s, ms), ..., text
    timed: list[tuple[float, list[str]]] = []
    t = cue.start
    for k in range(0, len(parts), 5):
        if k:
            t = timestamp(*parts[k - 4:k])
        words = plain(parts[k]).split()
        if words:
            timed.append((t, words))
    out: list[Word] = []
    for i, (t, ws) in enumerate(timed):
        nxt = timed[i + 1][0] if i + 1 < len(timed) else cue.end
        out.extend(spread(ws, t, max(nxt, t)))
    return out


def _rolling_ratio(cues: list[Cue]) -> float:
    """Share of cues whose first line repeats the previous cue's last line (converted auto captions)."""
    hits = considered = 0
    prev_last = None
    for cue in cues:
        texts = [p for p in (plain(x) for x in cue.lines) if p]
        if not texts:
            continue
        considered += 1
        if prev_last is not None and texts[0] == prev_last:
            hits += 1
        prev_last = texts[-1]
    return hits / considered if considered else 0.0


def cues_to_words(cues: list[Cue]) -> list[Word]:
    """Words of all cues, each spoken word once (see module doc for the rules)."""
    auto = any(WORD_TAG.search(line) for cue in cues for line in cue.lines)
    rolling = auto or _rolling_ratio(cues) >= 0.3
    words: list[Word] = []
    prev_lines: set[str] = set()
    for cue in cues:
        lines = [(raw, plain(raw)) for raw in cue.lines]
        lines = [(raw, text) for raw, text in lines if text]
        new_texts: list[str] = []
        cue_words: list[Word] = []
        untagged_new: list[str] = []
        for raw, text in lines:
            if auto and WORD_TAG.search(raw):
                cue_words.extend(_tagged_line_words(raw, cue))
                new_texts.append(text)
            elif rolling and text in prev_lines and not new_texts and not untagged_new:
                continue  # the rolling repeat of a line shown before
            else:
                untagged_new.append(text)
                new_texts.append(text)
        if untagged_new:
            plain_words = " ".join(untagged_new).split()
            if auto and not cue_words:
                # an untagged new line in an auto caption ("now", "[Music]"): it starts at the cue start
                cue_words = spread(plain_words, cue.start, cue.end) if len(plain_words) > 1 else [
                    Word(plain_words[0], cue.start, cue.end)]
            elif auto:
                # untagged text next to a tagged line (rare): put it right after the tagged words
                tail_start = cue_words[-1].start if cue_words else cue.start
                cue_words.extend(spread(plain_words, tail_start, cue.end))
            else:
                cue_words = spread(plain_words, cue.start, cue.end)
        words.extend(cue_words)
        prev_lines = {text for _raw, text in lines}
    # end of a word = the next word's start when that comes before the word's own (cue) end
    fixed: list[Word] = []
    for i, w in enumerate(words):
        end = w.end
        if i + 1 < len(words) and words[i + 1].start < end:
            end = max(words[i + 1].start, w.start)
        fixed.append(Word(w.word, w.start, end))
    return fixed


def parse_vtt(text: str, name: str = "<vtt>") -> Transcript:
    cues, header = read_cues(text)
    return Transcript(cues_to_words(cues), "vtt", header.get("language"))
