"""The write stage, on the workers: one input shard's finished videos -> its piece in `output.dir` (any fsspec URL).

`WriteStage(cfg)(task) -> stats`: the samples of the task's videos, in manifest order, go into one tar
(`pipeline.samples.shards.ShardWriter`, named `piece_name(input_shard, attempt)`), then its sidecar
parquet, then its stats file, which lists every row's outcome and is the commit. The stats dict is all
that goes back to the driver: metadata only, no sample byte.

The piece's bytes are a pure function of the task's rows and the output settings: the videos are in
manifest order whatever order the stages finished them in, member mtimes are fixed, and a retried task
(a worker or a node died) writes the same bytes again over whatever the first attempt left.
"""
from __future__ import annotations

import hashlib
from typing import Any

from common import storage
from pipeline.config import PipelineConfig, output_fingerprint
from pipeline.errors import JobFault
from pipeline.samples.shards import ShardWriter, piece_name
from pipeline.stages import ShardTask, VideoWork

__all__ = ["WriteStage", "rows_digest", "outcome_of"]


def rows_digest(rows: list[str]) -> str:
    """The identity of a task's rows: `<video_id>:<row fingerprint>` of each, in order (pipeline.driver)."""
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:32]


def outcome_of(item: VideoWork) -> dict[str, Any]:
    """The one outcome of a video, as the stats file and the ledger record it."""
    base = {"line": item.row.get("line"), "fingerprint": item.row.get("fingerprint"),
            "seconds": {k: round(v, 4) for k, v in item.seconds.items()}}
    if item.status == "failed":
        return dict(base, status="failed", stage=item.stage or "?", error_class=item.error_class or "unknown",
                    message=item.message[:2000])
    if item.status == "skipped" or not item.samples:
        return dict(base, status="skipped", reason=item.reason or "no_samples", message=item.message)
    written = dict(base, status="written", keys=[s.key for s in item.samples], dropped_samples=item.dropped_samples)
    if item.dropped_reasons:  # error class -> samples dropped (e.g. frame_time_mismatch)
        written["dropped_reasons"] = dict(sorted(item.dropped_reasons.items()))
    return written


class WriteStage:
    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.directory = storage.join(cfg.output.dir, cfg.shards.subdir)
        self.fingerprint = output_fingerprint(cfg)

    def __call__(self, task: ShardTask) -> dict[str, Any]:
        name = piece_name(task.input_shard, task.attempt)
        writer = ShardWriter(self.directory, name=name)
        outcomes = {}
        try:
            for item in task.items:
                outcome = outcome_of(item)
                if outcome["status"] == "written":
                    for sample in item.samples:
                        writer.add(sample)
                outcomes[item.video_id] = outcome
            stats = writer.close_shard(allow_empty=True, extra_stats={
                "input_shard": task.input_shard, "attempt": task.attempt, "rows_digest": task.rows_digest,
                "fingerprint": self.fingerprint, "rows": [item.video_id for item in task.items],
                "outcomes": outcomes})
        except OSError as exc:   # the output is full, gone or not writable: nothing of this piece stays
            writer.abort()
            raise JobFault(f"cannot write {storage.redact(storage.join(self.directory, name))}: "
                           f"{exc.strerror or exc}") from exc
        except BaseException:
            writer.abort()
            raise
        return {"shard": stats.name, "input_shard": task.input_shard, "attempt": task.attempt,
                "rows_digest": task.rows_digest, "samples": stats.samples, "bytes": stats.bytes,
                "tar_bytes": stats.tar_bytes, "outcomes": outcomes}
