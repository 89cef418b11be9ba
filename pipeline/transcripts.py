"""Transcript stage: any caption/annotation file -> one list of timed words.

Public API (stable; pipeline/run.py and `python -m pipeline words` call it):

- `Word(word, start, end)`: a NamedTuple, times in seconds on the video's clock, punctuation and case
  kept when the source has them. A transcript's words are sorted by start and never overlap
  (end <= next start).
- `Transcript(words, source_kind, language)`: `source_kind` is "vtt", "srt", "merlot" (or "asr" for
  pipeline/asr.py's output); `language` is what the file declares (VTT `Language:` header), else None.
- `load_words(source, *, name=None, clean=True, duration=None) -> Transcript`: `source` is a path, a
  `bytes` object or an already decoded `str`. The format is found from the content (`detect_format`),
  the file name only breaks ties. `clean=True` applies `pipeline.clean.clean_words` with its defaults
  (drops `[Music]`-style tags, normalises unicode/whitespace); pass a `CleanConfig` to choose, or False
  for the parser's raw words. `duration` (seconds, optional) bounds the last word's end for formats
  that only give start times (MERLOT).
- `detect_format(text) -> "vtt" | "srt" | "merlot"`; `decode_text(bytes) -> str` (UTF-8/UTF-16 with BOM,
  else UTF-8, else cp1252, else latin-1: never fails).
- Bad input raises `StageError(stage="transcript", error_class="caption_parse" | "caption_missing")`
  with a one-line message naming the input; it never crashes with another exception type.
- `main_words(argv)`: `python -m pipeline words FILE [--raw]` prints one JSON object per word:
  `{"word", "start", "end"}`.

Formats: pipeline/captions_vtt.py (YouTube auto and manual WebVTT), pipeline/captions_srt.py (SubRip),
pipeline/captions_merlot.py (MERLOT / YT-Temporal annotation JSON, clean words aligned by
pipeline/align.py).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Union

from pipeline.errors import StageError

STAGE = "transcript"
SOURCE_KINDS = ("vtt", "srt", "merlot", "asr")


class Word(NamedTuple):
    word: str
    start: float
    end: float

    def to_json(self) -> dict:
        return {"word": self.word, "start": self.start, "end": self.end}


@dataclass
class Transcript:
    words: list[Word]
    source_kind: str
    language: str | None = None
    notes: dict = field(default_factory=dict)  # parser facts worth keeping (e.g. aligned word count)


Source = Union[str, bytes, os.PathLike]

_TIMING = re.compile(r"(?:\d+:)?\d{1,2}:\d{2}[.,]\d{1,3}\s*-->")


def decode_text(data: bytes) -> str:
    """Decode caption bytes without ever failing: BOM'd UTF-8/16, UTF-8, cp1252, latin-1."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _looks_binary(text: str) -> bool:
    sample = text[:4096]
    if not sample:
        return False
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\r\n\t\f")
    return "\x00" in sample or controls / len(sample) > 0.05


def detect_format(text: str, name: str | None = None) -> str:
    """"vtt", "srt" or "merlot" from the content; the file name only breaks ties. Raises StageError."""
    head = text.lstrip("\ufeff \t\r\n")
    label = name or "<caption bytes>"
    if head.startswith(("{", "[")):
        return "merlot"
    if head.startswith("WEBVTT"):
        return "vtt"
    match = _TIMING.search(text[:65536])
    if match:
        return "srt" if "," in match.group(0) else "vtt"
    if _looks_binary(text):
        raise StageError(STAGE, "caption_parse", f"{label}: not a caption file (binary content)")
    if not head:
        raise StageError(STAGE, "caption_parse", f"{label}: empty caption file")
    raise StageError(STAGE, "caption_parse",
                     f"{label}: no WEBVTT header, no cue timing line and not JSON: not a VTT/SRT/MERLOT file")


def _read_source(source: Source, name: str | None) -> tuple[str, str]:
    if isinstance(source, bytes):
        return decode_text(source), name or "<caption bytes>"
    if isinstance(source, str) and ("\n" in source or source.lstrip().startswith(("WEBVTT", "{"))):
        return source.lstrip("\ufeff"), name or "<caption text>"
    path = Path(os.fspath(source))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StageError(STAGE, "caption_missing", f"{path}: caption file not found") from None
    except OSError as exc:
        raise StageError(STAGE, "caption_missing", f"{path}: cannot read caption file ({exc})") from None
    return decode_text(data), name or str(path)


def parse_text(text: str, name: str, duration: float | None = None) -> Transcript:
    """Parse decoded text (format by content) into raw, uncleaned words."""
    kind = detect_format(text, name)
    if _looks_binary(text):
        raise StageError(STAGE, "caption_parse", f"{name}: not a caption file (binary content)")
    try:
        if kind == "merlot":
            from pipeline.captions_merlot import parse_merlot

            return parse_merlot(text, name, duration=duration)
        if kind == "srt":
            from pipeline.captions_srt import parse_srt

            return parse_srt(text, name)
        from pipeline.captions_vtt import parse_vtt

        return parse_vtt(text, name)
    except StageError:
        raise
    except Exception as exc:  # a parser bug on odd input must still be a counted failure, not a crash
        raise StageError(STAGE, "caption_parse", f"{name}: cannot parse {kind} ({type(exc).__name__}: {exc})") from exc


def sort_and_fix(words: list[Word]) -> list[Word]:
    """Sort by start (stable) and make ends monotone: start <= end <= next start."""
    words = sorted(words, key=lambda w: w.start)
    fixed: list[Word] = []
    for i, w in enumerate(words):
        end = max(w.end, w.start)
        if i + 1 < len(words):
            end = min(end, max(words[i + 1].start, w.start))
        fixed.append(Word(w.word, round(w.start, 3), round(end, 3)))
    return fixed


def load_words(source: Source, *, name: str | None = None, clean=True,
               duration: float | None = None) -> Transcript:
    """Parse a caption/annotation file (path, bytes or text) into a Transcript (see module doc)."""
    text, label = _read_source(source, name)
    transcript = parse_text(text, label, duration=duration)
    transcript.words = sort_and_fix(transcript.words)
    if clean is not False and clean is not None:
        from pipeline.clean import CleanConfig, clean_words

        cfg = clean if isinstance(clean, CleanConfig) else CleanConfig()
        transcript.words = clean_words(transcript.words, cfg)
    return transcript


def main_words(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline words",
        description="Parse one caption/annotation file (WebVTT, SRT or MERLOT JSON; format found from the "
                    "content) and print one JSON object per word: {\"word\", \"start\", \"end\"} in seconds.")
    parser.add_argument("file", help="caption file: YouTube/manual .vtt, .srt, or MERLOT/YT-Temporal .json")
    parser.add_argument("--raw", action="store_true",
                        help="print the parser's words without cleaning (keeps [Music]-style tags)")
    parser.add_argument("--lowercase", action="store_true", help="lowercase the words")
    args = parser.parse_args(argv)
    clean: object = False
    if not args.raw:
        from pipeline.clean import CleanConfig

        clean = CleanConfig(lowercase=args.lowercase)
    try:
        transcript = load_words(args.file, clean=clean)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = sys.stdout
    for w in transcript.words:
        out.write(json.dumps(w.to_json(), ensure_ascii=False) + "\n")
    return 0
