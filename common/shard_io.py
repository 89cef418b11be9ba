"""Shard tars at any location (a local path or an fsspec URL): find them, keep the done ones, stream samples.

Shared by dedup (the corpus side) and training (the loader), which may not import each other or the
pipeline: both read what the pipeline writes (ARCHITECTURE.md, "Sample in a shard").

- `find_shards(items, what)`: each item a file, a folder (its `*.tar`) or a glob, local or URL. URLs are
  listed through fsspec (one listing per folder, whatever the number of shards, so a brace pattern of
  10,000 shards costs a few LIST calls, not 10,000 HEADs) and come back as full URLs (`s3://bucket/...`).
  A tar whose `<name>_stats.json` is missing while other tars found have one is still being written
  (the pipeline writes the stats file last) and is left out; shard names are not assumed (`shard-000001`,
  `shard-000001_r1`, ...): any `<name>.tar` with `<name>_stats.json` is a done shard.
- A bad protocol, a missing filesystem package, a missing bucket or an unreachable store is one line
  (`common.storage.StorageError`) naming the config key `what`, before any sample is read.
- `tar_samples(urls, handler)`: webdataset's tar reader fed with streams opened through fsspec
  (webdataset's own opener knows only local files, pipes and a few CLIs; it has no s3://), one shard open
  at a time, closed as soon as it is read. `handler` is webdataset's error policy.
"""
from __future__ import annotations

import os
from typing import IO, Any, Callable, Iterable, Iterator

from common import storage
from common.storage import StorageError

__all__ = ["StorageError", "has_wildcard", "find_shards", "open_shard", "tar_samples", "stats_name"]

STATS_SUFFIX = "_stats.json"


def has_wildcard(text: str) -> bool:
    return any(c in text for c in "*?[")


def stats_name(tar_name: str) -> str:
    """`shard-000001_r1.tar` -> `shard-000001_r1_stats.json` (the file written last)."""
    return (tar_name[: -len(".tar")] if tar_name.endswith(".tar") else tar_name) + STATS_SUFFIX


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Remote:
    """Listings of one fsspec filesystem, each folder listed at most once per `find_shards` call."""

    def __init__(self, fs: Any, what: str):
        self.fs, self.what = fs, what
        self.folders: dict[str, dict[str, str]] = {}  # folder path -> {name: "file" | "directory"}
        self.buckets: set[str] = set()

    def check_bucket(self, path: str, url: str) -> None:
        # Object stores (s3fs, gcsfs, adlfs have split_path) answer a listing of a missing bucket with an
        # empty result for a glob: say so instead of "matches no shards".
        if not hasattr(self.fs, "split_path"):
            return
        bucket = path.split("/", 1)[0]
        if not bucket or bucket in self.buckets:
            return
        try:
            self.fs.info(bucket)  # not fs.exists: it answers False for an unreachable endpoint too
        except FileNotFoundError:
            raise StorageError(f"{self.what} {storage.redact(url)}: bucket '{bucket}' does not exist") from None
        self.buckets.add(bucket)

    def entries(self, folder: str) -> dict[str, str]:
        folder = folder.rstrip("/")
        if folder not in self.folders:
            self.fs.invalidate_cache(folder)  # another node may have written since (s3fs caches listings)
            try:
                listing = self.fs.ls(folder, detail=True)
            except FileNotFoundError:
                listing = []
            self.folders[folder] = {e["name"].rstrip("/").rsplit("/", 1)[-1]: e.get("type", "file")
                                    for e in listing}
        return self.folders[folder]

    def matches(self, path: str) -> list[str]:
        """Paths (inside the filesystem) of the files `path` names: a file, a folder's *.tar or a glob."""
        path = path.rstrip("/")
        if has_wildcard(path):
            self.fs.invalidate_cache()
            found = self.fs.glob(path, detail=True)
            return sorted(p for p, info in found.items() if info.get("type", "file") == "file")
        parent, _, name = path.rpartition("/")
        kind = self.entries(parent).get(name) if parent else "directory"
        if kind == "file":
            return [path]
        if kind == "directory":
            return sorted(f"{path}/{n}" for n, t in self.entries(path).items() if t == "file" and n.endswith(".tar"))
        return []

    def has_stats(self, path: str) -> bool:
        parent, _, name = path.rpartition("/")
        return self.entries(parent).get(stats_name(name)) == "file"


