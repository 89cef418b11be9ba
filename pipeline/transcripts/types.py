"""The transcript types every stage shares: timed words and a transcript.

- `Word(word, start, end)`: a NamedTuple, times in seconds on the video's clock, punctuation and case
  kept when the source has them. A transcript's words are sorted by start and never overlap
  (end <= next start; `sort_and_fix` makes them so).
- `Transcript(words, source_kind, language)`: `source_kind` is "vtt", "srt", "merlot" (or "asr" for
  `pipeline.transcripts.asr`'s output); `language` is what the file declares (VTT `Language:` header),
  else None.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import NamedTuple, Union

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
