"""The dedup jobs on object storage: corpus shards (and the manifest) in a bucket of moto's S3 server,
outputs written back to the bucket, read through s3fs exactly as a real bucket would be.

The same job on the same shards, once from a local folder into a local folder and once from the bucket
into the bucket, must flag the same pairs; the done mark must work in the bucket (a rerun is skipped);
a bad protocol or a missing bucket is one line naming the key with exit code 2 before any work; the
secret key appears in no output and nowhere in what the jobs print.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.dedup.helpers import demo_downstream_config, demo_videos, mark_shards_done, write_shards_from_videos

pytestmark = pytest.mark.s3

ROOT = Path(__file__).resolve().parents[2]
MODEL = {"model": "ViT-S-32", "random_init": True, "image_size": 32, "threads": 1}  # cheap: exact copies only
OUTPUTS = ("report.html", "report.json", "blocklist.txt", "summary.json", "done.json")


@pytest.fixture(scope="module")
def corpus(demo_corpus: Path, s3_server, tmp_path_factory) -> dict:
    """Shards of 2 demo videos (4 frames per sample, 2 samples per shard, stats files) plus one unfinished
    tar without its stats file, in a local folder and uploaded to s3://<fresh bucket>/run/shards/."""
    work = tmp_path_factory.mktemp("dedup-s3")
    local = work / "shards"
    paths = write_shards_from_videos(demo_videos(demo_corpus)[:2], local, span_s=30.0, n_frames=4,
                                     samples_per_shard=2)
    mark_shards_done(paths)
    samples = sum(json.loads((local / f"{p.name[:-4]}_stats.json").read_text())["samples"] for p in paths)
    (local / "shard-000009_r1.tar").write_bytes(paths[0].read_bytes())  # still being written: left out
    bucket = s3_server.new_bucket()
    fs = s3_server.fs()
    fs.put(f"{local}/", f"{bucket[len('s3://'):]}/run/shards/", recursive=True)
    fs.put(str(demo_corpus / "manifest.jsonl"), f"{bucket[len('s3://'):]}/run/manifest.jsonl")
    kinetics = [d for d in demo_downstream_config(demo_corpus) if d["name"] == "kinetics400"][0]
    return {"work": work, "local": local, "bucket": bucket, "manifest": str(demo_corpus / "manifest.jsonl"),
            "downstream": [dict(kinetics, frames=4)], "samples": samples}


def leakage_config(path: Path, shards: str, manifest: str, out: str, downstream: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({
        "model": MODEL, "corpus": {"shards": shards, "manifest": manifest}, "downstream": downstream,
        "search": {"threshold": 0.5}, "output": {"dir": out, "top_pairs": 4, "rewrite_shards": True}}))
    return path


def pair_key(p: dict) -> tuple:
    # Everything but where the corpus shard was read from (a local path in one run, a URL in the other).
    return (p["corpus_key"], p["downstream_dataset"], p["downstream_video_id"], p["kind"], p["similarity"],
            p.get("corpus_frame_index"), p["matching_frames"])


def bucket_files(s3_server, url: str) -> dict[str, bytes]:
    fs = s3_server.fs()
    return {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in fs.find(url[len("s3://"):])}


