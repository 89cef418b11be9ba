"""DTW alignment of clean words onto timed noisy words, and the MERLOT parser that uses it."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import StageError
from pipeline.transcripts.align import align_words, dtw_path, norm_token, token_cost
from pipeline.transcripts.load import load_words
from pipeline.transcripts.merlot import parse_merlot
from pipeline.transcripts.types import Word


def timed(tokens: list[str], step: float = 0.5) -> list[Word]:
    return [Word(t, i * step, (i + 1) * step) for i, t in enumerate(tokens)]


def test_token_cost():
    assert token_cost("onion", "onion") == 0.0
    assert token_cost("onions", "onion") == pytest.approx(1 / 6)
    assert token_cost("abc", "xyz") == 1.0
    assert norm_token("Sauce.") == "sauce" and norm_token('"To') == "to" and norm_token("I've") == "ive"


def test_identity_keeps_times_and_takes_punctuation():
    noisy = timed("guys this is a delicious sweet onion tomato sauce".split())
    clean = "Guys, this is a delicious sweet onion tomato sauce.".split()
    out = align_words(clean, noisy)
    assert [w.word for w in out] == clean
    assert [(w.start, w.end) for w in out] == [(w.start, w.end) for w in noisy]


def test_insertions_deletions_and_splits():
    noisy = timed("we're gonna make a sweet onions now the secret".split())
    clean = "We're gonna make sweet onions. Now, the very secret".split()  # "a" deleted, "very" inserted
    out = align_words(clean, noisy)
    assert [w.word for w in out] == clean
    by = {w.word: w for w in out}
    assert by["onions."].start == pytest.approx(noisy[5].start)
    assert by["Now,"].start == pytest.approx(noisy[6].start)
    # the inserted word shares a noisy word's time with its neighbour, inside that word's interval
    assert noisy[7].start <= by["very"].start < by["very"].end <= noisy[8].end
    for a, b in zip(out, out[1:]):
        assert a.start <= b.start and a.end <= b.start + 1e-9


def test_one_clean_word_over_two_noisy_words():
    noisy = timed("pro tip for you".split())
    out = align_words("Protip for you.".split(), noisy)
    assert out[0].word == "Protip" and out[0].start == 0.0 and out[0].end == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.integers(0, 10_000))
def test_dtw_path_is_monotone_and_complete(n, m, seed):
    import random

    rng = random.Random(seed)
    costs = [[rng.random() for _ in range(m)] for _ in range(n)]
    path = dtw_path(n, m, lambda i, j: costs[i][j], band=rng.choice([None, 3, 50]))
    assert path[0] == (0, 0) and path[-1] == (n - 1, m - 1)
    for (i0, j0), (i1, j1) in zip(path, path[1:]):
        assert (i1 - i0, j1 - j0) in ((1, 1), (1, 0), (0, 1))
    assert {i for i, _ in path} == set(range(n)) and {j for _, j in path} == set(range(m))


def test_dtw_finds_the_exact_diagonal_when_sequences_match():
    a = "the quick brown fox jumps over the lazy dog".split()
    path = dtw_path(len(a), len(a), lambda i, j: token_cost(a[i], a[j]))
    assert path == [(i, i) for i in range(len(a))]


def test_grover_json_clean_words_get_noisy_times(shared_data):
    text = (shared_data / "yttemporal/WAaKRUoY6Io.grover.json").read_text()
    data = json.loads(text)
    transcript = parse_merlot(text, "grover.json")
    words = transcript.words
    clean_tokens = [t for chunk in data["denoised"] for t in chunk["cleanasr"].split()]
    # the two denoised chunks cover all 641 subtitle words: every word is a clean, punctuated one
    assert [w.word for w in words] == clean_tokens
    assert transcript.notes == {"clean_words": 642, "asr_words": 641}
    times = [s["time"] for s in data["subtitles"]]
    assert words[0].start == 0.0 and words[-1].start == pytest.approx(times[-1])
    assert min(w.start for w in words) >= 0 and max(w.end for w in words) <= data["info"]["duration"]
    for a, b in zip(words, words[1:]):
        assert a.start <= b.start
    # each clean word starts at (or inside) the time of a noisy word that spells it the same way
    noisy = {(s["word"].lower(), s["time"]) for s in data["subtitles"]}
    exact = sum((norm_token(w.word), w.start) in {(norm_token(x), t) for x, t in noisy} for w in words)
    assert exact / len(words) > 0.9
    # the second chunk starts where its noisy text starts: "box says" at the 323rd subtitle word
    second = words[len(data["denoised"][0]["cleanasr"].split())]
    assert second.word == "Box" and second.start == pytest.approx(data["subtitles"][322]["time"])


def test_merlot_without_denoised_and_words_outside_chunks():
    data = {"subtitles": [{"word": w, "time": t} for w, t in
                          [("hello", 0.0), ("there", 0.4), ("general", 1.0), ("kenobi", 1.6), ("bad", "x")]],
            "denoised": [{"noisyasr": "hello there", "cleanasr": "Hello there!"}],
            "info": {"duration": 2.0}}
    words = parse_merlot(json.dumps(data)).words
    assert [w.word for w in words] == ["Hello", "there!", "general", "kenobi"]
    assert words[-1].end == pytest.approx(2.0)  # last word: 1 s, capped by the duration
    plain = parse_merlot(json.dumps({"subtitles": data["subtitles"]})).words
    assert [w.word for w in plain] == ["hello", "there", "general", "kenobi"]
    assert plain[0].end == pytest.approx(0.4)


def test_merlot_bare_list_and_errors():
    words = load_words(json.dumps([{"word": "a", "start": 1.0, "end": 1.2}, {"word": "b", "time": 2.0}]).encode()).words
    assert [(w.word, w.start, w.end) for w in words] == [("a", 1.0, 1.2), ("b", 2.0, 3.0)]
    with pytest.raises(StageError) as info:
        parse_merlot('{"denoised": []}', "x.json")
    assert info.value.error_class == "caption_parse"
