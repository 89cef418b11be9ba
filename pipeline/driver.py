"""The driver's side of the data job, apart from Ray: which input shards to do, and their outcomes into the ledger.

The driver handles metadata only. It reads the manifest (de-duplicated, partitioned, limited), cuts
the rows into input shards of `shards.input_rows` consecutive rows, and plans one `ShardTask` per input
shard that is not done; the workers write the pieces (pipeline/write.py) and return their stats, which
`Recorder` puts into the ledger (one transaction per piece).

An input shard is done when its attempt-0 piece exists with the same rows (`rows_digest`: a changed
manifest or `input.limit` that regroups its rows redoes it, after deleting its old pieces). With
`--retry-failed`, the failed rows of each done shard are redone as a retry piece `shard-NNNNNN_rG` of one
retry generation G (kept in the ledger until the retry run ends, so a rerun after a crash continues it
instead of retrying twice). Rows of a done shard that have no outcome at all (a retry piece deleted by
hand) are redone the same way.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from common import storage
from common.cli import JobError
from pipeline.config import PipelineConfig
from pipeline.ledger import Ledger
from pipeline.samples.shards import parse_piece
from pipeline.stages import ShardTask, VideoWork
from pipeline.write import rows_digest

__all__ = ["Inputs", "Plan", "plan_tasks", "Recorder", "task_chunks", "row_fingerprint"]


def _file_facts(location: str | None) -> list | None:
    """(size, mtime) of a local file: a re-encoded video or re-downloaded captions under the same name
    changes them. Remote files are fingerprinted by their URL only (a HEAD per row would cost the
    driver a request per video)."""
    if not location or not storage.is_local(location):
        return None
    try:
        st = os.stat(storage.local_path(location))
    except OSError:
        return ["missing"]
    return [st.st_size, st.st_mtime_ns]


def row_fingerprint(row: Any, stat_files: bool = True) -> str:
    """What a row's samples depend on: its fields (url, captions, meta) and, for local files, their size and
    mtime. A row whose fingerprint changed under the same video id is redone (its input shard with it)."""
    facts = [row.video_id, row.url, row.captions, row.meta]
    if stat_files:
        facts += [_file_facts(row.url), _file_facts(row.captions)]
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Inputs:
    """The manifest's rows for this job (de-duplicated, partitioned, limited), in order, in input shards."""

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
            raise JobError(f"cannot read the manifest {storage.redact(self.cfg.input.manifest)}: {exc}",
                           code=2) from None
        except (OSError, ValueError) as exc:
            raise JobError(f"cannot read the manifest {storage.redact(self.cfg.input.manifest)}: {exc}",
                           code=2) from None
        self.duplicates = stats.duplicates

    def shards(self, errors: list[dict] | None = None) -> Iterator[tuple[int, list[tuple[int, Any, str]]]]:
        """(input shard index, its rows as (order, ManifestRow, fingerprint)); malformed rows go to `errors`."""
        size = self.cfg.shards.input_rows
        self.total = self.errors = 0
        index, group = 0, []
        for item in self._items():
            self.total += 1
            if not isinstance(item, tuple):
                self.errors += 1
                if errors is not None:
                    record = item.as_record()
                    errors.append({"video_id": item.input_id, "line": item.line, "stage": record["stage"],
                                   "error_class": record["error_class"], "message": record["message"]})
                continue
            order, row = item
            group.append((order, row, row_fingerprint(row, self.cfg.input.fingerprint_files)))
            if len(group) == size:
                yield index, group
                index, group = index + 1, []
        if group:
            yield index, group


@dataclass
class Plan:
    """What this run does (counted while the tasks are planned)."""

    tasks: int = 0
    rows: int = 0
    done_shards: int = 0
    stale_pieces: int = 0
    changed: int = 0        # rows redone because their fields or files changed under the same video id


