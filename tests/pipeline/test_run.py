"""The data job end to end on a generated corpus: Ray Data in this process, read back with webdataset and tar."""
from __future__ import annotations

import json
import shutil
import tarfile

import pytest
import webdataset as wds

from common.config import load_config
from pipeline.config import PipelineConfig
from pipeline.ledger import Ledger
from pipeline.run import main, run_job
from tests.pipeline.corpus import make_corpus, make_video


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()  # another module's session is reused, not replaced
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2,
                 log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    manifest = make_corpus(root, n=4, duration=48.0)
    (root / "broken.mp4").write_text("not a video at all\n")
    with manifest.open("a") as out:
        out.write(json.dumps({"video_id": "broken", "url": str(root / "broken.mp4"),
                              "captions": str(root / "vid0.en.vtt")}) + "\n")
        out.write(json.dumps({"video_id": "vid1", "url": str(root / "vid1.mp4")}) + "\n")  # duplicate row
        out.write('{"video_id": "cut off\n')                                                  # malformed row
    return manifest


def _cfg(manifest, out_dir, *extra):
    return load_config(PipelineConfig, None, [f"input.manifest={manifest}", f"output.dir={out_dir}",
                                              "shards.input_rows=2", "asr.enabled=false", "ray.progress_bar=false",
                                              "segment.samples_per_slot=1",
                                              # the broken file is fixed in place below: with file facts in the
                                              # row fingerprint that is a changed row (test_changed_inputs.py),
                                              # here it must be a retried failure
                                              "input.fingerprint_files=false",
                                              *extra], job="pipeline")


def _shard_bytes(out_dir):
    return {p.name: p.read_bytes() for p in sorted((out_dir / "shards").glob("shard-*.tar"))}


