"""Any caption/annotation file -> one `Transcript` of timed words (format found from the content).

Public API (stable; pipeline/stages.py and `python -m pipeline words` call it):

- `load_words(source, *, name=None, clean=True, duration=None) -> Transcript`: `source` is a path, a
  `bytes` object or an already decoded `str`. The format is found from the content (`detect_format`),
  the file name only breaks ties. `clean=True` applies `pipeline.transcripts.clean.clean_words` with its
  defaults (drops `[Music]`-style tags, normalises unicode/whitespace); pass a `CleanConfig` to choose, or
  False for the parser's raw words. `duration` (seconds, optional) bounds the last word's end for formats
  that only give start times (MERLOT).
- `detect_format(text) -> "vtt" | "srt" | "merlot"`; `decode_text(bytes) -> str` (UTF-8/UTF-16 with BOM,
  else UTF-8, else cp1252, else latin-1: never fails).
- Bad input raises `StageError(stage="transcript", error_class="caption_parse" | "caption_missing")`
  with a one-line message naming the input; it never crashes with another exception type.
- `main_words(argv)`: `python -m pipeline words FILE [--raw]` prints one JSON object per word:
  `{"word", "start", "end"}`.

Formats: `vtt` (YouTube auto and manual WebVTT), `srt` (SubRip), `merlot` (MERLOT / YT-Temporal annotation
JSON, clean words aligned by `align`), all in this package.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from pipeline.errors import StageError
from pipeline.transcripts.clean import CleanConfig, clean_words
from pipeline.transcripts.merlot import parse_merlot
from pipeline.transcripts.srt import parse_srt
from pipeline.transcripts.types import STAGE, Source, Transcript, sort_and_fix
from pipeline.transcripts.vtt import parse_vtt

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
            return parse_merlot(text, name, duration=duration)
        if kind == "srt":
            return parse_srt(text, name)
        return parse_vtt(text, name)
    except StageError:
        raise
    except Exception as exc:  # a parser bug on odd input must still be a counted failure, not a crash
        raise StageError(STAGE, "caption_parse", f"{name}: cannot parse {kind} ({type(exc).__name__}: {exc})") from exc


def load_words(source: Source, *, name: str | None = None, clean=True,
               duration: float | None = None) -> Transcript:
    """Parse a caption/annotation file (path, bytes or text) into a Transcript (see module doc)."""
    text, label = _read_source(source, name)
    transcript = parse_text(text, label, duration=duration)
    transcript.words = sort_and_fix(transcript.words)
    if clean is not False and clean is not None:
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
        clean = CleanConfig(lowercase=args.lowercase)
    try:
        transcript = load_words(args.file, clean=clean)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        for w in transcript.words:
            sys.stdout.write(json.dumps(w.to_json(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