def plan_tasks(inputs: Inputs, ledger: Ledger, done_pieces: list[str], *, retry_generation: int | None,
               errors: list[dict] | None = None, plan: Plan | None = None,
               drop_stale: Callable[[int, list[str]], None] | None = None) -> Iterator[ShardTask]:
    """The ShardTasks of this run, in input-shard order (see the module docstring for the rules).

    `drop_stale(index, piece names)` is called before the task of a regrouped shard is yielded: its old
    pieces must be gone before the new ones are written. Without `drop_stale` it only counts (the tasks of
    whole shards then come without their items)."""
    base = ledger.base_digests()
    latest = ledger.latest_attempts()
    failed = ledger.failed_rows() if retry_generation is not None else {}
    recorded = ledger.rows_per_shard()
    by_shard: dict[int, list[str]] = {}
    for name in done_pieces:
        by_shard.setdefault(parse_piece(name)[0], []).append(name)
    plan = plan if plan is not None else Plan()
    for index, rows in inputs.shards(errors):
        keyed = [f"{row.video_id}:{fp}" for _, row, fp in rows]
        digest = rows_digest(keyed)
        if base.get(index) != digest:
            stale = by_shard.get(index, [])   # other rows now, a row changed, or its base piece lost: redo it all
            plan.stale_pieces += len(stale)
            if index in base:
                known = ledger.fingerprints_of(index)
                plan.changed += sum(1 for _, row, fp in rows if known.get(row.video_id) not in (None, fp))
            if stale and drop_stale is not None:
                drop_stale(index, stale)
            plan.tasks += 1
            plan.rows += len(rows)
            if drop_stale is not None:   # a real pass (not just counting): the work items
                yield ShardTask(index, 0, digest, [_work(o, r, fp) for o, r, fp in rows])
            else:
                yield ShardTask(index, 0, digest, [])
            continue
        plan.done_shards += 1
        ids = [row.video_id for _, row, _ in rows]
        redo: set[str] = set()
        if recorded.get(index, 0) < len(ids):
            redo |= set(ids) - ledger.recorded_ids_of(index)
        if retry_generation is not None and latest.get(index, 0) < retry_generation:
            redo |= failed.get(index, set())
        if redo:
            again = [(o, r, fp) for o, r, fp in rows if r.video_id in redo]
            # a new piece after the shard's latest one: the retry generation's number when retrying
            attempt = max(retry_generation or 0, latest.get(index, 0) + 1)
            plan.tasks += 1
            plan.rows += len(again)
            yield ShardTask(index, attempt, rows_digest([f"{r.video_id}:{fp}" for _, r, fp in again]),
                            [_work(o, r, fp) for o, r, fp in again])


def _work(order: int, row: Any, fingerprint: str) -> VideoWork:
    return VideoWork(order=order, row=dict(row.to_dict(), fingerprint=fingerprint))


def task_chunks(tasks: Iterator[ShardTask], max_rows: int) -> Iterator[list[ShardTask]]:
    """Tasks in groups of about `max_rows` rows: one Ray Data run each (bounds the driver's memory)."""
    chunk: list[ShardTask] = []
    rows = 0
    for task in tasks:
        chunk.append(task)
        rows += len(task.items)
        if rows >= max_rows:
            yield chunk
            chunk, rows = [], 0
    if chunk:
        yield chunk


class Recorder:
    """Takes the pieces' stats as the workers finish them (any order) and commits them to the ledger."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.counts = {"processed": 0, "written": 0, "skipped": 0, "failed": 0, "samples": 0, "shards": 0,
                       "dropped_samples": 0, "bytes_written": 0}
        self.pieces_by_node: dict[str, int] = {}   # Ray node id -> pieces it wrote (this run)

    def add(self, stats: dict[str, Any]) -> int:
        """Record one finished piece; returns how many rows it settled."""
        self.ledger.commit_piece(stats)
        outcomes = stats.get("outcomes") or {}
        for outcome in outcomes.values():
            self.counts[outcome["status"]] += 1
            self.counts["dropped_samples"] += int(outcome.get("dropped_samples", 0))
        self.counts["processed"] += len(outcomes)
        self.counts["samples"] += int(stats["samples"])
        self.counts["shards"] += int(stats["samples"]) > 0
        self.counts["bytes_written"] += int(stats.get("tar_bytes", 0))
        if stats.get("node"):
            self.pieces_by_node[stats["node"]] = self.pieces_by_node.get(stats["node"], 0) + 1
        return len(outcomes)
