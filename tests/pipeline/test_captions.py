"""Caption parsers on every real file in shared/data and on hand-made edge cases.

Expected counts come from reading the files: for a YouTube auto caption, the words are the lines with
inline timing tags (one leading word + one per `<hh:mm:ss.mmm><c>` tag; counted with grep) plus the
untagged one-word lines that are not the rolling repeat of the previous cue (listed per file below,
found by reading the cues), minus `[Music]` (dropped by cleaning).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.errors import StageError
from pipeline.transcripts.load import detect_format, load_words, main_words
from pipeline.transcripts.types import Word

YT = "youtube_vtt"

# file, kind, cleaned word count, (first word, its start), (last word, its start)
REAL_FILES = [
    # 25 tagged lines + 120 word tags = 145, + "survive" (62.8 s) and "hell" (86.08 s) on untagged lines
    (f"{YT}/auto_Downlodr_video.en.vtt", "vtt", 147, ("the", 6.799), ("I", 162.16)),
    # 61 + 380 = 441, + "now" (41.91 s) and "cinematics" (160.33 s); four [Music] cues dropped
    (f"{YT}/auto_EthanSK_test.en.vtt", "vtt", 443, ("today's", 13.67), ("goodbye", 235.69)),
    # the same captions converted to SRT (rolling duplicates kept by the converter, mixed CRLF/LF)
    (f"{YT}/auto_EthanSK_test.srt", "srt", 443, ("today's", 13.67), ("goodbye", None)),
    # 383 + 1989 = 2372, + 13 untagged lines ("generations.", "these", "superficial.", ...)
    (f"{YT}/auto_mtabe_subtitles.en.vtt", "vtt", 2385, ("Modernity", 5.56), ("soon.", 1144.4)),
    # 1 + 5 = 6, + "yeah" and "what"
    (f"{YT}/auto_webvttpy_youtube_dl.vtt", "vtt", 8, ("yeah", 286.07), ("telling", 305.069)),
    # 145 whitespace-separated tokens in the cue text (wc -w), minus "[Intro]"
    (f"{YT}/manual_1c7_crashcourse_youtube-dl.vtt", "vtt", 144, ("Hi", 0.16), ("it:", None)),
    (f"{YT}/manual_gbif_subtitles.en.vtt", "vtt", 23, ("Please", 1.12), ("way.", None)),
    # 88 + 553 = 641 (= the grover.json subtitles), + "sweetness" (188.38 s)
    ("yttemporal/WAaKRUoY6Io.en.vtt", "vtt", 642, ("guys", 0.0), ("protip", 247.34)),
    ("yttemporal/WAaKRUoY6Io.grover.json", "merlot", 642, ("Guys,", 0.0), ("protip.", 247.34)),
]


def assert_well_formed(words: list[Word]) -> None:
    assert words, "no words"
    for a, b in zip(words, words[1:]):
        assert a.start <= b.start, (a, b)
        assert a.end <= b.start + 1e-9, (a, b)
    for w in words:
        assert w.start <= w.end
        assert w.word and not any(ch.isspace() for ch in w.word)
        assert not w.word.startswith("["), w


def assert_no_rolling_repeat(words: list[Word], n: int = 6) -> None:
    """A rolling caption read naively repeats whole lines back to back."""
    tokens = [w.word.lower() for w in words]
    for i in range(len(tokens) - 2 * n + 1):
        assert tokens[i:i + n] != tokens[i + n:i + 2 * n], " ".join(tokens[i:i + 2 * n])


@pytest.mark.parametrize("rel, kind, count, first, last", REAL_FILES, ids=[r[0] for r in REAL_FILES])
def test_real_files(shared_data, rel, kind, count, first, last):
    transcript = load_words(shared_data / rel)
    words = transcript.words
    assert transcript.source_kind == kind
    assert len(words) == count
    assert words[0].word == first[0] and words[0].start == pytest.approx(first[1])
    assert words[-1].word == last[0]
    if last[1] is not None:
        assert words[-1].start == pytest.approx(last[1])
    assert_well_formed(words)
    assert_no_rolling_repeat(words)


def test_youtube_vtt_matches_merlot_subtitles(shared_data):
    """MERLOT's subtitles were made from this VTT: same words, same start times (MERLOT's own parser
    dropped the untagged one-word line "sweetness"; we keep it, it is spoken)."""
    vtt = load_words(shared_data / "yttemporal/WAaKRUoY6Io.en.vtt").words
    grover = json.loads((shared_data / "yttemporal/WAaKRUoY6Io.grover.json").read_text())
    subtitles = grover["subtitles"]
    ours = [w for w in vtt if w.word != "sweetness"]
    assert [w.word for w in ours] == [s["word"] for s in subtitles]
    assert [w.start for w in ours] == pytest.approx([s["time"] for s in subtitles], abs=1e-6)
    sweet = [w for w in vtt if w.word == "sweetness"]
    assert len(sweet) == 1 and sweet[0].start == pytest.approx(188.38)


def test_srt_conversion_gives_the_vtt_words(shared_data):
    vtt = load_words(shared_data / f"{YT}/auto_EthanSK_test.en.vtt").words
    srt = load_words(shared_data / f"{YT}/auto_EthanSK_test.srt").words
    assert [w.word for w in srt] == [w.word for w in vtt]
    # cue-level timing: each word lies inside the cue where its line first appeared, so within a
    # cue's length (at most ~3.3 s here) of the word-level time
    assert max(abs(a.start - b.start) for a, b in zip(srt, vtt)) < 3.5


def test_youtube_word_timing_and_ends(shared_data):
    words = load_words(shared_data / f"{YT}/auto_webvttpy_youtube_dl.vtt").words
    assert [w.word for w in words] == ["yeah", "what", "this", "will", "happen", "is", "I'm", "telling"]
    assert [w.start for w in words] == pytest.approx([286.07, 286.47, 304.08, 304.199, 304.379, 304.62,
                                                      304.86, 305.069])
    # a word ends where the next starts; the last one of a cue at the cue's end
    assert words[0].end == pytest.approx(286.47)
    assert words[2].end == pytest.approx(304.199)
    assert words[-1].end == pytest.approx(305.069)


def test_manual_vtt_spreads_words_by_length(shared_data):
    transcript = load_words(shared_data / f"{YT}/manual_gbif_subtitles.en.vtt")
    words = transcript.words
    assert transcript.language == "en"
    assert " ".join(w.word for w in words) == ("Please do not translate this text. It is a test of CrowdIn, to see "
                                               "if we can translate training videos in this way.")
    cue1 = [w for w in words if w.end <= 6.529 + 1e-6]
    assert len(cue1) == 17 and cue1[-1].word == "can" and cue1[-1].end == pytest.approx(6.529)
    assert words[-1].end == pytest.approx(11.21)
    # longer words get longer time within a cue
    by_word = {w.word: w.end - w.start for w in cue1}
    assert by_word["translate"] > by_word["do"]


def test_manual_vtt_curly_quotes_and_tags(shared_data):
    words = load_words(shared_data / f"{YT}/manual_1c7_crashcourse_youtube-dl.vtt").words
    texts = [w.word for w in words]
    assert texts[:3] == ["Hi", "I'm", "John"]  # U+2019 normalised by cleaning
    assert "[Intro]" not in texts and "So," in texts
    raw = load_words(shared_data / f"{YT}/manual_1c7_crashcourse_youtube-dl.vtt", clean=False).words
    assert raw[1].word == "I\u2019m" and "[Intro]" in [w.word for w in raw]


# ---------------------------------------------------------------------------------------------------
# Hand-made edge cases


def test_bom_crlf_entities_styling_and_missing_blank_lines():
    text = ("\ufeffWEBVTT\r\nKind: captions\r\n\r\nSTYLE\n::cue { color: red }\n\nNOTE a comment\nwith two lines\n\n"
            "intro\r\n00:00:01.000 --> 00:00:02.000 line:0 align:start\r\n<b>Tom</b> &amp; <i>Jerry</i>\r\n"
            "00:00:02.000 --> 00:00:04.000\n<v Roger>caf&eacute; &lt;3&nbsp;ok</v>\n\n")
    transcript = load_words(text.encode("utf-8"), clean=False)
    assert transcript.source_kind == "vtt"
    assert [w.word for w in transcript.words] == ["Tom", "&", "Jerry", "café", "<3", "ok"]
    # cleaning drops words with no letter or digit
    assert [w.word for w in load_words(text.encode("utf-8")).words] == ["Tom", "Jerry", "café", "<3", "ok"]
    assert transcript.words[0].start == pytest.approx(1.0)
    assert transcript.words[3].start == pytest.approx(2.0) and transcript.words[-1].end == pytest.approx(4.0)


def test_srt_counters_without_blank_lines_and_ssa_tags():
    text = ("1\r\n00:00:00,500 --> 00:00:01,500\r\n{\\an8}<font color=\"#fff\">hello world</font>\r\n"
            "2\n00:00:02,000 --> 00:00:03,000\nsecond cue\n\n3\n00:00:03,000 --> 00:00:04,000\n42 is a number\n")
    words = load_words(text.encode(), name="x.srt").words
    assert [w.word for w in words] == ["hello", "world", "second", "cue", "42", "is", "a", "number"]
    assert words[0].start == pytest.approx(0.5) and words[1].end == pytest.approx(1.5)


def test_non_utf8_bytes_decode_with_fallback():
    cp1252 = "1\n00:00:00,000 --> 00:00:01,000\nna\u00efve caf\u00e9 \u201cquoted\u201d\n".encode("cp1252")
    assert [w.word for w in load_words(cp1252).words] == ["naïve", "café", '"quoted"']
    utf16 = "WEBVTT\n\n00:01.000 --> 00:02.000\nhello there\n".encode("utf-16")
    assert [w.word for w in load_words(utf16).words] == ["hello", "there"]


def test_format_by_content_not_name(tmp_path):
    path = tmp_path / "captions.srt"  # a VTT behind an SRT name
    path.write_text("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nreally vtt\n")
    assert load_words(path).source_kind == "vtt"
    assert detect_format("00:00:01.000 --> 00:00:02.000\nno header\n") == "vtt"
    assert detect_format("1\n00:00:01,000 --> 00:00:02,000\nx\n") == "srt"
    assert detect_format('  {"subtitles": []}') == "merlot"


@pytest.mark.parametrize("payload, error_class", [
    (bytes(range(256)) * 8, "caption_parse"),
    (b"\x00\x01\x02PK\x03\x04 not a caption", "caption_parse"),
    (b"", "caption_parse"),
    (b"just some prose without any timing\n", "caption_parse"),
    (b'{"info": {}}', "caption_parse"),
    (b'{"subtitles": [', "caption_parse"),
])
def test_garbage_is_a_classified_error(payload, error_class):
    with pytest.raises(StageError) as info:
        load_words(payload, name="bad.vtt")
    assert info.value.stage == "transcript" and info.value.error_class == error_class
    assert "bad.vtt" in info.value.message and "\n" not in info.value.message


def test_missing_file_is_caption_missing(tmp_path):
    with pytest.raises(StageError) as info:
        load_words(tmp_path / "nope.vtt")
    assert info.value.error_class == "caption_missing"


def test_header_only_vtt_has_no_words():
    assert load_words(b"WEBVTT\n\n").words == []


def test_words_command_prints_json_lines(shared_data, capsys):
    assert main_words([str(shared_data / f"{YT}/auto_webvttpy_youtube_dl.vtt")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == {"word": "yeah", "start": 286.07, "end": 286.47}
    assert len(rows) == 8 and set(rows[-1]) == {"word", "start", "end"}


def test_words_command_via_module(shared_data, tmp_path):
    """The README contract: `python -m pipeline words FILE`, exit 1 with one line for garbage."""
    ok = subprocess.run([sys.executable, "-m", "pipeline", "words",
                         str(shared_data / "yttemporal/WAaKRUoY6Io.grover.json")],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.splitlines()) == 642
    bad = tmp_path / "bad.vtt"
    bad.write_bytes(b"\x00\xff garbage")
    fail = subprocess.run([sys.executable, "-m", "pipeline", "words", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert fail.returncode == 1 and len(fail.stderr.strip().splitlines()) == 1
    assert "caption_parse" in fail.stderr


# ---------------------------------------------------------------------------------------------------
# Never crash: any bytes give words or a classified StageError


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st


def _parse_or_classified_error(data: bytes) -> None:
    try:
        transcript = load_words(data, name="fuzz")
    except StageError as exc:
        assert exc.stage == "transcript" and exc.error_class in ("caption_parse", "caption_missing")
        assert exc.__cause__ is None, f"a parser bug, caught by the safety net: {exc}"
        return
    words = transcript.words
    for a, b in zip(words, words[1:]):
        assert a.start <= b.start and a.end <= b.start + 1e-9
    assert all(w.start <= w.end and w.word for w in words)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data):
    _parse_or_classified_error(data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([r[0] for r in REAL_FILES]), st.data())
def test_fuzz_damaged_real_files(shared_data, rel, data):
    raw = (shared_data / rel).read_bytes()[:6000]
    lines = raw.splitlines(keepends=True)
    # drop, duplicate or cut lines, and truncate at a random byte
    ops = data.draw(st.lists(st.tuples(st.sampled_from(["drop", "dup", "cut"]),
                                       st.integers(0, max(0, len(lines) - 1))), max_size=8))
    for op, i in ops:
        if i >= len(lines):
            continue
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        else:
            lines[i] = lines[i][: len(lines[i]) // 2]
    damaged = b"".join(lines)
    damaged = damaged[: data.draw(st.integers(0, len(damaged)))]
    _parse_or_classified_error(damaged)


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.fixed_dictionaries({"word": _scalar, "time": _scalar}), max_size=30),
       st.lists(st.fixed_dictionaries({"noisyasr": st.one_of(st.text(max_size=60), _scalar),
                                       "cleanasr": st.one_of(st.text(max_size=60), _scalar)}), max_size=3),
       st.one_of(st.none(), st.fixed_dictionaries({"duration": _scalar})))
def test_fuzz_merlot_json(subtitles, denoised, info):
    _parse_or_classified_error(json.dumps({"subtitles": subtitles, "denoised": denoised, "info": info}).encode())
