"""What a DeepSpeed run of ours needs around the engine, shared by pretraining (engine.py) and the fine-tuning
evaluation (finetune.py): the process group (a bare `python` becomes a one-rank job), seeds, the recipe
JSON of training/presets/, and metrics.jsonl rows that a resumed run continues.

A module of its own so that finetune.py, which training.evaluate imports, does not import engine.py
(engine -> heldout -> evaluate would close a loop; tests/test_import_graph.py).
"""
from __future__ import annotations

import datetime
import json
import os
import random
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.atomic import write_text

PRESET_DIR = Path(__file__).resolve().parent / "presets"


def log(msg: str) -> None:
    print(f"[rank {os.environ.get('RANK', '0')}] {msg}", flush=True)


def quiet_cpu_run() -> None:
    """On a machine without a GPU, say "CPU" to DeepSpeed (DS_ACCELERATOR) instead of letting it warn on
    every rank that it found no accelerator, and keep torch's "No CUDA runtime is found, using CUDA_HOME"
    (logged when DeepSpeed builds its CPU comm op next to an installed CUDA toolkit) out of the log."""
    import logging

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup_distributed(timeout_s: int) -> tuple[int, int]:
    """Join (or, in a bare `python`, create) the process group; returns (rank, world size).

    Under deepspeed/torchrun/Ray Train the launcher sets RANK etc.; a bare python process becomes a
    one-rank job on 127.0.0.1. The timeout makes a collective that waits on a dead rank fail instead of
    hanging forever.
    """
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    deepspeed.init_distributed(dist_backend=None, auto_mpi_discovery=False, verbose=False,
                               timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def seed_everything(seed: int, rank: int) -> None:
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def read_recipe(path: str | Path, key: str) -> dict[str, Any]:
    """A DeepSpeed JSON of the recipe without its "_comment" keys; `key` names the config key in errors.
    A bare file name is also looked up in training/presets/, so the default works from any directory."""
    path = Path(path)
    if not path.is_file() and not path.is_absolute() and (PRESET_DIR / path.name).is_file():
        path = PRESET_DIR / path.name
    if not path.is_file():
        raise FileNotFoundError(f"{key}: {path} does not exist (see training/presets/*.json)")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{key}: {path} is not valid JSON ({exc})") from exc
    return {k: v for k, v in ds.items() if not k.startswith("_")}


class MetricsSink:
    """metrics.jsonl (one object per logged step), heldout.jsonl (one per held-out evaluation) and
    TensorBoard, written by rank 0 only."""

    FILES = {"train": "metrics.jsonl", "heldout": "heldout.jsonl"}

    def __init__(self, out_dir: Path, resume_step: int | None, tensorboard: bool) -> None:
        self.paths = {group: out_dir / name for group, name in self.FILES.items()}
        for path in self.paths.values():
            if resume_step is not None and path.is_file():
                # Rows a killed run logged after its last checkpoint are logged again by this run.
                kept = [line for line in path.read_text().splitlines()
                        if line.strip() and json.loads(line)["step"] <= resume_step]
                write_text(path, "".join(line + "\n" for line in kept))
            elif resume_step is None and path.exists():
                path.unlink()
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out_dir / "tensorboard"),
                                            purge_step=None if resume_step is None else resume_step + 1)
            except ImportError:  # pragma: no cover - tensorboard is pinned in requirements.txt
                self.writer = None

    def write(self, row: dict[str, Any], group: str = "train") -> None:
        with open(self.paths[group], "a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{group}/{key}", value, row["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
