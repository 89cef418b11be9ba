"""Bad input never crashes the leakage / near-dups jobs: clear one-line errors or counted failures."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.dedup.helpers import npy_bytes, sample_json, write_samples

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = {"model": "ViT-S-32", "random_init": True, "image_size": 32, "batch_size": 16, "threads": 1}


def _jpeg(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _sample(key: str, video_id: str, frames: list[bytes] | None, extra: dict | None = None) -> dict:
    members = {f"{i:03d}.jpg": f for i, f in enumerate(frames or [])}
    members["json"] = json.dumps(sample_json(key, video_id, 0.0, 4.0, [0.5 * i for i in range(len(frames or []))],
                                             {})).encode()
    members.update(extra or {})
    return {"key": key, "members": members}


def _config(tmp: Path, shards: str, downstream: list[dict], **sections) -> Path:
    cfg = {"model": TINY_MODEL, "corpus": {"shards": shards}, "downstream": downstream,
           "output": {"dir": str(tmp / "out")}, "search": {"threshold": 0.99}}
    cfg.update(sections)
    path = tmp / "leakage.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dedup", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _run_inproc(capsys, *args: str) -> subprocess.CompletedProcess:
    """The same entry point as the CLI, in this process (saves the interpreter start-up)."""
    from dedup.__main__ import main

    try:
        rc = main(list(args))
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out.out, out.err)


@pytest.fixture(scope="module")
def downstream_dir(tmp_path_factory, shared_data: Path) -> Path:
    d = tmp_path_factory.mktemp("downstream")
    shutil.copy(shared_data / "videos" / "human2bot_task5_1.webm", d / "good.webm")
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not really a video" * 20)
    (d / "-dash.mp4").write_bytes(b"")  # empty, and its name starts with '-'
    return d


def test_job_counts_every_bad_input_and_still_reports(tmp_path: Path, downstream_dir: Path, capsys):
    frames = [_jpeg(i) for i in range(4)]
    bad_feats = npy_bytes(np.ones((4, 7), np.float16))  # wrong width: not usable, recomputed from the JPEGs
    write_samples(tmp_path / "shards" / "shard-000000.tar", [
        _sample("v1_0", "v1", frames),
        _sample("v2_0", "v2", None),  # neither frames nor features
        _sample("v3_0", "v3", frames[:2], {"clip.npy": bad_feats}),
    ])
    (tmp_path / "shards" / "shard-000001.tar").write_bytes(b"not a tar at all" * 100)  # unreadable shard
    missing_col = tmp_path / "kinetics.csv"
    missing_col.write_text("label,time_start,time_end,split\nabseiling,1,11,val\n")
    cfg = _config(tmp_path, str(tmp_path / "shards" / "shard-*.tar"), [
        {"name": "folder", "format": "folder", "video_root": str(downstream_dir), "frames": 4},
        {"name": "k400", "format": "kinetics", "annotations": [str(missing_col)]},
    ])
    res = _run_inproc(capsys, "leakage", "--config", str(cfg))
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    folder = summary["datasets"]["folder"]
    assert folder["videos_listed"] == 3 and folder["videos_checked"] == 1
    assert sum(folder["decode_failures"].values()) == 2, folder  # broken + empty file, each classified
    assert "missing column 'youtube_id'" in summary["datasets"]["k400"]["error"]
    assert summary["corpus"]["failures"] == {"no_features": 1}
    assert summary["corpus"]["features"] == {"computed": 2}
    assert summary["corpus"]["bad_shards"] == 1
    assert "k400" in res.stdout and "missing column" in res.stdout
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "blocklist.txt").is_file()
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == []


def test_no_shards_is_a_one_line_error(tmp_path: Path, downstream_dir: Path):
    cfg = _config(tmp_path, str(tmp_path / "nothing" / "shard-*.tar"),
                  [{"name": "folder", "format": "folder", "video_root": str(downstream_dir)}])
    res = _run_cli("leakage", "--config", str(cfg))
    assert res.returncode == 1
    assert res.stderr.strip().startswith("error: corpus.shards=") and len(res.stderr.strip().splitlines()) == 1


def test_empty_corpus_shard_gives_an_empty_report(tmp_path: Path, downstream_dir: Path, capsys):
    write_samples(tmp_path / "shards" / "shard-000000.tar", [])
    cfg = _config(tmp_path, str(tmp_path / "shards" / "shard-*.tar"),
                  [{"name": "folder", "format": "folder", "video_root": str(downstream_dir), "frames": 2}])
    res = _run_inproc(capsys, "leakage", "--config", str(cfg))
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["corpus"]["samples_read"] == 0 and summary["pairs_flagged"] == 0


def test_bad_config_is_exit_2_naming_the_key(tmp_path: Path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model": {"model": "ViT-S-32"}, "corpus": {"shards": "x"}}))
    res = _run_inproc(capsys, "leakage", "--config", str(path))
    assert res.returncode == 2 and "model.pretrained" in res.stderr and "random_init" in res.stderr
