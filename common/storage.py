"""Every input and output location through fsspec: local paths and URLs (`s3://`, `gs://`, `memory://`, ...).

A location is a string; it never goes through `pathlib` unless it is local (`is_local`), so
`s3://bucket/run` can never turn into a local folder named `s3:`.

- `check_location(url, what)`: before any work starts, an unknown protocol or a missing filesystem
  package (s3fs, gcsfs, ...) is one line saying which key and what to install (`StorageError`).
- `join(url, *parts)`: child locations, keeping the protocol.
- `write_bytes` / `write_json`: a reader sees the old object or the whole new one, never a part.
  Local files: a temp file in the same folder, fsynced, renamed (`common.atomic`). Object stores: one
  PUT of the final key (s3fs and gcsfs upload in parts when large, and S3/GCS make the object visible
  only when the upload completes: an interrupted upload leaves nothing readable at the key).
- Credentials come from the filesystem's usual sources (AWS_* / GOOGLE_* variables, ~/.aws, instance
  roles; `AWS_ENDPOINT_URL` for S3-compatible servers). `redact` strips any user:password from a URL
  before it is printed or written.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["StorageError", "is_local", "local_path", "join", "filesystem", "check_location", "write_bytes",
           "write_json", "read_bytes", "read_json", "exists", "remove", "listdir", "local_state_dir", "redact"]

_PROTOCOL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_INSTALL_HINT = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
                 "abfss": "adlfs", "hf": "huggingface_hub"}


class StorageError(Exception):
    """A location that cannot be used: one line naming it and what to do."""


def protocol(url: str) -> str:
    match = _PROTOCOL.match(str(url))
    return match.group(1).lower() if match else "file"


def is_local(url: str | os.PathLike) -> bool:
    return protocol(str(url)) in ("file", "local")


def local_path(url: str | os.PathLike) -> Path:
    """The local path of a local location (`file://` stripped)."""
    text = str(url)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def join(url: str | os.PathLike, *parts: str) -> str:
    text = str(url)
    if is_local(text):
        return str(local_path(text).joinpath(*parts))
    return "/".join([text.rstrip("/")] + [p.strip("/") for p in parts])


def redact(url: str) -> str:
    """The URL without credentials (scheme://user:secret@host -> scheme://***@host)."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]+@", r"\1***@", str(url))


def filesystem(url: str | os.PathLike, what: str = "location") -> tuple[Any, str]:
    """(fsspec filesystem, path inside it); StorageError for an unknown protocol or a missing package."""
    import fsspec

    text = str(url)
    try:
        fs, path = fsspec.core.url_to_fs(text)
    except ImportError as exc:
        package = _INSTALL_HINT.get(protocol(text), "the fsspec implementation for it")
        raise StorageError(f"{what} {redact(text)}: protocol '{protocol(text)}' needs {package} "
                           f"(pip install {package}): {exc}") from None
    except ValueError as exc:
        raise StorageError(f"{what} {redact(text)}: {exc} (use a local path or a URL such as s3://bucket/dir; "
                           f"known protocols: fsspec.available_protocols())") from None
    return fs, path


def check_location(url: str | os.PathLike, what: str, *, writable: bool = False) -> None:
    """Fail early and in one line when `url` cannot be used (bad protocol, package, bucket, permission)."""
    text = str(url)
    if is_local(text):
        path = local_path(text)
        if writable:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"{what} {text}: cannot create the folder ({exc.strerror})") from None
        return
    fs, path = filesystem(text, what)
    if not writable:
        return
    bucket = path.split("/", 1)[0]
    try:
        fs.invalidate_cache()
        if bucket:
            fs.info(bucket)   # not exists(): that answers False for an unreachable endpoint too
    except FileNotFoundError:
        raise StorageError(f"{what} {redact(text)}: bucket '{bucket}' does not exist (create it first)") from None
    except Exception as exc:  # credentials, endpoint, permission: the filesystem's own message
        raise StorageError(f"{what} {redact(text)}: cannot reach it ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def write_bytes(url: str | os.PathLike, data: bytes) -> None:
    text = str(url)
    if is_local(text):
        from common.atomic import write_bytes as write_local

        path = local_path(text)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_local(path, data)
        os.chmod(path, 0o644)  # readable by the training and dedup jobs of other users
        return
    fs, path = filesystem(text)
    with fs.open(path, "wb") as handle:  # one object, visible only once complete
        handle.write(data)


def write_json(url: str | os.PathLike, obj: Any) -> None:
    write_bytes(url, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_bytes(url: str | os.PathLike) -> bytes:
    text = str(url)
    if is_local(text):
        return local_path(text).read_bytes()
    fs, path = filesystem(text)
    with fs.open(path, "rb") as handle:
        return handle.read()


def read_json(url: str | os.PathLike) -> Any:
    return json.loads(read_bytes(url))


def exists(url: str | os.PathLike) -> bool:
    text = str(url)
    if is_local(text):
        return local_path(text).exists()
    fs, path = filesystem(text)
    fs.invalidate_cache(path)
    return fs.exists(path)


def remove(url: str | os.PathLike) -> None:
    """Delete one file/object if it exists."""
    text = str(url)
    if is_local(text):
        local_path(text).unlink(missing_ok=True)
        return
    fs, path = filesystem(text)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


def listdir(url: str | os.PathLike) -> list[str]:
    """The names (not paths) of the files directly in a folder / under a prefix; [] when there is none."""
    text = str(url)
    if is_local(text):
        path = local_path(text)
        return sorted(p.name for p in path.iterdir() if p.is_file()) if path.is_dir() else []
    fs, path = filesystem(text)
    fs.invalidate_cache(path)  # another node may have written since (s3fs caches listings)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") != "directory")


def local_state_dir(url: str, root: str | os.PathLike | None = None) -> Path:
    """A stable local folder for a remote location's working state (one per URL, same on every rerun)."""
    base = Path(root or os.environ.get("TVTS_STATE_DIR") or Path.home() / ".cache" / "tvts" / "state")
    digest = hashlib.sha256(redact(url).encode()).hexdigest()[:16]
    return base / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', redact(url))[-60:]}-{digest}"
