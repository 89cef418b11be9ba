"""Word cleaning and the language-check hook."""
from __future__ import annotations

import pytest

from common.config import ConfigError
from pipeline.errors import SkipSample
from pipeline.transcripts.clean import CleanConfig, check_language, clean_words, ensure_language
from pipeline.transcripts.types import Transcript, Word


def words_of(text: str) -> list[Word]:
    return [Word(t, float(i), float(i) + 0.5) for i, t in enumerate(text.split())]


def texts(words: list[Word]) -> list[str]:
    return [w.word for w in words]


def test_bracket_tags_music_and_speaker_marks():
    out = clean_words(words_of("[Music] >> so [Applause] we [background noise] go (laughter) ♪ la ♪ now"))
    assert texts(out) == ["so", "we", "go", "la", "now"]
    # times of the kept words are unchanged
    assert out[0] == Word("so", 2.0, 2.5)


def test_unclosed_bracket_is_kept_as_a_word():
    assert texts(clean_words(words_of("[laughs and then some more words"))) == [
        "[laughs", "and", "then", "some", "more", "words"]


def test_unicode_whitespace_quotes_and_invisible_characters():
    raw = [Word("ｆｕｌｌ", 0, 1), Word("I\u2019m", 1, 2), Word("\u201chi\u201d", 2, 3), Word("zero\u200bwidth", 3, 4),
           Word("bad\ufffd\x14byte", 4, 5), Word("\u00a0", 5, 6), Word("—", 6, 7), Word("ﬁne", 7, 8)]
    assert texts(clean_words(raw)) == ["full", "I'm", '"hi"', "zerowidth", "badbyte", "fine"]


def test_lowercase_and_options_off():
    raw = words_of("Hello [Music] World -")
    assert texts(clean_words(raw, CleanConfig(lowercase=True))) == ["hello", "world"]
    keep = CleanConfig(drop_bracket_tags=False, drop_symbol_only=False)
    assert texts(clean_words(raw, keep)) == ["Hello", "[Music]", "World", "-"]


def test_config_validation():
    with pytest.raises(ConfigError):
        CleanConfig(normalize_unicode="NFX").validate()
    with pytest.raises(ConfigError):
        CleanConfig(language_detector="magic").validate()


ENGLISH = ("so today we are going to make a pasta and it is the best one that you will have had in a long "
           "time because the sauce is made with onions and they are sweet when you cook them for a while")
GERMAN = ("heute machen wir eine pasta und das ist die beste die du seit langem gegessen hast weil die soße "
          "mit zwiebeln gemacht wird und sie sind süß wenn man sie eine weile kocht auch ich mag es sehr")


def test_language_declared_mismatch_is_skipped():
    cfg = CleanConfig(language="en")
    assert check_language(Transcript(words_of(ENGLISH), "vtt", "en-US"), cfg) is None
    with pytest.raises(SkipSample) as info:
        ensure_language(Transcript(words_of(ENGLISH), "vtt", "de"), cfg, "vid1")
    assert info.value.reason == "wrong_language" and "vid1" in info.value.message


def test_language_detected_from_function_words():
    cfg = CleanConfig(language="en")
    assert check_language(Transcript(words_of(ENGLISH), "asr", None), cfg) is None
    reason = check_language(Transcript(words_of(GERMAN), "asr", None), cfg)
    assert reason and "de" in reason and "detected" in reason
    # too few words to tell: passes
    assert check_language(Transcript(words_of("hallo welt"), "asr", None), cfg) is None
    # no target language: never checked
    assert check_language(Transcript(words_of(GERMAN), "asr", "de"), CleanConfig()) is None
    # "declared" only trusts the file's own label
    assert check_language(Transcript(words_of(GERMAN), "asr", None), CleanConfig(language="en",
                                                                                 language_detector="declared")) is None


def always_french(words, declared):
    return "fr"


def test_custom_detector_hook():
    cfg = CleanConfig(language="en", language_detector=f"{__name__}:always_french")
    assert "fr" in check_language(Transcript(words_of(ENGLISH), "asr", None), cfg)
