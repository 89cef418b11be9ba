"""sha256 of large files (model weights), computed once per file version and kept in a stamp file.

`file_sha256(path)`: the hash, read from `STAMPS_DIR/<hash of the path>.json` when its (path, size, mtime)
still match the file, else computed and stamped; `record_sha256(path, sha256)`: stamp a hash the caller
computed itself (e.g. while writing the file). Hashing 75-145 MB costs 0.2-0.5 s of a shared CPU in every
process that pins a model; the stamp makes it once. The Whisper pins (pipeline/transcripts/whisper_models.py)
and the DINOv2 weights (features/dinov2.py) use it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from common.atomic import write_json
from common.paths import CACHE_DIR

__all__ = ["STAMPS_DIR", "file_sha256", "record_sha256"]

STAMPS_DIR = CACHE_DIR / "models" / "sha256"
_BLOCK = 8 << 20


def _stamp_path(path: Path, stamps_dir: Path) -> Path:
    return stamps_dir / (hashlib.sha256(str(path).encode()).hexdigest()[:24] + ".json")


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def record_sha256(path: Path, sha256: str, stamps_dir: Path = STAMPS_DIR) -> None:
    path = path.resolve()
    st = path.stat()
    with contextlib.suppress(OSError):  # a read-only cache only costs the next process a re-hash
        write_json(_stamp_path(path, stamps_dir), {"path": str(path), "size": st.st_size,
                                                   "mtime_ns": st.st_mtime_ns, "sha256": sha256})


def file_sha256(path: str | os.PathLike, stamps_dir: Path = STAMPS_DIR) -> str:
    """sha256 of a file, computed once per (path, size, mtime) and then read from its stamp file."""
    path = Path(path).resolve()
    st = path.stat()
    try:
        stamp = json.loads(_stamp_path(path, stamps_dir).read_text())
        if (stamp["path"], stamp["size"], stamp["mtime_ns"]) == (str(path), st.st_size, st.st_mtime_ns):
            return str(stamp["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no stamp, or a stale or broken one: hash again
    sha256 = _hash_file(path)
    record_sha256(path, sha256, stamps_dir)
    return sha256