def test_job_end_to_end(ray_local, corpus, tmp_path):
    out = tmp_path / "out"
    summary = run_job(_cfg(corpus, out), use_ray=True)
    assert summary["inputs"] == 6 and summary["duplicates"] == 1
    assert (summary["written"], summary["skipped"], summary["failed"]) == (4, 0, 2)
    assert summary["errors"] == {"manifest_row": 1, "not_video": 1}
    assert summary["samples"] == 8 and summary["shards"] == 2  # 2 rows per input shard; the third: no sample
    assert summary["this_run"]["tasks"] == 3 and summary["this_run"]["driver_bytes_in"] < 20_000  # metadata only
    assert summary["seconds"]["decode"] > 0 and summary["videos_per_s"] > 0
    assert json.loads((out / "summary.json").read_text())["samples"] == 8

    tars = sorted(str(p) for p in (out / "shards").glob("shard-*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    keys = [s["__key__"] for s in samples]
    assert len(keys) == 8 == len(set(keys))
    assert [k.rsplit("_", 1)[0] for k in keys] == ["vid0"] * 2 + ["vid1"] * 2 + ["vid2"] * 2 + ["vid3"] * 2
    for sample in samples:
        assert sorted(k for k in sample if k.endswith(".jpg")) == [f"{i:03d}.jpg" for i in range(16)]
        meta = json.loads(sample["json"])
        assert meta["key"] == sample["__key__"] and meta["meta"]["n"] in range(4)
        assert len(meta["windows"]) == 4 and all(len(w["words"]) >= 3 for w in meta["windows"])
        assert round(meta["span"]["end"] - meta["span"]["start"], 3) in (15.0, 19.0, 23.0)
        assert len(meta["frames"]["times"]) == 16 and meta["frames"]["height"] == 256
        assert meta["video"]["has_audio"] and meta["transcript"]["source"] == "vtt"
        assert meta["span"]["start"] <= meta["frames"]["times"][0] < meta["frames"]["times"][-1] <= meta["span"]["end"]
    with tarfile.open(tars[0]) as tar:
        assert all(m.isfile() for m in tar.getmembers())
        assert tar.getnames()[0].startswith("vid0_") and tar.getnames()[16].endswith(".json")
    for tar in tars:
        with open(tar.replace(".tar", "_stats.json")) as handle:
            stats = json.load(handle)
        assert sum(len(v) for v in stats["videos"].values()) == stats["samples"]
    empty = json.loads((out / "shards" / "shard-000002_stats.json").read_text())  # all its rows failed
    assert empty["samples"] == 0 and empty["outcomes"]["broken"]["error_class"] == "not_video"
    assert not (out / "shards" / "shard-000002.tar").exists()

    with Ledger(out / "ledger.sqlite") as ledger:
        outcomes = {o["video_id"]: o for o in ledger.outcomes()}
    assert outcomes["vid2"]["status"] == "written" and outcomes["vid2"]["shard"] == "shard-000001"
    assert outcomes["broken"]["stage"] == "probe" and outcomes["broken"]["error_class"] == "not_video"
    assert len(outcomes) == 6  # one per distinct input, the malformed row included

    # The same job without Ray (stages in this process) writes byte-identical shards.
    plain = tmp_path / "plain"
    assert main(["--set", f"input.manifest={corpus}", "--set", f"output.dir={plain}", "--set", "shards.input_rows=2",
                 "--set", "asr.enabled=false", "--set", "segment.samples_per_slot=1",
                 "--set", "input.fingerprint_files=false", "--no-ray",
                 "--no-progress"]) == 0
    assert _shard_bytes(plain) == _shard_bytes(out)

    # Rerun: nothing left to do, same totals, same shards.
    again = run_job(_cfg(corpus, out), use_ray=True)
    assert again["this_run"]["processed"] == 0 and again["samples"] == 8 and again["failed"] == 2
    assert _shard_bytes(out) == _shard_bytes(plain)

    # --retry-failed: the broken input is now a real video; it is written into a retry piece of its shard.
    make_video(corpus.parent / "fixed.mp4", 48.0)
    shutil.move(str(corpus.parent / "fixed.mp4"), str(corpus.parent / "broken.mp4"))
    retried = run_job(_cfg(corpus, out), use_ray=True, retry_failed=True)
    assert retried["this_run"]["processed"] == 1 and retried["written"] == 5 and retried["shards"] == 3
    assert retried["errors"] == {"manifest_row": 1}
    assert (out / "shards" / "shard-000002_r1_stats.json").exists() and _shard_bytes(out)["shard-000002_r1.tar"]
    with Ledger(out / "ledger.sqlite") as ledger:
        assert ledger.outcome("broken")["status"] == "written" and ledger.attempts("broken") == 2
    # The ledger is only an index: deleted, the next run rebuilds it from the stats files, does nothing.
    for name in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"):
        (out / name).unlink(missing_ok=True)
    rebuilt = run_job(_cfg(corpus, out), use_ray=False)
    assert rebuilt["this_run"]["processed"] == 0 and rebuilt["this_run"]["ledger_reconciled"]["imported"] == 4
    assert (rebuilt["written"], rebuilt["failed"], rebuilt["samples"]) == (5, 1, retried["samples"])


def test_bad_config_and_missing_manifest_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--set", "decode.nope=1"])
    assert caught.value.code == 2
    assert "decode.nope" in capsys.readouterr().err
    code = main(["--set", f"input.manifest={tmp_path / 'missing.jsonl'}", "--set", f"output.dir={tmp_path / 'o'}",
                 "--no-ray", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: cannot read the manifest") and "\n" not in err


def test_cluster_config_loads():
    from common.paths import CONFIG_DIR

    cfg = load_config(PipelineConfig, CONFIG_DIR / "yt-temporal.yaml", job="pipeline")
    assert cfg.ray.address == "auto" and cfg.output.dir.startswith("s3://") and cfg.embed.enabled
    assert cfg.segment.frames_per_bin == 2 and cfg.fetch.youtube.max_height == 360
    demo = load_config(PipelineConfig, CONFIG_DIR / "demo.yaml", job="pipeline")
    assert demo.input.manifest == "data/demo/manifest.jsonl" and demo.output.dir == "data/demo-run/pipeline"


def test_embed_stage_writes_clip_features(corpus, tmp_path):
    """embed.enabled: clip.npy per sample from features.embed (random-init ViT-S-32: no weights offline)."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("open_clip")
    import io

    from pipeline.sources.manifest import read_manifest
    from pipeline.stages import VideoWork, run_local

    row = next(r for r in read_manifest(str(corpus)) if getattr(r, "video_id", None) == "vid0")
    cfg = _cfg(corpus, tmp_path / "o", "embed.enabled=true", "embed.model=ViT-S-32", "embed.random_init=true",
               "segment.max_samples_per_video=1")
    (item,) = run_local([VideoWork(order=0, row=row.to_dict())], cfg)
    assert item.status == "ok" and len(item.samples) == 1
    for sample in item.samples:
        feats = np.load(io.BytesIO(sample.members["clip.npy"]))
        assert feats.dtype == np.float16 and feats.shape[0] == 16
        assert np.allclose(np.linalg.norm(feats.astype(np.float32), axis=1), 1.0, atol=1e-2)
        assert json.loads(sample.members["json"])["meta"]["clip_model"].startswith("ViT-S-32")


@pytest.mark.parametrize("keep", [False, True])
def test_downloads_are_deleted_after_the_samples_unless_kept(corpus, tmp_path, keep):
    """An fsspec source is copied into the run's scratch folder and removed once decoded (fetch.keep_downloads)."""
    fsspec = pytest.importorskip("fsspec")
    memfs = fsspec.filesystem("memory")
    memfs.pipe(f"/tvts-{keep}/v.mp4", (corpus.parent / "vid0.mp4").read_bytes())
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"video_id": "remote", "url": f"memory://tvts-{keep}/v.mp4",
                                    "captions": str(corpus.parent / "vid0.en.vtt")}) + "\n")
    out = tmp_path / "out"
    summary = run_job(_cfg(manifest, out, f"fetch.keep_downloads={str(keep).lower()}"), use_ray=False)
    assert summary["written"] == 1 and summary["samples"] == 2
    left = [p for p in (out / "scratch").rglob("*") if p.is_file()] if (out / "scratch").exists() else []
    assert bool(left) == keep


def test_rerun_with_other_output_settings_is_refused(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--set", f"input.manifest={corpus}", "--set", f"output.dir={out}", "--set", "asr.enabled=false",
            "--set", "input.limit=1", "--no-ray", "--no-progress"]
    assert main(base) == 0
    assert main(base + ["--set", "ray.num_cpus=1", "--set", "decode.timeout_s=60"]) == 0  # speed only: fine
    capsys.readouterr()
    assert main(base + ["--set", "decode.short_side=128"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and str(out) in err
