"""The demo corpus generator (pipeline.demo): valid videos, truthful captions, determinism, idempotence,
and a downstream set whose planted leaks are where the ground truth says."""
from __future__ import annotations

import csv
import json
import random
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.demo.corpus import GENERATOR_VERSION, generate, main
from pipeline.demo.script import NARRATIONS, STEP_NUMBERS, make_script, normalize_words

TAG = re.compile(r"<(\d\d):(\d\d):(\d\d)\.(\d{3})><c> ([^<]*)</c>")
CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)[.,](\d{3}) --> (\d\d):(\d\d):(\d\d)[.,](\d{3})(.*)$")
SRT_BLOCK = re.compile(r"(\d+)\r?\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\r?\n(.*?)(?:\r?\n\r?\n|\Z)", re.S)


def _secs(h, m, s, ms) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def _hms(text: str) -> float:
    h, m, rest = text.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(rest)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _probe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def corpus(demo_corpus):
    manifest = _jsonl(demo_corpus / "manifest.jsonl")
    narration = {r["video_id"]: r for r in _jsonl(demo_corpus / "narration.jsonl")}
    return demo_corpus, manifest, narration


def test_every_video_has_speech_audio_and_the_scripted_length(corpus):
    root, manifest, narration = corpus
    assert len(manifest) == 8
    for row in manifest:
        info = _probe(Path(row["url"]))
        kinds = {s["codec_type"]: s for s in info["streams"]}
        assert kinds["video"]["codec_name"] == "h264" and kinds["video"]["width"] == 320
        assert kinds["audio"]["codec_name"] == "aac" and kinds["audio"]["channels"] == 1
        assert int(kinds["audio"]["sample_rate"]) >= 16000
        duration = float(info["format"]["duration"])
        assert 40 <= duration <= 90, row["video_id"]
        assert abs(duration - narration[row["video_id"]]["duration"]) < 0.15


