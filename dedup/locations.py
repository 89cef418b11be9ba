"""Where the dedup jobs read and write: `output.dir` and `corpus.shards` may be local paths or fsspec URLs.

A URL is never turned into a local path (common.storage). Outputs go to `output.dir` as whole files
(local temp + rename, or one PUT); working state that is read back whole or memory-mapped (the
downstream feature cache, the near-dups memmap) stays on a local disk: beside the outputs when
`output.dir` is local, else in a stable local folder for that URL (`common.storage.local_state_dir`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common import storage


def output_location(out_dir: str) -> Path | str:
    """A Path for a local output.dir (what callers and tests join with `/`), else the URL itself."""
    return storage.local_path(out_dir) if storage.is_local(out_dir) else out_dir


def state_dir(out_dir: str) -> Path:
    """The local folder for a job's working state (created by the caller)."""
    return storage.local_path(out_dir) if storage.is_local(out_dir) else storage.local_state_dir(out_dir)


def write_json(url: str | Path, obj: Any) -> None:
    """Atomic JSON (common.storage), keys in the order the job built them (report.json reads top-down)."""
    storage.write_bytes(url, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def check_locations(out_dir: str, shards: str, manifest: str = "") -> None:
    """Before any work: output.dir usable (local: created; URL: its bucket exists) and the corpus shards'
    locations listable. StorageError (one line naming the key) otherwise; the CLIs exit 2 on it."""
    from dedup.corpus import expand_shards

    storage.check_location(out_dir, "output.dir", writable=True)
    expand_shards(shards)
    if manifest and not storage.is_local(manifest) and not storage.exists(manifest):
        raise storage.StorageError(f"corpus.manifest {storage.redact(manifest)} does not exist (or its bucket)")
