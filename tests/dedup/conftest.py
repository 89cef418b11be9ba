"""Fixtures of the dedup tests: one leakage run on the demo corpus, shared by the modules that judge it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.dedup.helpers import demo_downstream_config, demo_videos, write_shards_from_videos

ROOT = Path(__file__).resolve().parents[2]


def demo_model_section() -> dict:
    """The model settings the demo config uses (so the test checks what `make demo` runs)."""
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    return dict(demo["leakage"]["model"])


@pytest.fixture(scope="session")
def demo_run(demo_corpus: Path, tmp_path_factory) -> dict:
    """The leakage job (every stored frame) on shards cut from the demo corpus, vs its planted-leak set.

    Returns {"result", "truth" (downstream/ground_truth.json), "work" (shards/, out/ with cache/),
    "config" (the YAML it ran with), "embedder" (the demo's FrameEmbedder, loaded once)}. Read-only for
    its users: a test that runs the job again writes into its own output folder.
    """
    from common.config import load_config
    from dedup.config import LeakageConfig
    from dedup.leakage import run
    from features.embed import FrameEmbedder

    work = tmp_path_factory.mktemp("leakage-demo")
    # The shards carry `clip.npy` as the pipeline's embed stage writes it (same model, same fingerprint),
    # so the job reads the stored corpus features instead of recomputing them.
    embedder = FrameEmbedder(**demo_model_section())
    write_shards_from_videos(demo_videos(demo_corpus), work / "shards", span_s=20.0, embed=embedder.embed,
                             clip_model=embedder.fingerprint)
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["leakage"]
    cfg = {"model": demo_model_section(), "search": demo.get("search", {}),
           "corpus": {"shards": str(work / "shards" / "shard-*.tar"), "manifest": str(demo_corpus / "manifest.jsonl")},
           "downstream": demo_downstream_config(demo_corpus), "output": {"dir": str(work / "out"), "top_pairs": 12}}
    path = work / "leakage.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = run(load_config(LeakageConfig, path))
    truth = json.loads((demo_corpus / "downstream" / "ground_truth.json").read_text())
    return {"result": result, "truth": truth, "work": work, "config": path, "embedder": embedder}