def test_manifest_rows_resolve_and_cover_every_caption_kind(corpus):
    root, manifest, narration = corpus
    kinds = [row["meta"]["caption_kind"] for row in manifest]
    assert kinds == ["vtt", "srt", "merlot", "none", "vtt", "merlot", "none", "vtt"]
    for row in manifest:
        assert Path(row["url"]).is_file()
        assert (row["meta"]["caption_kind"] == "none") == ("captions" not in row)
        if "captions" in row:
            assert Path(row["captions"]).is_file()
        yid = row["meta"]["youtube_id"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{11}", yid)
        assert row["meta"]["split"] in ("train", "val")
    assert any(row["meta"]["youtube_id"].startswith("-") for row in manifest)
    assert len({row["meta"]["youtube_id"] for row in manifest}) == len(manifest)


def test_steps_tile_the_video_and_speech_stays_inside_its_step(corpus):
    _, manifest, narration = corpus
    for record in narration.values():
        steps = record["steps"]
        assert 6 <= len(steps) <= 10
        assert steps[0]["start"] == 0 and steps[-1]["end"] == pytest.approx(record["duration"])
        for a, b in zip(steps, steps[1:]):
            assert a["end"] == pytest.approx(b["start"])
            sa, sb = a["scene"], b["scene"]
            assert (sa["shape"], sa["colour"]) != (sb["shape"], sb["colour"])  # visually distinct steps
        words = record["words"]
        assert [w["start"] for w in words] == sorted(w["start"] for w in words)
        assert normalize_words(" ".join(w["word"] for w in words)) == normalize_words(" ".join(s["text"] for s in steps))
        for step in steps:
            inside = [w for w in words if step["start"] <= w["start"] < step["end"]]
            assert inside and inside[-1]["end"] <= step["end"]
            assert normalize_words(step["text"]) == normalize_words(" ".join(w["word"] for w in inside))
            # The step's first sentence names its shape and colour: the text matches the frames.
            first = normalize_words(step["sentences"][0])
            assert step["scene"]["colour"] in first and any(t.startswith(step["scene"]["shape"]) for t in first)


ORDER_WORDS = {"step", "now", "then", "next", "first", "finally", "after", "before", "again", "gone", "keep",
               "keeps", "still", "last", "later", "begin", "end"} | set(STEP_NUMBERS) - {"one", "two", "three", "four",
                                                                                         "five"}


def test_scenes_narration_names_what_is_on_screen_and_nothing_about_order():
    """The demo's default: steps about as long as a TVTS window (3-5 s), every sentence naming the colour and
    shape of its own step (so a window that hears any one sentence knows its scene) and no word that tells
    the order: no step numbers, no now/then/first, no sentence about another step."""
    lo, hi = NARRATIONS["scenes"].step_seconds
    lengths = []
    for index in range(6):
        script = make_script(0, index, with_audio=False, narration="scenes")
        assert 12 <= len(script.steps) <= 22
        for previous, step in zip([None] + script.steps, script.steps):
            lengths.append(step.end - step.start)
            for sentence in step.sentences:
                words = normalize_words(sentence)
                assert step.scene.colour in words and any(t.startswith(step.scene.shape) for t in words), sentence
                assert not ORDER_WORDS & set(words), sentence
                if previous is not None and (previous.scene.colour, previous.scene.shape) != (
                        step.scene.colour, step.scene.shape):
                    assert not (previous.scene.colour in words and any(
                        t.startswith(previous.scene.shape) for t in words)), f"{sentence!r} names the step before"
    assert lo - 1e-6 <= min(lengths) and max(lengths) <= hi + 1.0   # a main sentence may overrun hi a little
    assert 3.0 <= float(np.mean(lengths)) <= 4.6


def test_how_to_narration_announces_short_steps_in_order():
    """The announced style: 10-18 steps of 3-6 s, each starting "Step <n>." (the script's own order cue:
    a sorter learns the order from the text alone), then a main sentence naming what is on screen; a TVTS
    window (3-5 s) then nearly always hears a step number."""
    lo, hi = NARRATIONS["how-to"].step_seconds
    for index in range(3):
        script = make_script(0, index, with_audio=False, narration="how-to")
        assert 10 <= len(script.steps) <= 18
        for n, step in enumerate(script.steps):
            assert normalize_words(step.sentences[0]) == ["step", STEP_NUMBERS[n]]
            main = normalize_words(step.main_sentence)
            assert step.scene.colour in main and any(t.startswith(step.scene.shape) for t in main)
            assert lo - 1e-6 <= step.end - step.start <= hi + 1.5   # required sentences may overrun hi
            announced = [w for w in step.words if normalize_words(w.word) == ["step"]]
            assert len(announced) == 1 and step.start <= announced[0].start < step.start + 1.0
    plain = make_script(0, 0, with_audio=False, narration="plain")
    assert not any(s.startswith("Step ") for step in plain.steps for s in step.sentences)
    assert plain.steps[0].main_sentence == plain.steps[0].sentences[0]

def test_tvts_windows_usually_hold_three_words(corpus):
    """Spans of 15/19/23 s cut into 4 windows with 1 s gaps (TVTS-SPEC): most have >= 3 words per window."""
    _, _, narration = corpus
    rng = random.Random(0)
    good = total = 0
    for record in narration.values():
        starts = np.array([w["start"] for w in record["words"]])
        ends = np.array([w["end"] for w in record["words"]])
        for _ in range(50):
            window = rng.randint(3, 5)
            span = window * 4 + 3
            t0 = rng.uniform(0, record["duration"] - span - 1)
            ok = True
            for k in range(4):
                a = t0 + k * (window + 1)
                ok &= int(((starts > a) & (ends < a + window)).sum()) >= 3
            good += ok
            total += 1
    assert good / total >= 0.85, f"only {good}/{total} spans have >= 3 words in every window"


def _vtt_cues(text: str) -> list[tuple[float, float, list[str]]]:
    cues, lines = [], text.split("\n")
    i = 0
    while i < len(lines):
        m = CUE.match(lines[i])
        if not m:
            i += 1
            continue
        assert m.group(9) == " align:start position:0%"
        body = []
        i += 1
        while i < len(lines) and lines[i] != "":
            body.append(lines[i])
            i += 1
        cues.append((_secs(*m.groups()[:4]), _secs(*m.groups()[4:8]), body))
    return cues


def test_vtt_is_youtube_auto_caption_style_and_truthful(corpus):
    root, manifest, narration = corpus
    rows = [r for r in manifest if r["meta"]["caption_kind"] == "vtt"]
    assert {r["meta"]["caption_style"] for r in rows} == {"classic", "modern"}
    for row in rows:
        text = Path(row["captions"]).read_text()
        assert text.startswith("WEBVTT\nKind: captions\nLanguage: en\n\n")
        cues = _vtt_cues(text)
        main_cues, flashes = cues[0::2], cues[1::2]
        assert len(main_cues) == len(flashes) + 1  # every line but the last is followed by a flash
        assert all(end - start == pytest.approx(0.010, abs=1e-6) for start, end, _ in flashes)
        spoken: list[tuple[str, float]] = []
        previous = " "
        for k, (start, end, body) in enumerate(main_cues):
            assert body[0] == previous  # rolling: the line before stays on top
            first = body[1].split("<", 1)[0]
            spoken.append((first, start))
            spoken += [(word, _secs(h, m, s, ms)) for h, m, s, ms, word in TAG.findall(body[1])]
            plain = re.sub(r"<[^>]+>", "", body[1])
            if k < len(flashes):
                f_start, _, f_body = flashes[k]
                assert f_start == pytest.approx(end) and f_body == [plain, " "]
                assert main_cues[k + 1][0] == pytest.approx(f_start + 0.010)
            previous = plain
        words = narration[row["video_id"]]["words"]
        assert [normalize_words(w)[0] for w, _ in spoken] == [normalize_words(w["word"])[0] for w in words]
        assert [t for _, t in spoken] == pytest.approx([w["start"] for w in words], abs=0.0011)
        tokens = [w for w, _ in spoken]
        if row["meta"]["caption_style"] == "classic":
            assert all(re.fullmatch(r"[a-z0-9']+", w) for w in tokens)
        else:
            assert any(w.endswith(".") for w in tokens) and any(w[0].isupper() for w in tokens)


def test_srt_parses_with_a_tiny_regex(corpus):
    _, manifest, narration = corpus
    row = next(r for r in manifest if r["meta"]["caption_kind"] == "srt")
    text = Path(row["captions"]).read_text()
    blocks = SRT_BLOCK.findall(text)
    record = narration[row["video_id"]]
    sentences = [s for step in record["steps"] for s in step["sentences"]]
    assert [b[0] for b in blocks] == [str(i) for i in range(1, len(sentences) + 1)]
    assert [" ".join(b[3].split()) for b in blocks] == sentences
    assert _hms(blocks[0][1]) == pytest.approx(record["words"][0]["start"], abs=0.0011)
    assert all(_hms(b[1]) < _hms(b[2]) for b in blocks)


def test_merlot_json_has_subtitles_and_denoised_text(corpus):
    _, manifest, narration = corpus
    row = next(r for r in manifest if r["meta"]["caption_kind"] == "merlot")
    data = json.loads(Path(row["captions"]).read_text())
    record = narration[row["video_id"]]
    assert set(data) == {"subtitles", "denoised", "info"}
    assert [s["word"] for s in data["subtitles"]] == normalize_words(" ".join(w["word"] for w in record["words"]))
    assert data["subtitles"][0]["time"] == pytest.approx(record["words"][0]["start"])
    clean = " ".join(chunk["cleanasr"] for chunk in data["denoised"])
    assert clean == " ".join(step["text"] for step in record["steps"])
    assert clean[0].isupper() and clean.endswith(".")
    assert " ".join(c["noisyasr"] for c in data["denoised"]) == " ".join(s["word"] for s in data["subtitles"])
    assert data["info"]["id"] == row["meta"]["youtube_id"]


def test_narration_is_speech_that_vad_finds(corpus):
    """faster-whisper's Silero VAD (the ASR path) finds the narration where the script says it is."""
    vad = pytest.importorskip("faster_whisper.vad")
    _, manifest, narration = corpus
    row = next(r for r in manifest if r["meta"]["caption_kind"] == "none")
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", row["url"], "-f", "s16le", "-ac", "1", "-ar", "16000", "-"],
                         capture_output=True, timeout=60, check=True).stdout
    audio = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768.0
    # Tight settings so that the pauses between steps show up as silence.
    segments = vad.get_speech_timestamps(audio, vad.VadOptions(min_silence_duration_ms=150, speech_pad_ms=0))
    words = narration[row["video_id"]]["words"]

    def is_speech(seconds: float) -> bool:
        return any(s["start"] <= seconds * 16000 <= s["end"] for s in segments)

    assert sum(is_speech((w["start"] + w["end"]) / 2) for w in words) / len(words) >= 0.95
    pauses = [(a["end"] + b["start"]) / 2 for a, b in zip(words, words[1:]) if b["start"] - a["end"] > 0.5]
    assert len(pauses) >= 5 and not any(is_speech(t) for t in pauses)


