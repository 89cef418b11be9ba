"""Skip a job whose inputs have not changed since it last finished.

A job writes `done.json` into its output folder last, holding a fingerprint of its config and of its
input files (path, size, mtime; for an object in a store: URL, size, ETag or modification time); a
rerun with the same fingerprint has nothing to do. The output folder and the inputs may be local paths
or fsspec URLs (common.storage): the marker is written atomically either way.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Iterable

from common import storage

DONE_FILE = "done.json"


def _remote_identities(urls: list[str]) -> dict[str, str]:
    """URL -> "size\\0version" of each object, one listing per folder (not one request per object)."""
    out: dict[str, str] = {}
    by_folder: dict[tuple[int, str], list[tuple[str, str]]] = {}
    filesystems: dict[int, Any] = {}
    for url in urls:
        fs, path = storage.filesystem(url)
        filesystems[id(fs)] = fs
        by_folder.setdefault((id(fs), path.rsplit("/", 1)[0]), []).append((url, path))
    for (fs_id, folder), members in by_folder.items():
        fs = filesystems[fs_id]
        try:
            fs.invalidate_cache(folder)
            listing = {e["name"].rstrip("/"): e for e in fs.ls(folder, detail=True)}
        except (OSError, ValueError):
            listing = {}
        for url, path in members:
            info = listing.get(path.rstrip("/"))
            if info is None:
                out[url] = "missing"
                continue
            version = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
            out[url] = f"{info.get('size')}\0{version}"
    return out


def inputs_fingerprint(config: Any, paths: Iterable[str | os.PathLike]) -> str:
    """Hash of the config (a dataclass or plain data) and of each input file's path, size and mtime."""
    digest = hashlib.sha256()
    data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    digest.update(json.dumps(data, sort_keys=True, default=str).encode())
    names = sorted(str(p) for p in paths)
    remote = _remote_identities([p for p in names if not storage.is_local(p)])
    for path in names:
        if path in remote:
            # redact: the fingerprint never depends on (or could leak) credentials in a URL
            digest.update(f"{storage.redact(path)}\0{remote[path]}\n".encode())
            continue
        try:
            st = os.stat(storage.local_path(path))
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()[:24]


def is_done(out_dir: str | os.PathLike, fingerprint: str, outputs: Iterable[str] = ()) -> bool:
    """True when `out_dir/done.json` holds `fingerprint` and every named output file still exists."""
    try:
        marker = storage.read_json(storage.join(out_dir, DONE_FILE))
    except (OSError, ValueError, storage.StorageError):
        return False
    if not isinstance(marker, dict) or marker.get("fingerprint") != fingerprint:
        return False
    if storage.is_local(out_dir):
        return all(storage.local_path(storage.join(out_dir, name)).is_file() for name in outputs)
    present = set(storage.listdir(out_dir))  # one listing, not one request per output
    return all(name in present for name in outputs)


def mark_done(out_dir: str | os.PathLike, fingerprint: str, **extra: Any) -> None:
    storage.write_json(storage.join(out_dir, DONE_FILE), {"fingerprint": fingerprint, **extra})
