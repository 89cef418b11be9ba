"""Skip a job whose inputs have not changed since it last finished.

A job writes `done.json` into its output folder last, holding a fingerprint of its config and of its
input files (path, size, mtime); a rerun with the same fingerprint has nothing to do.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from common.atomic import write_json

DONE_FILE = "done.json"


def inputs_fingerprint(config: Any, paths: Iterable[str | os.PathLike]) -> str:
    """Hash of the config (a dataclass or plain data) and of each input file's path, size and mtime."""
    digest = hashlib.sha256()
    data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    digest.update(json.dumps(data, sort_keys=True, default=str).encode())
    for path in sorted(str(p) for p in paths):
        try:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()[:24]


def is_done(out_dir: str | os.PathLike, fingerprint: str, outputs: Iterable[str] = ()) -> bool:
    """True when `out_dir/done.json` holds `fingerprint` and every named output file still exists."""
    out_dir = Path(out_dir)
    try:
        marker = json.loads((out_dir / DONE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("fingerprint") == fingerprint and all((out_dir / name).is_file() for name in outputs)


def mark_done(out_dir: str | os.PathLike, fingerprint: str, **extra: Any) -> None:
    write_json(Path(out_dir) / DONE_FILE, {"fingerprint": fingerprint, **extra})