def test_downstream_set_matches_its_ground_truth(corpus):
    root, manifest, narration = corpus
    down = root / "downstream"
    truth = json.loads((down / "ground_truth.json").read_text())
    youtube_ids = {r["meta"]["youtube_id"]: r["video_id"] for r in manifest}
    leaks, unrelated = truth["leaks"], truth["unrelated"]
    assert sum(l["kind"] == "visual" for l in leaks) == 6 and sum(l["kind"] == "source_id" for l in leaks) == 1
    assert len(unrelated) == 10 and sum(u["hard_negative"] for u in unrelated) == 2
    assert {l["dataset"] for l in leaks} == {"msrvtt", "ucf101", "kinetics400"}
    for item in leaks + unrelated:
        assert Path(item["path"]).is_file() and item["path"] == str(down / item["relpath"])
    for leak in leaks:
        assert leak["corpus_video_id"] in narration
        assert 0 <= leak["corpus_start"] < leak["corpus_end"] <= narration[leak["corpus_video_id"]]["duration"]
        if leak["kind"] == "visual":
            duration = float(_probe(Path(leak["path"]))["format"]["duration"])
            assert duration == pytest.approx(leak["corpus_end"] - leak["corpus_start"], abs=0.3)

    # Official formats: a reader of each finds every video.
    with open(down / "msrvtt/MSRVTT_JSFUSION_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["key", "vid_key", "video_id", "sentence"]
    assert all((down / "msrvtt/videos/all" / f"{r['video_id']}.mp4").is_file() for r in rows)
    class_ind = (down / "ucf101/ucfTrainTestlist/classInd.txt").read_bytes()
    assert class_ind.endswith(b"\r\n") and class_ind.startswith(b"1 ")
    for name in ("trainlist01.txt", "testlist01.txt"):
        for line in (down / "ucf101/ucfTrainTestlist" / name).read_text().splitlines():
            path = line.split()[0]
            assert re.fullmatch(r"(\w+)/v_\1_g\d\d_c\d\d\.avi", path) and (down / "ucf101/UCF-101" / path).is_file()
    ucf_leak = next(l for l in leaks if l["dataset"] == "ucf101")
    assert _probe(Path(ucf_leak["path"]))["streams"][0]["r_frame_rate"] == "25/1"
    with open(down / "kinetics400/kinetics-400_val.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["label", "youtube_id", "time_start", "time_end", "split"]
    for r in rows:
        assert (down / "kinetics400/val" / r["label"] /
                f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}.mp4").is_file()
    id_leak = next(l for l in leaks if l["kind"] == "source_id")
    row = next(r for r in rows if r["youtube_id"] in youtube_ids)
    assert youtube_ids[row["youtube_id"]] == id_leak["corpus_video_id"]
    datasets = json.loads((down / "datasets.json").read_text())
    assert all((down / f).is_file() for d in datasets.values() for f in d["annotations"])


def test_same_seed_same_corpus_and_a_second_run_does_nothing(corpus, tmp_path):
    """Video i does not depend on --videos: a 2-video corpus equals the first 2 of the shared one,
    byte for byte. A second run is instant; a half-made corpus is finished; a new seed is new."""
    root, manifest, narration = corpus
    out = tmp_path / "demo"
    summary = generate(out, seed=0, videos=2, downstream=False, workers=2, narration="plain")
    assert not summary["reused"]
    mine = _jsonl(out / "narration.jsonl")
    assert mine == [narration["demo-000"], narration["demo-001"]]
    for vid in ("demo-000", "demo-001"):
        assert (out / "videos" / f"{vid}.mp4").read_bytes() == (root / "videos" / f"{vid}.mp4").read_bytes()
    rows = _jsonl(out / "manifest.jsonl")
    assert [r["url"] for r in rows] == [str(out.resolve() / "videos" / f"demo-00{i}.mp4") for i in range(2)]
    assert [r["meta"] for r in rows] == [m["meta"] for m in manifest[:2]]

    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    t0 = time.monotonic()
    assert generate(out, seed=0, videos=2, downstream=False, narration="plain")["reused"]
    assert time.monotonic() - t0 < 1.0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamp

    # Killed after one video (scratch left behind): the rest is made, the result is the same.
    (out / "videos" / "demo-001.mp4").unlink()
    (out / ".demo-done.json").unlink()
    (out / "videos" / ".render-killed").mkdir()
    (out / "captions" / ".demo-004.en.vtt.abc.tmp").write_text("half")
    assert not generate(out, seed=0, videos=2, downstream=False, workers=1, narration="plain")["reused"]
    assert (out / "videos" / "demo-001.mp4").read_bytes() == (root / "videos" / "demo-001.mp4").read_bytes()
    assert (out / "videos" / "demo-000.mp4").stat().st_mtime_ns == stamp[out / "videos" / "demo-000.mp4"]
    assert json.loads((out / ".demo-done.json").read_text())["generator_version"] == GENERATOR_VERSION
    assert not list(out.rglob(".render-*")) and not list(out.rglob("*.tmp"))

    # Moved: the rerun rewrites the absolute paths and keeps the videos.
    moved = out.rename(tmp_path / "moved")
    assert not generate(moved, seed=0, videos=2, downstream=False, narration="plain")["reused"]
    assert _jsonl(moved / "manifest.jsonl")[0]["url"] == str(moved.resolve() / "videos" / "demo-000.mp4")
    assert (moved / "videos" / "demo-000.mp4").stat().st_mtime_ns == stamp[out / "videos" / "demo-000.mp4"]

    other = make_script(1, 0, with_audio=False)
    assert other.narration_record("vtt")["words"] != narration["demo-000"]["words"]


def test_cli_refuses_a_folder_that_is_not_a_corpus(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["--out", str(tmp_path), "--videos", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: demo corpus:") and "not empty" in err and "\n" not in err
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert main(["--out", str(tmp_path / "x"), "--videos", "0"]) == 1
    assert main(["--out", str(tmp_path / "notes.txt"), "--videos", "1"]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing left behind


def test_evaluation_sets_read_as_their_official_formats(corpus):
    """shapes_actions (UCF-101 layout) and shapes_captions (MSVD layout) through the readers training reads."""
    from common.downstream import read_dataset
    from pipeline.demo import eval_sets

    root, _, _ = corpus
    down = root / "downstream"
    sets = json.loads((down / "eval_sets.json").read_text())
    actions = sets["shapes_actions"]
    result = read_dataset("a", "ucf101", [str(down / f) for f in actions["annotations"]], str(down / actions["videos"]))
    assert result.bad_rows == 0 and all(v.path for v in result.videos)
    assert sorted({v.label for v in result.videos}) == sorted(eval_sets.ACTION_CLASSES)
    splits = [v.split for v in result.videos]
    assert (splits.count("train"), splits.count("test")) == (60, 30)
    info = _probe(Path(result.videos[0].path))
    assert info["streams"][0]["codec_name"] == "mpeg4" and info["format"]["format_name"] == "avi"
    assert float(info["format"]["duration"]) == pytest.approx(eval_sets.SECONDS, abs=0.2)
    assert (down / actions["annotations"][0]).read_bytes().endswith(b"\r\n")
    captions = sets["shapes_captions"]
    result = read_dataset("c", "msvd", [str(down / f) for f in captions["annotations"]], str(down / captions["videos"]))
    assert len(result.videos) == 40 and result.bad_rows == 0
    assert all(v.path and v.split == "test" and 2 <= len(v.captions) <= 4 for v in result.videos)
    # The caption names what the clip shows: its scene's colour and shape.
    clip = next(c for c in eval_sets.plan(0) if c.captions)
    assert clip.scene.colour in clip.captions[0].lower() and clip.scene.shape in clip.captions[0].lower()


def test_evaluation_sets_are_made_once_per_version_and_seed(tmp_path, monkeypatch, corpus):
    from pipeline.demo import eval_sets

    root, _, _ = corpus
    plan = eval_sets.plan

    def few(seed: int) -> list:                # one clip of each set: the rules, not the whole set
        clips = plan(seed)
        return [next(c for c in clips if c.label), next(c for c in clips if c.captions)]

    monkeypatch.setattr(eval_sets, "plan", few)
    assert eval_sets.ensure(tmp_path, seed=0) and not eval_sets.ensure(tmp_path, seed=0)
    made = sorted(p.relative_to(tmp_path) for p in (tmp_path / "downstream").rglob("*.avi"))
    assert len(made) == 2
    for rel in made:                           # deterministic: the same bytes as the shared corpus's clip
        assert (tmp_path / rel).read_bytes() == (root / rel).read_bytes()
    assert eval_sets.ensure(tmp_path, seed=1)  # another seed replaces them
    assert not any((tmp_path / rel).exists() for rel in made if "shapes_captions" in str(rel))


def test_a_corpus_with_the_first_two_sets_gains_shapes_svo_alone(tmp_path, monkeypatch):
    """The clip sets' marker as the generator before shapes_svo wrote it: ensure adds shapes_svo and leaves
    the clips (bytes and mtimes: the features cached from them stay valid) and that marker alone."""
    from common.downstream_svo import read_svo
    from pipeline.demo import eval_sets

    plan, svo_plan = eval_sets.plan, eval_sets.svo_plan
    monkeypatch.setattr(eval_sets, "plan", lambda seed: [next(c for c in plan(seed) if c.label)])
    monkeypatch.setattr(eval_sets, "svo_plan", lambda seed: [p for p in svo_plan(seed) if p.index % 24 < 2])
    down = tmp_path / "downstream"
    monkeypatch.setattr(eval_sets, "_svo_done", lambda down, seed: True)      # the generator before shapes_svo
    assert eval_sets.ensure(tmp_path, seed=0)
    monkeypatch.undo()
    monkeypatch.setattr(eval_sets, "plan", lambda seed: pytest.fail("remade the clip sets"))
    monkeypatch.setattr(eval_sets, "svo_plan", lambda seed: [p for p in svo_plan(seed) if p.index % 24 < 2])
    marker = (down / ".eval-sets-done.json").read_bytes()
    assert json.loads(marker) == {"version": "1", "seed": 0} and not (down / "shapes_svo").exists()
    clip = next(down.rglob("*.avi"))
    before = clip.stat().st_mtime_ns
    assert not eval_sets.is_done(tmp_path, 0)
    assert eval_sets.ensure(tmp_path, seed=0) and eval_sets.is_done(tmp_path, 0)
    assert clip.stat().st_mtime_ns == before and (down / ".eval-sets-done.json").read_bytes() == marker
    assert not eval_sets.ensure(tmp_path, seed=0)
    probes = read_svo("s", [str(down / "shapes_svo" / "svo_probes.jsonl")]).probes
    assert [p.neg_type for p in probes] == ["subject"] * 2 + ["verb"] * 2 + ["object"] * 2
    assert all(p.pos_path and p.neg_path for p in probes)
    assert "shapes_svo" in json.loads((down / "eval_sets.json").read_text())
    first = {p.name: p.read_bytes() for p in (down / "shapes_svo" / "images").iterdir()}
    # Deterministic, and a negative differs from its positive in exactly its own part.
    eval_sets.make_svo(eval_sets.svo_plan(0), tmp_path / "again")
    assert {p.name: p.read_bytes() for p in (tmp_path / "again" / "shapes_svo" / "images").iterdir()} == first
    for probe in svo_plan(0):
        diff = {f for f in ("shape", "colour", "motion", "count", "size") if
                getattr(probe.positive, f) != getattr(probe.negative, f)}
        assert diff == {{"subject": "shape", "verb": "motion", "object": "colour"}[probe.neg_type]}, probe
        assert probe.positive.shape in probe.sentence and probe.positive.colour in probe.sentence.lower()