def test_leakage_reads_shards_from_the_bucket_and_writes_its_report_there(corpus, s3_server, tmp_path, capfd,
                                                                          monkeypatch):
    from common.config import load_config
    from common.donemark import is_done
    from dedup.__main__ import main
    from dedup.config import LeakageConfig
    from dedup.leakage import job_fingerprint
    from dedup.locations import state_dir

    monkeypatch.setenv("TVTS_STATE_DIR", str(tmp_path / "state"))  # the downstream cache of a URL output.dir
    monkeypatch.chdir(tmp_path)  # a URL turned into a local path would show up here as ./s3:/...
    bucket = corpus["bucket"]
    local_cfg = leakage_config(tmp_path / "local.yaml", str(corpus["local"] / "shard-*.tar"), corpus["manifest"],
                               str(tmp_path / "local-out"), corpus["downstream"])
    s3_cfg = leakage_config(tmp_path / "s3.yaml", f"{bucket}/run/shards/shard-*.tar", f"{bucket}/run/manifest.jsonl",
                            f"{bucket}/run/leakage", corpus["downstream"])
    assert main(["leakage", "--config", str(local_cfg)]) == 0
    # Downstream decoding has nothing to do with the bucket: seed the URL's local cache (saves a decode).
    shutil.copytree(tmp_path / "local-out" / "cache", state_dir(f"{bucket}/run/leakage") / "cache")
    assert main(["leakage", "--config", str(s3_cfg)]) == 0

    remote = bucket_files(s3_server, f"{bucket}/run/leakage")
    assert set(OUTPUTS) <= set(remote)
    local_pairs = json.loads((tmp_path / "local-out" / "report.json").read_text())
    s3_pairs = json.loads(remote["report.json"])
    assert local_pairs and any(p["kind"] == "visual" for p in local_pairs)
    assert any(p["kind"] == "source_id" for p in local_pairs)  # the manifest was read from the bucket too
    assert [pair_key(p) for p in s3_pairs] == [pair_key(p) for p in local_pairs]
    assert all(p["corpus_shard"].startswith(f"{bucket}/run/shards/") for p in s3_pairs if p["corpus_shard"])
    summary = json.loads(remote["summary.json"])
    local_summary = json.loads((tmp_path / "local-out" / "summary.json").read_text())
    # the unfinished tar is left out on both sides
    assert summary["corpus"]["samples_read"] == local_summary["corpus"]["samples_read"] == corpus["samples"]
    assert remote["blocklist.txt"] == (tmp_path / "local-out" / "blocklist.txt").read_bytes()
    assert b"<html" in remote["report.html"][:200].lower() and b"review-data" in remote["report.html"]
    thumbs = {name for name in remote if name.startswith(("c-", "d-")) and name.endswith(".jpg")}  # report's thumbs/
    local_thumbs = {p.name for p in (tmp_path / "local-out" / "thumbs").iterdir()}
    assert thumbs == local_thumbs and summary["thumbnails"]["written"] == len(thumbs)
    assert summary["thumbnails"]["missing"] == local_summary["thumbnails"]["missing"]  # (entries without a video file)
    assert summary["datasets"]["kinetics400"]["features_cached"]  # read from the local state folder
    # output.rewrite_shards: the shards without the blocked samples, written to the bucket (stats last)
    from dedup.corpus import expand_shards, iter_samples

    clean = {url: [s.key for s in iter_samples([url])] for url in expand_shards(f"{bucket}/run/leakage/clean_shards")}
    local_clean = [[s.key for s in iter_samples([p])] for p in expand_shards(str(tmp_path / "local-out" / "clean_shards"))]
    assert list(clean.values()) == local_clean and summary["rewrite"]["kept"] == local_summary["rewrite"]["kept"]
    assert all(name.replace(".tar", "_stats.json") in remote for name in (u.rsplit("/", 1)[-1] for u in clean))

    # The done mark lives in the bucket: an unchanged rerun does nothing; a changed input makes it run again.
    capfd.readouterr()
    assert main(["leakage", "--config", str(s3_cfg)]) == 0
    assert "up to date" in capfd.readouterr().out
    manifest = Path(corpus["manifest"]).read_bytes() + b"\n"  # new bytes, same rows
    s3_server.fs().pipe_file(f"{bucket[len('s3://'):]}/run/manifest.jsonl", manifest)
    cfg = load_config(LeakageConfig, s3_cfg, job="leakage")
    assert not is_done(cfg.output.dir, job_fingerprint(cfg), OUTPUTS[:3])  # it would run again

    secret = s3_server.env["AWS_SECRET_ACCESS_KEY"].encode()
    assert not [name for name, data in bucket_files(s3_server, f"{bucket}/run/leakage").items() if secret in data]
    assert not [p for p in (tmp_path / "state").rglob("*") if p.is_file() and secret in p.read_bytes()]
    captured = capfd.readouterr()
    assert secret.decode() not in captured.out + captured.err
    assert not list(tmp_path.glob("s3:*")) and not (ROOT / "s3:").exists()


