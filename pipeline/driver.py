"""The driver's side of the data job, apart from Ray: inputs in manifest order, results back in that order,
samples into shards and outcomes into the ledger.

- `Inputs(cfg)`: the manifest's rows for this job (de-duplicated, partitioned, limited), streamed in
  order; malformed rows are recorded as failed on the way.
- `InOrder(orders, spool_dir, memory_bytes)`: yields finished videos in manifest order whatever order
  they arrive in (early arrivals wait in memory, past `ray.reorder_memory_bytes` on disk).
- `Committer(cfg, ledger, writer)`: appends each video's samples to the open shard, closes a shard only
  between two videos, and commits shard + ledger (ARCHITECTURE.md, "Pipeline: resume guarantee").
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Iterable, Iterator

from common.cli import JobError
from pipeline.config import PipelineConfig
from pipeline.ledger import Ledger
from pipeline.samples.shards import ShardWriter
from pipeline.stages import VideoWork

__all__ = ["Inputs", "InOrder", "Committer", "chunks"]


# --------------------------------------------------------------------------------------------------
# Inputs


class Inputs:
    """The manifest's rows for this job (de-duplicated, partitioned, limited), streamed in order."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.total = self.duplicates = self.errors = 0

    def _items(self) -> Iterator[Any]:
        from pipeline.sources.manifest import DedupeStats, dedupe_rows, read_manifest
        from pipeline.sources.rows import ManifestError, ManifestFormatError

        stats = DedupeStats()
        try:
            order = 0
            for item in dedupe_rows(read_manifest(self.cfg.input.manifest, self.cfg.input.format), stats):
                if isinstance(item, ManifestError):
                    yield item
                    continue
                if self.cfg.input.limit is not None and order >= self.cfg.input.limit:
                    break
                if order % self.cfg.input.partitions == self.cfg.input.partition:
                    yield order, item
                order += 1
        except ManifestFormatError as exc:
            raise JobError(f"cannot read the manifest {self.cfg.input.manifest}: {exc}", code=2) from None
        except (OSError, ValueError) as exc:
            raise JobError(f"cannot read the manifest {self.cfg.input.manifest}: {exc}", code=2) from None
        self.duplicates = stats.duplicates

    def scan(self, finished: set[str]) -> int:
        """Count the inputs and those still to do (first pass)."""
        self.total = self.errors = todo = 0
        for item in self._items():
            self.total += 1
            if isinstance(item, tuple):
                todo += item[1].video_id not in finished
            else:
                self.errors += 1
        return todo

    def work(self, finished: set[str], ledger: Ledger) -> Iterator[VideoWork]:
        """The rows to do, as VideoWork; malformed rows are recorded as failed on the way."""
        for item in self._items():
            if isinstance(item, tuple):
                order, row = item
                if row.video_id not in finished:
                    yield VideoWork(order=order, row=row.to_dict())
            elif item.input_id not in finished:
                record = item.as_record()
                ledger.record_failed(item.input_id, item.line, record["stage"], record["error_class"],
                                     record["message"])


def chunks(items: Iterable[VideoWork], size: int) -> Iterator[list[VideoWork]]:
    chunk: list[VideoWork] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class InOrder:
    """Yield finished videos in manifest order whatever order they arrive in.

    Early arrivals wait in memory up to `memory_bytes` (their pickled size), beyond that in files under
    `spool_dir` (deleted as they are used; the folder is only a cache: a crash just redoes those videos).
    """

    def __init__(self, orders: Iterable[int], spool_dir: Path, memory_bytes: int):
        self.expected = list(orders)
        self.position = 0
        self.spool_dir = spool_dir
        self.memory_bytes = memory_bytes
        self.in_memory: dict[int, bytes] = {}
        self.on_disk: set[int] = set()
        self.held_bytes = 0

    def _take(self, order: int) -> VideoWork:
        if order in self.in_memory:
            blob = self.in_memory.pop(order)
            self.held_bytes -= len(blob)
            return pickle.loads(blob)
        path = self.spool_dir / f"{order}.pkl"
        item = pickle.loads(path.read_bytes())
        path.unlink()
        self.on_disk.discard(order)
        return item

    def push(self, item: VideoWork) -> Iterator[VideoWork]:
        if self.position < len(self.expected) and item.order == self.expected[self.position]:
            self.position += 1
            yield item
        else:
            blob = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
            if self.held_bytes + len(blob) <= self.memory_bytes:
                self.in_memory[item.order] = blob
                self.held_bytes += len(blob)
            else:
                self.spool_dir.mkdir(parents=True, exist_ok=True)
                (self.spool_dir / f"{item.order}.pkl").write_bytes(blob)
                self.on_disk.add(item.order)
        while self.position < len(self.expected) and (
                self.expected[self.position] in self.in_memory or self.expected[self.position] in self.on_disk):
            order = self.expected[self.position]
            self.position += 1
            yield self._take(order)

    def check_complete(self) -> None:
        if self.position != len(self.expected):
            missing = self.expected[self.position]
            raise JobError(f"the stages returned no result for manifest position {missing}; rerun to resume")


# --------------------------------------------------------------------------------------------------
# Driver side: shards + ledger


class Committer:
    """Takes finished videos in order; appends samples to the open shard; commits shard + ledger."""

    def __init__(self, cfg: PipelineConfig, ledger: Ledger, writer: ShardWriter):
        self.cfg, self.ledger, self.writer = cfg, ledger, writer
        self.pending: list[dict[str, Any]] = []
        self.counts = {"processed": 0, "written": 0, "skipped": 0, "failed": 0, "samples": 0, "shards": 0,
                       "dropped_samples": 0}

    def add(self, item: VideoWork) -> None:
        line = item.row.get("line")
        seconds = {k: round(v, 4) for k, v in item.seconds.items()}
        self.counts["processed"] += 1
        if item.status == "failed":
            self.ledger.record_failed(item.video_id, line, item.stage or "?", item.error_class or "unknown",
                                      item.message, seconds)
            self.counts["failed"] += 1
            return
        if item.status == "skipped" or not item.samples:
            self.ledger.record_skipped(item.video_id, line, item.reason or "no_samples", item.message, seconds)
            self.counts["skipped"] += 1
            return
        for sample in item.samples:
            self.writer.add(sample)
        self.pending.append({"video_id": item.video_id, "line": line, "keys": [s.key for s in item.samples],
                             "seconds": seconds})
        self.counts["samples"] += len(item.samples)
        self.counts["dropped_samples"] += item.dropped_samples
        if (self.writer.open_samples >= self.cfg.shards.max_samples
                or self.writer.open_bytes >= self.cfg.shards.max_bytes):
            self.commit()

    def commit(self) -> None:
        if not self.pending:
            return
        outcomes = {p["video_id"]: {"line": p["line"], "seconds": p["seconds"]} for p in self.pending}
        shard = self.writer.close_shard(extra_stats={"outcomes": outcomes})
        self.ledger.commit_shard(shard.index, shard.name, shard.samples, shard.bytes, self.pending)
        self.counts["written"] += len(self.pending)
        self.counts["shards"] += 1
        self.pending = []
