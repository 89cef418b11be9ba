"""Features computed once per (weights, dataset, settings) and kept as .npz files.

`weights_digest(model)`: sha1 of the model config and every tensor of its state_dict, in name order. It
names the weights themselves, not a file: a model_fp32.pt, the DeepSpeed checkpoint it was exported from
and a seeded random init (`--random-init`) each get one digest, and retraining into the same path does
not reuse stale features (a path + mtime key would, after a copy or a restore).

`FeatureCache(folder).load(kind, key) / .save(kind, key, arrays, info)`: `key` is a JSON-able dict (the
digest, the dataset's annotation and video files, the view settings, ...); the file is
`<folder>/<kind>-<sha1 of the key, 16 hex>.npz`, written atomically, with the key inside (a load checks
it, so a hash collision or a hand-copied file never passes for another key's features).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.atomic import write_bytes

__all__ = ["CACHE_VERSION", "FeatureCache", "weights_digest", "files_digest"]

# Bump when what is stored changes for the same key (frame rule, crop rule, feature definition).
CACHE_VERSION = 1


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha1()
    cfg = getattr(model, "cfg", None)
    if cfg is not None:
        digest.update(json.dumps(asdict(cfg) if is_dataclass(cfg) else str(cfg), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        data = tensor.detach().cpu().contiguous()
        digest.update(str((data.dtype, tuple(data.shape))).encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def files_digest(paths: list[str | None]) -> str:
    """sha1 over (absolute path, size, mtime) of each file; absent files count as absent."""
    digest = hashlib.sha1()
    for path in paths:
        if path and os.path.exists(path):
            st = os.stat(path)
            digest.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        else:
            digest.update(f"{path}\0absent\n".encode())
    return digest.hexdigest()


class FeatureCache:
    """npz files under `folder`; a None folder keeps nothing (every load misses, save does nothing)."""

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = Path(folder) if folder else None

    def path(self, kind: str, key: dict[str, Any]) -> Path | None:
        if self.folder is None:
            return None
        blob = json.dumps({"cache_version": CACHE_VERSION, **key}, sort_keys=True, default=str)
        return self.folder / f"{kind}-{hashlib.sha1(blob.encode()).hexdigest()[:16]}.npz"

    def load(self, kind: str, key: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict] | None:
        """(arrays, info) stored under `key`, or None when there are none (or they are another key's)."""
        path = self.path(kind, key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["__meta__"]))
                arrays = {name: data[name] for name in data.files if name != "__meta__"}
        except (OSError, ValueError, KeyError):
            return None                      # a broken file is recomputed (and rewritten)
        expected = json.loads(json.dumps({"cache_version": CACHE_VERSION, **key}, sort_keys=True, default=str))
        if meta.get("key") != expected:
            return None
        return arrays, meta.get("info", {})

    def save(self, kind: str, key: dict[str, Any], arrays: dict[str, np.ndarray], info: dict | None = None) -> Path | None:
        path = self.path(kind, key)
        if path is None:
            return None
        meta = {"key": json.loads(json.dumps({"cache_version": CACHE_VERSION, **key}, sort_keys=True, default=str)),
                "info": info or {}}
        buffer = io.BytesIO()
        np.savez(buffer, __meta__=np.array(json.dumps(meta)), **arrays)
        write_bytes(path, buffer.getvalue())
        return path
