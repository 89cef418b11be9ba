"""WebDataset shards, committed atomically: tar -> sidecar parquet -> stats JSON, last. Local or any fsspec URL.

The unit of restart is the shard (ARCHITECTURE.md, "Sample in a shard"). A piece of output is named
`shard-NNNNNN` after the input shard (a fixed group of `shards.input_rows` manifest rows) it was made
from, `shard-NNNNNN_rA` for retry attempt A of that group's failed rows (`piece_name`). Its files:
`<piece>.tar` (only when it holds samples), `<piece>.parquet` (one row per sample), and
`<piece>_stats.json`, written last: a piece without its stats file is not done, `clean_incomplete`
deletes its files before a run resumes.

How a file appears whole (common.storage): on a local disk the tar is written as `.<piece>.tar.tmp`,
fsynced and renamed; on an object store it is one upload of the final key, which S3/GCS make visible
only when complete. Either way the stats file, written after the tar and the parquet, is the commit.

The stats file lists every input row of the piece and its outcome (written with its sample keys,
skipped, failed), so the run's ledger can be rebuilt from the shards alone.

Sample keys: `<safe video_id>_<start_ms>` over `[A-Za-z0-9_-]` (`sample_key`).
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import time
from typing import Any

from common import storage
from common.deps import require

PIECE_NAME = re.compile(r"^(shard-(\d{6})(?:_r(\d+))?)(\.tar|\.parquet|_stats\.json)$")


@dataclasses.dataclass
class ShardsConfig:
    # Manifest rows per input shard: one worker task turns them into one output shard (so a shard holds
    # up to input_rows x segment.max_samples_per_video samples). Part of the output settings.
    input_rows: int = 64
    subdir: str = "shards"            # under output.dir

    def validate(self) -> None:
        from common.config import ConfigError

        if self.input_rows < 1:
            raise ConfigError("config key 'shards.input_rows' must be >= 1")


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def piece_name(input_shard: int, attempt: int = 0) -> str:
    """The output of one attempt at one input shard: attempt 0 is the shard itself, A > 0 a retry piece."""
    return shard_name(input_shard) if attempt == 0 else f"{shard_name(input_shard)}_r{attempt}"


def parse_piece(name: str) -> tuple[int, int] | None:
    """(input shard, attempt) of a piece name or file name; None when it is not one."""
    match = PIECE_NAME.match(name if name.endswith((".tar", ".parquet", "_stats.json")) else name + ".tar")
    return (int(match.group(2)), int(match.group(3) or 0)) if match else None


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
    tar_bytes: int = 0


class _TarSink:
    """Where the open tar goes: a local temp file renamed at the end, or the final object of a URL."""

    def __init__(self, directory: str, name: str):
        self.final = storage.join(directory, f"{name}.tar")
        if storage.is_local(directory):
            storage.local_path(directory).mkdir(parents=True, exist_ok=True)
            self.tmp = storage.join(directory, f".{name}.tar.tmp")
            self.handle = open(self.tmp, "wb")
        else:
            self.tmp = None
            fs, path = storage.filesystem(self.final)
            self.handle = fs.open(path, "wb")
        self.size = 0
        self.aborted = False

    def write(self, data: bytes) -> int:
        if self.aborted:   # tarfile's buffers flush on garbage collection: nowhere to go after an abort
            return len(data)
        self.size += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()

    def commit(self) -> int:
        if self.tmp is None:
            self.handle.close()  # completes the upload: the object appears whole
            return self.size
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.final)
        _fsync_dir(os.path.dirname(self.final))
        return self.size

    def abort(self) -> None:
        self.aborted = True
        try:
            if self.tmp is None:
                discard = getattr(self.handle, "discard", None)  # fsspec buffered files: drop the upload
                if discard is not None:
                    discard()
                else:
                    self.handle.close()
            else:
                self.handle.close()
                os.unlink(self.tmp)
        except (OSError, ValueError):
            pass


class ShardWriter:
    """Writes one shard at a time, in the order samples are added; `close_shard` commits it.

    `directory`: a local folder or an fsspec URL. Shard names come from `next_index` (shard-000000,
    shard-000001, ...) unless `name` fixes the one piece this writer makes (the pipeline's worker tasks:
    `piece_name(input_shard, attempt)`). The writer never splits or reorders anything, so the same samples
    in the same order give byte-identical files (fixed member mtime).
    """

    def __init__(self, directory: str | os.PathLike, next_index: int = 0, mtime: float = 0.0,
                 name: str | None = None):
        self.directory = str(directory)
        self.next_index = next_index
        self.name = name
        self.mtime = mtime
        self._tar = None
        self._sink: _TarSink | None = None
        self._rows: list[dict[str, Any]] = []
        self._videos: dict[str, list[str]] = {}
        self._bytes = 0
        self._keys: set[str] = set()

    def current_name(self) -> str:
        return self.name or shard_name(self.next_index)

    def _open(self) -> None:
        wds = require("webdataset", why="writing shards")
        self._sink = _TarSink(self.directory, self.current_name())
        self._tar = wds.TarWriter(self._sink, encoder=False, mtime=self.mtime)

    def add_video(self, video_id: str) -> None:
        """Register a video in the open shard even if it adds no sample (keeps the stats complete)."""
        self._videos.setdefault(video_id, [])

    def add(self, sample: ShardSample) -> None:
        if sample.key in self._keys:
            raise ValueError(f"duplicate sample key {sample.key!r} in one shard")
        if self._tar is None:
            self._open()
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

    def close_shard(self, extra_stats: dict[str, Any] | None = None, *,
                    allow_empty: bool = False) -> CommittedShard | None:
        """Commit the open shard (tar, parquet, stats last). None when it holds nothing, unless `allow_empty`:
        then only the stats file is written (a piece whose rows all failed or were skipped is done too)."""
        if self._tar is None and not (allow_empty and (self._videos or extra_stats)):
            return None
        index, name = self.next_index, self.current_name()
        tar_bytes = 0
        if self._tar is not None:
            pa = require("pyarrow", why="shard sidecar parquet")
            pq = require("pyarrow.parquet", why="shard sidecar parquet")
            self._tar.close()  # ends the tar stream; the sink's close below commits the file
            tar_bytes = self._sink.commit()
            schema = pa.schema([("key", pa.string()), ("video_id", pa.string()), ("span_start", pa.float64()),
                                ("span_end", pa.float64()), ("n_words", pa.int64()), ("bytes", pa.int64())])
            buffer = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(self._rows, schema=schema), buffer)
            storage.write_bytes(storage.join(self.directory, f"{name}.parquet"), buffer.getvalue())
        stats = {
            "shard": name,
            "samples": len(self._rows),
            "bytes": self._bytes,
            "tar_bytes": tar_bytes,
            "videos": self._videos,
            "written_at": time.time(),
        }
        stats.update(extra_stats or {})
        storage.write_json(storage.join(self.directory, f"{name}_stats.json"), stats)  # last: now it is done
        committed = CommittedShard(index, name, len(self._rows), self._bytes, dict(self._videos), tar_bytes)
        self.next_index += 1
        self._tar = self._sink = None
        self._rows, self._videos, self._bytes, self._keys = [], {}, 0, set()
        return committed

    def abort(self) -> None:
        """Drop the open shard (its temp file or unfinished upload) without committing anything."""
        if self._sink is not None:
            self._sink.abort()
        self._tar = self._sink = None
        self._rows, self._videos, self._bytes, self._keys = [], {}, 0, set()


def _fsync_dir(directory: str) -> None:
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


def done_pieces(directory: str | os.PathLike) -> list[str]:
    """Names of the done pieces in `directory` (those with a stats file), by (input shard, attempt)."""
    names = []
    for file in storage.listdir(directory):
        match = PIECE_NAME.match(file)
        if match and match.group(4) == "_stats.json":
            names.append(match.group(1))
    return sorted(names, key=lambda n: parse_piece(n))


def read_stats(directory: str | os.PathLike, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Stats of the done pieces in `directory` (or of `names` only), by piece name. An unreadable stats
    file counts as not done (clean_incomplete removes it)."""
    out = {}
    for name in done_pieces(directory) if names is None else names:
        try:
            out[name] = json.loads(storage.read_bytes(storage.join(directory, f"{name}_stats.json")))
        except (OSError, ValueError):
            continue
    return out


