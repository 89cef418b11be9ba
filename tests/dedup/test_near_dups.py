"""Within-corpus near-duplicates: copies under other video ids are grouped, one kept, the rest blocked."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.dedup.helpers import sample_json, write_samples


def _jpeg(seed: int, shift: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)  # blocky 48x64 image
    img = np.clip(base.astype(int) + shift, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _sample(key: str, video_id: str, seed: int, shift: int = 0) -> dict:
    members = {f"{i:03d}.jpg": _jpeg(seed * 10 + i, shift) for i in range(3)}
    members["json"] = json.dumps(sample_json(key, video_id, 0.0, 3.0, [0.5, 1.5, 2.5], {})).encode()
    return {"key": key, "members": members}


@pytest.mark.parametrize("frames_per_sample", [0, 1])  # 1: only each sample's middle frame (corpus.frame_subset)
def test_near_dups_groups_copies_and_rewrites_shards(tmp_path: Path, capsys, frames_per_sample: int):
    from dedup.__main__ import main
    from dedup.blocklist import read_blocklist
    from dedup.corpus import expand_shards, iter_samples

    samples = [_sample(f"v{i}_0", f"v{i}", seed=i) for i in range(6)]
    samples += [_sample("copy1_0", "copy1", seed=2, shift=3), _sample("copy2_0", "copy2", seed=2, shift=-3)]
    samples += [_sample("v0_5000", "v0", seed=0, shift=2)]  # the same video again: not a duplicate
    write_samples(tmp_path / "shards" / "shard-000000.tar", samples)
    cfg = {"model": {"model": "ViT-S-32", "random_init": True, "image_size": 64, "photometric_norm": True,
                     "threads": 1}, "corpus": {"shards": str(tmp_path / "shards" / "shard-*.tar"),
                                          "frames_per_sample": frames_per_sample},
           "threshold": 0.995, "n_clusters": 2, "output": {"dir": str(tmp_path / "out"), "rewrite_shards": True}}
    path = tmp_path / "near.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["near-dups", "--config", str(path)]) == 0
    assert "blocklist:" in capsys.readouterr().out
    groups = json.loads((tmp_path / "out" / "near_dups.json").read_text())
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["frames_per_sample"] == frames_per_sample
    assert len(groups) == 1, groups
    members = sorted(m["key"] for m in groups[0]["members"])
    assert members == ["copy1_0", "copy2_0", "v2_0"]
    blocked = read_blocklist([tmp_path / "out" / "blocklist.txt"])
    assert len(blocked) == 2 and groups[0]["kept"] not in blocked and blocked <= set(members)
    kept = [s.key for s in iter_samples(expand_shards(str(tmp_path / "out" / "clean_shards" / "shard-*.tar")))]
    assert len(kept) == len(samples) - 2 and not blocked & set(kept)
