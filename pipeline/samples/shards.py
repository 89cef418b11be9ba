"""WebDataset shards, committed atomically: tar under a temp name -> rename -> sidecar parquet -> stats.

The unit of restart is the shard (ARCHITECTURE.md, "Sample in a shard"): `shard-NNNNNN.tar` appears
only complete (written as `.shard-NNNNNN.tar.tmp`, fsynced, renamed), then its sidecar
`shard-NNNNNN.parquet` (one row per sample), then `shard-NNNNNN_stats.json`, last. A shard without its
stats file is not done: `clean_incomplete` deletes it (and any temp file) before a run resumes.

The stats file also lists the videos whose samples the shard holds, so the ledger can be rebuilt from
the shards alone (a crash between the stats file and the ledger commit loses nothing).

Sample keys: `<safe video_id>_<start_ms>` over `[A-Za-z0-9_-]` (`sample_key`).
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from common.atomic import write_bytes, write_json
from common.deps import require

SHARD_NAME = re.compile(r"^shard-(\d{6})(\.tar|\.parquet|_stats\.json)$")


@dataclasses.dataclass
class ShardsConfig:
    max_samples: int = 1000           # close a shard once it holds at least this many samples...
    max_bytes: int = 1_000_000_000    # ...or this many bytes of members (whichever comes first)
    subdir: str = "shards"            # under output.dir

    def validate(self) -> None:
        from common.config import ConfigError

        if self.max_samples < 1:
            raise ConfigError("config key 'shards.max_samples' must be >= 1")
        if self.max_bytes < 1:
            raise ConfigError("config key 'shards.max_bytes' must be >= 1")


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


@dataclasses.dataclass
class ShardSample:
    """One sample ready to be written: its key, members (name -> bytes) and its sidecar row."""

    key: str
    video_id: str
    members: dict[str, bytes]      # "000.jpg" ... "015.jpg", "json", optional "clip.npy"
    span_start: float
    span_end: float
    n_words: int

    @property
    def nbytes(self) -> int:
        return sum(len(v) for v in self.members.values())


@dataclasses.dataclass
class CommittedShard:
    index: int
    name: str
    samples: int
    bytes: int
    videos: dict[str, list[str]]   # video_id -> sample keys (in write order)


class ShardWriter:
    """Writes one shard at a time, in the order samples are added; `close_shard` commits it.

    Which samples go into which shard is decided by the caller (pipeline/run.py closes a shard only
    between videos, once it holds `max_samples` samples or `max_bytes` bytes): the writer itself
    never splits or reorders anything, so the same input sequence always gives the same shards.
    """

    def __init__(self, directory: str | os.PathLike, next_index: int = 0, mtime: float = 0.0):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.next_index = next_index
        self.mtime = mtime  # fixed member mtime: identical inputs give byte-identical tars
        self._tar = None
        self._file = None
        self._tmp_path: Path | None = None
        self._rows: list[dict[str, Any]] = []
        self._videos: dict[str, list[str]] = {}
        self._bytes = 0
        self._keys: set[str] = set()

    # --- state of the open shard
    @property
    def open_samples(self) -> int:
        return len(self._rows)

    @property
    def open_bytes(self) -> int:
        return self._bytes

    @property
    def open_videos(self) -> list[str]:
        return list(self._videos)

    def _open(self) -> None:
        wds = require("webdataset", why="writing shards")
        name = shard_name(self.next_index)
        self._tmp_path = self.directory / f".{name}.tar.tmp"
        self._file = open(self._tmp_path, "wb")
        self._tar = wds.TarWriter(self._file, encoder=False, mtime=self.mtime)

    def add_video(self, video_id: str) -> None:
        """Register a video in the open shard even if it adds no sample (keeps the stats complete)."""
        if self._tar is None:
            self._open()
        self._videos.setdefault(video_id, [])

    def add(self, sample: ShardSample) -> None:
        if sample.key in self._keys:
            raise ValueError(f"duplicate sample key {sample.key!r} in one shard")
        self.add_video(sample.video_id)
        record = {"__key__": sample.key}
        record.update(sample.members)
        self._tar.write(record)
        self._keys.add(sample.key)
        self._videos[sample.video_id].append(sample.key)
        self._bytes += sample.nbytes
        self._rows.append({
            "key": sample.key,
            "video_id": sample.video_id,
            "span_start": float(sample.span_start),
            "span_end": float(sample.span_end),
            "n_words": int(sample.n_words),
            "bytes": int(sample.nbytes),
        })

    def close_shard(self, extra_stats: dict[str, Any] | None = None) -> CommittedShard | None:
        """Commit the open shard (tar rename, parquet, stats last). None when nothing is open."""
        if self._tar is None:
            return None
        pa = require("pyarrow", why="shard sidecar parquet")
        pq = require("pyarrow.parquet", why="shard sidecar parquet")
        index, name = self.next_index, shard_name(self.next_index)
        self._tar.close()  # closes the tar stream, not our file
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self.directory / f"{name}.tar"
        os.replace(self._tmp_path, final)
        _fsync_dir(self.directory)

        schema = pa.schema([("key", pa.string()), ("video_id", pa.string()), ("span_start", pa.float64()),
                            ("span_end", pa.float64()), ("n_words", pa.int64()), ("bytes", pa.int64())])
        table = pa.Table.from_pylist(self._rows, schema=schema)
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        write_bytes(self.directory / f"{name}.parquet", buffer.getvalue())

        stats = {
            "shard": name,
            "samples": len(self._rows),
            "bytes": self._bytes,
            "tar_bytes": final.stat().st_size,
            "videos": self._videos,
            "written_at": time.time(),
        }
        stats.update(extra_stats or {})
        os.chmod(self.directory / f"{name}.parquet", 0o644)
        write_json(self.directory / f"{name}_stats.json", stats)  # last: the shard is now done
        os.chmod(self.directory / f"{name}_stats.json", 0o644)
        committed = CommittedShard(index, name, len(self._rows), self._bytes, dict(self._videos))
        self.next_index += 1
        self._tar = self._file = self._tmp_path = None
        self._rows, self._videos, self._bytes, self._keys = [], {}, 0, set()
        return committed

    def abort(self) -> None:
        """Drop the open shard (its temp file) without committing anything."""
        if self._file is not None:
            self._file.close()
        if self._tmp_path is not None and self._tmp_path.exists():
            self._tmp_path.unlink()
        self._tar = self._file = self._tmp_path = None
        self._rows, self._videos, self._bytes, self._keys = [], {}, 0, set()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_stats(directory: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """Stats of every done shard in `directory`, by shard index."""
    out = {}
    for path in sorted(Path(directory).glob("shard-*_stats.json")):
        match = SHARD_NAME.match(path.name)
        if not match:
            continue
        try:
            out[int(match.group(1))] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # unreadable stats: treated as not done (clean_incomplete removes it)
    return out


def clean_incomplete(directory: str | os.PathLike) -> list[str]:
    """Delete temp files and the pieces of every shard that has no (readable) stats file.

    Returns the names removed. Run before resuming: the videos of removed shards are redone.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    done = set(read_stats(directory))
    removed = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".shard-") or path.name.startswith(".") and path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
            removed.append(path.name)
            continue
        match = SHARD_NAME.match(path.name)
        if match and int(match.group(1)) not in done:
            path.unlink(missing_ok=True)
            removed.append(path.name)
        elif match and match.group(2) == "_stats.json":
            index = int(match.group(1))
            tar = directory / f"{shard_name(index)}.tar"
            if not tar.exists():  # stats without its tar: someone deleted the tar; redo the shard
                path.unlink(missing_ok=True)
                (directory / f"{shard_name(index)}.parquet").unlink(missing_ok=True)
                removed.append(path.name)
    return removed


def list_shards(directory: str | os.PathLike) -> list[Path]:
    """The done shards' tar paths, in order."""
    return [Path(directory) / f"{shard_name(i)}.tar" for i in sorted(read_stats(directory))]
