"""Shared pieces of the training tests: generated shards, a very small model, launching ranks."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from tests.proc import run_in_session

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

# The tiny preset shrunk further so a step takes well under a second on a shared CPU.
MINI_MODEL = ["video.depth=1", "video.dim=64", "video.heads=2", "sort.depth=1", "sort.heads=2", "embed_dim=32",
              "video.image_size=32", "video.frames=4", "text.pretrained=false", "text.max_length=16",
              "text.config_overrides={num_hidden_layers: 1, hidden_size: 64, num_attention_heads: 2, "
              "intermediate_size: 128}"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(path: Path, shards: str, out: Path, **train) -> Path:
    cfg = {"seed": 0, "pretrain": {
        "data": {"shards": shards, "num_workers": 1, "shuffle_buffer": 16, "shuffle_initial": 4},
        "output": {"dir": str(out)},
        "train": {"preset": "tiny", "model_overrides": MINI_MODEL, "max_steps": 4, "micro_batch": 2,
                  "log_every": 1, "checkpoint_every": 2, "tensorboard": False, "plot": False,
                  "deepspeed": "training/presets/pretrain_cpu_zero1.json", **train}}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    e.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(key, None)
    e.update(extra)
    return e


def deepspeed_cmd(config: Path, *args: str, ranks: int = 2) -> list[str]:
    return [PY, "-m", "deepspeed.launcher.runner", "--num_gpus", str(ranks), "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), "--module", "training.pretrain", "--config", str(config), *args]


def torchrun_cmd(config: Path, *args: str, ranks: int = 2) -> list[str]:
    return [PY, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), "-m", "training.pretrain", "--config", str(config), *args]


def run(cmd: list[str], timeout: float = 240, **extra_env: str) -> subprocess.CompletedProcess:
    """Run a launcher in its own session; on timeout kill the whole group (never leave ranks behind)."""
    return run_in_session(cmd, env(**extra_env), timeout, ROOT)


def metrics(out: Path, name: str = "metrics.jsonl") -> list[dict]:
    path = out / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