def clean_incomplete(directory: str | os.PathLike) -> list[str]:
    """Delete temp files and the files of every piece that has no readable stats file, or whose stats
    promise a tar that is not there. Returns the names removed. Run before resuming (no writer active)."""
    files = storage.listdir(directory)
    if not files:
        return []
    stats = read_stats(directory)
    present = set(files)
    removed = []
    for name, piece in stats.items():
        if int(piece.get("samples", 0)) > 0 and f"{name}.tar" not in present:  # someone deleted the tar
            storage.remove(storage.join(directory, f"{name}_stats.json"))
            del_name = f"{name}_stats.json"
            removed.append(del_name)
    done = {n for n, piece in stats.items() if not (int(piece.get("samples", 0)) > 0 and f"{n}.tar" not in present)}
    for file in files:
        match = PIECE_NAME.match(file)
        if file.startswith(".") and file.endswith(".tmp") or (match and match.group(1) not in done):
            storage.remove(storage.join(directory, file))
            removed.append(file)
    return sorted(set(removed))


def list_shards(directory: str | os.PathLike) -> list[str]:
    """The tar locations of the done pieces that hold samples, in (input shard, attempt) order."""
    stats = read_stats(directory)
    return [storage.join(directory, f"{name}.tar") for name in stats if int(stats[name].get("samples", 0)) > 0]