def test_near_dups_from_the_bucket_to_the_bucket(corpus, s3_server, tmp_path, capfd, monkeypatch):
    from dedup.__main__ import main

    monkeypatch.setenv("TVTS_STATE_DIR", str(tmp_path / "state"))  # the memmap of a URL output.dir
    bucket = corpus["bucket"]
    results = {}
    for name, shards, out in (("local", str(corpus["local"]), str(tmp_path / "local-near")),
                              ("s3", f"{bucket}/run/shards", f"{bucket}/run/near-dups")):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump({"model": MODEL, "corpus": {"shards": shards}, "threshold": 0.9,
                                       "output": {"dir": out}}))
        assert main(["near-dups", "--config", str(cfg)]) == 0
    results["local"] = {n: (tmp_path / "local-near" / n).read_bytes() for n in ("near_dups.json", "blocklist.txt")}
    results["s3"] = bucket_files(s3_server, f"{bucket}/run/near-dups")
    assert json.loads(results["s3"]["near_dups.json"]) == json.loads(results["local"]["near_dups.json"])
    assert results["s3"]["blocklist.txt"] == results["local"]["blocklist.txt"]
    assert json.loads(results["s3"]["summary.json"])["samples"] == corpus["samples"]
    captured = capfd.readouterr()
    assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in captured.out + captured.err


def test_rewrite_shards_from_the_bucket_to_the_bucket(corpus, s3_server, capfd):
    from dedup.__main__ import main
    from dedup.corpus import expand_shards, iter_samples

    bucket = corpus["bucket"]
    before = list(iter_samples(expand_shards(f"{bucket}/run/shards")))
    blocked = before[0].video_id
    s3_server.fs().pipe_file(f"{bucket[len('s3://'):]}/run/block.txt", f"# test\n{blocked}  # a video\n".encode())
    assert main(["rewrite-shards", "--shards", f"{bucket}/run/shards/shard-*.tar", "--blocklist",
                 f"{bucket}/run/block.txt", "--out", f"{bucket}/run/clean"]) == 0
    kept = [s.key for s in iter_samples(expand_shards(f"{bucket}/run/clean"))]
    assert kept and kept == [s.key for s in before if s.video_id != blocked]
    files = bucket_files(s3_server, f"{bucket}/run/clean")
    assert all(n.replace(".tar", "_stats.json") in files and n.replace(".tar", ".parquet") in files
               for n in files if n.endswith(".tar"))
    captured = capfd.readouterr()
    assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in captured.out + captured.err


@pytest.mark.parametrize("override, key, why", [
    ("output.dir=foo://x/leakage", "output.dir", "Protocol not known"),
    ("corpus.shards=foo://x/shard-*.tar", "corpus.shards", "Protocol not known"),
    ("output.dir=s3://no-such-bucket-d1/leakage", "output.dir", "bucket 'no-such-bucket-d1' does not exist"),
    ("corpus.shards=s3://no-such-bucket-d1/shards/shard-*.tar", "corpus.shards", "bucket 'no-such-bucket-d1'"),
    ("corpus.manifest=s3://no-such-bucket-d1/manifest.jsonl", "corpus.manifest", "does not exist"),
])
def test_bad_location_is_one_line_exit_2_before_any_work(corpus, s3_server, tmp_path, capfd, override, key, why):
    from dedup.__main__ import main

    bucket = corpus["bucket"]
    cfg = leakage_config(tmp_path / "s3.yaml", f"{bucket}/run/shards/shard-*.tar", "", f"{bucket}/run/bad",
                         corpus["downstream"])
    capfd.readouterr()
    try:
        code = main(["leakage", "--config", str(cfg), "--set", override])
    except SystemExit as exc:  # a config error: load_from_args exits 2
        code = exc.code
    captured = capfd.readouterr()
    assert code == 2, captured
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and key in lines[0] and why in lines[0], lines
    assert "features:" not in captured.out  # no embedder was built: nothing ran
    assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in captured.out + captured.err
    assert not bucket_files(s3_server, f"{bucket}/run/bad")