def _local_matches(item: str) -> list[str]:
    import glob
    from pathlib import Path

    path = storage.local_path(item)
    if path.is_dir():
        return sorted(str(p) for p in path.glob("*.tar") if p.is_file())
    if has_wildcard(str(path)):
        return sorted(p for p in glob.glob(str(path)) if os.path.isfile(p))
    return [str(path)] if Path(path).is_file() else []


def find_shards(items: Iterable[str], what: str, done_only: bool = True) -> tuple[list[str], list[str]]:
    """(shard files found, in item order, each once; the items that matched nothing).

    Local results are paths, remote ones full URLs. With `done_only`, tars without their stats file are
    dropped when any tar found has one (a folder of hand-made tars without stats files is read whole).
    StorageError (one line naming `what`) for an unusable location.
    """
    found: list[str] = []
    empty: list[str] = []
    remotes: dict[int, _Remote] = {}
    stats: dict[str, bool] = {}
    for item in items:
        if storage.is_local(item):
            got = _local_matches(item)
            for p in got:
                stats[p] = os.path.isfile(stats_name(p))
        else:
            fs, path = storage.filesystem(item, what)
            remote = remotes.setdefault(id(fs), _Remote(fs, what))  # fsspec caches instances per options
            try:
                remote.check_bucket(path, item)
                paths = remote.matches(path)
                got = [fs.unstrip_protocol(p) for p in paths]
                for p, url in zip(paths, got):
                    stats[url] = remote.has_stats(p)
            except StorageError:
                raise
            except Exception as exc:  # credentials, endpoint, permission: the filesystem's own message
                raise StorageError(f"{what} {storage.redact(item)}: cannot list it ({_one_line(exc)})") from None
        if not got:
            empty.append(item)
        found.extend(got)
    found = list(dict.fromkeys(found))
    if done_only and any(stats.get(u) for u in found):
        found = [u for u in found if not u.endswith(".tar") or stats.get(u, True)]
    return found, empty


def open_shard(url: str) -> IO[bytes]:
    """A binary stream of one shard (local file or object), read front to back by the tar reader."""
    if storage.is_local(url):
        return open(storage.local_path(url), "rb")
    fs, path = storage.filesystem(url, "shard")
    # Sequential reading: the default read-ahead cache fetches the object in large ranges, in order.
    return fs.open(path, "rb")


def tar_samples(urls: Iterable[str], handler: Callable[[BaseException], bool] | None = None) -> Iterator[dict]:
    """Samples (`__key__`, `__url__`, one entry per member) of the shards, in order.

    `handler(exc)` returns True to skip what failed (a shard that cannot be opened, a broken tar) and go
    on, False to stop; None re-raises (webdataset's policy; the default in tests).
    """
    from webdataset import tariterators
    from webdataset.handlers import reraise_exception

    handler = handler or reraise_exception

    def streams() -> Iterator[dict]:
        for url in urls:
            try:
                stream = open_shard(url)
            except Exception as exn:  # noqa: BLE001 - the handler decides (count and skip, or raise)
                exn.args = exn.args + (storage.redact(url),)
                if handler(exn):
                    continue
                break
            try:
                yield {"url": url, "stream": stream}
            finally:  # the reader has moved on to the next shard (or stopped): release this one
                stream.close()

    files = tariterators.tar_file_expander(streams(), handler=handler)
    return tariterators.group_by_keys(files, handler=handler)
