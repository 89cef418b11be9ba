"""Real speech for the ASR tests: pocketsphinx-testdata references and word error rate (WER).

WER = word edit distance / reference words, over lower-case words without punctuation
(`pipeline.demo.script.normalize_words`, the same comparison the demo's caption tests use).
"""
from __future__ import annotations

import re
from pathlib import Path

from pipeline.demo.script import normalize_words
from pipeline.demo.transcript_check import word_errors

SPHINX = Path("/usr/share/pocketsphinx/test/data")  # Debian pocketsphinx-testdata (scripts/setup.sh)


def pooled_wer(pairs: list[tuple[str, str]]) -> float:
    """WER over all (reference, hypothesis) texts together: total errors / total reference words."""
    refs = [normalize_words(r) for r, _ in pairs]
    return sum(word_errors(r, normalize_words(h)) for r, (_, h) in zip(refs, pairs)) / sum(map(len, refs))


def sphinx_references(transcription: Path) -> dict[Path, str]:
    """pocketsphinx's `<s> words </s> (file id)` lines -> {wav path: words}; {} when not installed."""
    if not transcription.is_file():
        return {}
    refs = {}
    for line in transcription.read_text().splitlines():
        match = re.match(r"\s*<s>(.*)</s>\s*\((.+)\)\s*$", line)
        if match:
            refs[transcription.parent / f"{match.group(2)}.wav"] = match.group(1).strip()
    return refs


def text_of(words) -> str:
    """The text of ASR words: `Word`s or their JSON form."""
    return " ".join(w["word"] if isinstance(w, dict) else w.word for w in words)
