"""The Ray Data composition (shard reading tasks -> embedding actor -> driver search) gives the same pairs
as the in-process stream, with corpus.frames_per_sample (3 of 4 frames: 0, 2, 3) on both: the original
frame indexes travel through the actors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.dedup.helpers import demo_downstream_config, demo_videos, write_shards_from_videos


@pytest.mark.slow
def test_ray_stream_matches_local_stream(demo_corpus: Path, tmp_path: Path):
    from common.config import load_config
    from dedup.config import LeakageConfig
    from dedup.leakage import run

    videos = demo_videos(demo_corpus)[:3]
    write_shards_from_videos(videos, tmp_path / "shards", span_s=30.0, n_frames=4, samples_per_shard=3)
    kinetics = [d for d in demo_downstream_config(demo_corpus) if d["name"] == "kinetics400"]
    results = {}
    for mode in ("local", "ray"):
        cfg = {"model": {"model": "ViT-S-32", "random_init": True, "image_size": 32, "threads": 1},
               "corpus": {"shards": str(tmp_path / "shards" / "shard-*.tar"),
                          "manifest": str(demo_corpus / "manifest.jsonl"), "frames_per_sample": 3},
               "downstream": [dict(kinetics[0], frames=4)], "search": {"threshold": 0.5},
               "ray": {"enabled": mode == "ray", "num_cpus": 2}, "output": {"dir": str(tmp_path / mode)}}
        path = tmp_path / f"{mode}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        results[mode] = run(load_config(LeakageConfig, path))
    local, ray_run = results["local"], results["ray"]
    assert ray_run.summary["corpus"]["samples_read"] == local.summary["corpus"]["samples_read"] > 0
    key = lambda p: (p["corpus_key"], p["downstream_video_id"], p["kind"], p["similarity"],  # noqa: E731
                     p["corpus_frame_index"], p.get("corpus_time") or 0.0)
    assert sorted(map(key, ray_run.pairs)) == sorted(map(key, local.pairs))
    visual = [p for p in ray_run.pairs if p["similarity"] is not None]
    assert visual and all(p["corpus_frame_index"] in (0, 2, 3) and p["corpus_frames"] == 3 for p in visual)
    assert ray_run.summary["corpus"]["frames_searched"] == 3 * ray_run.summary["corpus"]["samples_read"]
    assert json.loads((tmp_path / "ray" / "report.json").read_text())
