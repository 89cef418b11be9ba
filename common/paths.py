"""Where things live in a checkout. Every folder here is ignored by git."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Data the jobs make (demo corpus, run outputs). The README contract: data/demo and data/demo-run.
DATA_DIR = Path(os.environ.get("TVTS_DATA_DIR", PROJECT_ROOT / "data"))
# Everything cached between runs that is not the venv or data: torch extensions, test media, tiny models.
CACHE_DIR = Path(os.environ.get("TVTS_CACHE_DIR", PROJECT_ROOT / ".cache"))
CONFIG_DIR = PROJECT_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "demo.yaml"
