"""Word cleaning between the transcript parsers/ASR and segmentation.

Public API (stable):

- `CleanConfig`: normalize_unicode ("NFKC"; "" to keep), ascii_quotes (curly quotes -> ' and "),
  drop_bracket_tags ([Music], [Applause], (laughter), multi-word [background noise], music notes),
  drop_speaker_marks (YouTube's `>>` speaker change), drop_symbol_only (words with no letter or digit),
  lowercase (off), language (target language code, None = no check), language_detector ("declared":
  trust only a declared language; "stopwords": declared language, else a function-word share
  estimate for the languages in `STOPWORDS`; or "module:function" for your own detector),
  min_words_for_detection.
- `clean_words(words, cfg) -> list[Word]`: the cleaned words, times unchanged; a word whose text becomes
  empty is dropped.
- `check_language(transcript, cfg) -> str | None`: None when the transcript may be used, else a one-line
  reason; `ensure_language(transcript, cfg, name)` raises `SkipSample("wrong_language", reason)` for it.
  A custom detector is a callable `(words: list[Word], declared: str | None) -> str | None` returning
  a language code (None: unknown, which passes).
"""
from __future__ import annotations

import importlib
import re
import unicodedata
from dataclasses import dataclass

from pipeline.errors import SkipSample
from pipeline.transcripts.types import Transcript, Word


@dataclass
class CleanConfig:
    normalize_unicode: str = "NFKC"
    ascii_quotes: bool = True
    drop_bracket_tags: bool = True
    drop_speaker_marks: bool = True
    drop_symbol_only: bool = True
    lowercase: bool = False
    language: str | None = None
    language_detector: str = "stopwords"
    min_words_for_detection: int = 30
    max_tag_words: int = 4  # a bracket tag spans at most this many words ("[background noise]")

    def validate(self) -> None:
        from common.config import ConfigError

        if self.normalize_unicode not in ("", "NFC", "NFKC", "NFD", "NFKD"):
            raise ConfigError(f"config key 'clean.normalize_unicode': {self.normalize_unicode!r} is not one of "
                              "'', NFC, NFKC, NFD, NFKD")
        if self.language_detector not in ("declared", "stopwords") and ":" not in self.language_detector:
            raise ConfigError("config key 'clean.language_detector': use 'declared', 'stopwords' or "
                              f"'module:function', got {self.language_detector!r}")


_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"'})
# zero-width characters, soft hyphen, the replacement character of undecodable bytes, C0/C1 controls
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad\ufffd\x00-\x1f\x7f-\x9f]")
_MUSIC = re.compile("[\u266a\u266b\u266c\u2669\U0001f3b5\U0001f3b6]")
_HAS_ALNUM = re.compile(r"\w", re.UNICODE)
_OPEN, _CLOSE = "[(", "])"


def _normalise(text: str, cfg: CleanConfig) -> str:
    if text.isascii() and text.isprintable() and " " not in text:
        # the common case, and exact: NFKC, the quote map and the invisible characters leave such text alone
        return text.lower() if cfg.lowercase else text
    if cfg.normalize_unicode:
        text = unicodedata.normalize(cfg.normalize_unicode, text)
    if cfg.ascii_quotes:
        text = text.translate(_QUOTES)
    text = _INVISIBLE.sub("", text)
    if cfg.drop_bracket_tags:
        text = _MUSIC.sub("", text)
    text = "".join(text.split())  # a word never holds whitespace
    return text.lower() if cfg.lowercase else text


def _tag_end(words: list[str], i: int, limit: int) -> int:
    """If words[i] opens a bracket tag closed within `limit` words, the index after its end; else i."""
    first = words[i]
    if not first or first[0] not in _OPEN:
        return i
    closer = _CLOSE[_OPEN.index(first[0])]
    for j in range(i, min(len(words), i + limit)):
        body = words[j].rstrip(".,;:!?")
        if body.endswith(closer):
            return j + 1
    return i


def clean_words(words: list[Word], cfg: CleanConfig | None = None) -> list[Word]:
    cfg = cfg or CleanConfig()
    texts = [_normalise(w.word, cfg) for w in words]
    out: list[Word] = []
    i = 0
    while i < len(words):
        if cfg.drop_bracket_tags:
            end = _tag_end(texts, i, cfg.max_tag_words)
            if end > i:
                i = end
                continue
        text = texts[i]
        if cfg.drop_speaker_marks and text.startswith(">>"):
            text = text.lstrip(">")
        if text and (not cfg.drop_symbol_only or _HAS_ALNUM.search(text)):
            out.append(Word(text, words[i].start, words[i].end))
        i += 1
    return out


# Frequent function words: a transcript in language L has a sizeable share of them (>= 15% in ordinary
# English speech); other languages score near zero. Enough to catch a wrongly labelled video.
STOPWORDS = {
    "en": set("the a an and or but of to in on at for with is are was were be been it this that these those "
              "i you he she we they me him her us them my your his our their not no so if do does did have has "
              "had will would can could what which who there here just like".split()),
    "de": set("der die das und oder ist sind war nicht ein eine einen ich du er sie wir ihr mit von zu auf "
              "für den dem des im es auch aber wie".split()),
    "fr": set("le la les un une et ou est sont était pas je tu il elle nous vous ils elles de du des à en "
              "dans pour avec ce cette que qui mais".split()),
    "es": set("el la los las un una y o es son era no yo tú él ella nosotros de del a en con por para que "
              "pero como este esta".split()),
}


def _stopword_language(words: list[Word], min_words: int) -> str | None:
    tokens = [w.word.lower().strip(".,;:!?\"'()") for w in words]
    tokens = [t for t in tokens if t]
    if len(tokens) < min_words:
        return None
    scores = {lang: sum(t in vocab for t in tokens) / len(tokens) for lang, vocab in STOPWORDS.items()}
    lang, share = max(scores.items(), key=lambda kv: kv[1])
    return lang if share >= 0.08 else "unknown"


def _base(code: str | None) -> str | None:
    return code.lower().replace("_", "-").split("-")[0] if code else None


def check_language(transcript: Transcript, cfg: CleanConfig) -> str | None:
    """None if the transcript is in cfg.language (or that can't be told), else a one-line reason."""
    target = _base(cfg.language)
    if not target:
        return None
    declared = _base(transcript.language)
    if cfg.language_detector == "declared":
        found = declared
    elif cfg.language_detector == "stopwords":
        found = declared or _stopword_language(transcript.words, cfg.min_words_for_detection)
        if found == "unknown" and target not in STOPWORDS:
            found = None  # the estimate only knows a few languages: don't reject others
    else:
        module, _, func = cfg.language_detector.partition(":")
        found = _base(getattr(importlib.import_module(module), func)(transcript.words, transcript.language))
    if found is None or found == target:
        return None
    how = "declared" if declared and found == declared else "detected"
    return f"transcript language {found} ({how}) is not the target {target}"


def ensure_language(transcript: Transcript, cfg: CleanConfig, name: str = "") -> None:
    reason = check_language(transcript, cfg)
    if reason:
        raise SkipSample("wrong_language", f"{name}: {reason}" if name else reason)
