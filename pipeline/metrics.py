"""Ray metrics of the data job (`ray.util.metrics`), for the Ray dashboard and its Prometheus endpoint.

Recorded by the write stage's Ray wrapper on the workers (pipeline/run.py), once per finished piece:
    tvts_pipeline_videos_total{status, error_class}   videos done: written / skipped / failed (by class)
    tvts_pipeline_stage_seconds_total{stage}          seconds spent per stage, summed over videos
    tvts_pipeline_samples_total                       samples written
    tvts_pipeline_bytes_written_total                 bytes of shard tars written to output.dir
Ray exports them (with a `ray_` prefix) from each node's metrics agent; they sum across nodes.
Outside a Ray worker (`--no-ray`, tests calling stages directly) nothing is recorded.
"""
from __future__ import annotations

from typing import Any

_METRICS: dict[str, Any] | None = None


def _metrics() -> dict[str, Any] | None:
    global _METRICS
    if _METRICS is None:
        try:
            import ray
            from ray.util.metrics import Counter

            if not ray.is_initialized():
                return None
            _METRICS = {
                "videos": Counter("tvts_pipeline_videos_total", "Videos finished by the data job, by outcome",
                                  tag_keys=("status", "error_class")),
                "seconds": Counter("tvts_pipeline_stage_seconds_total", "Seconds per pipeline stage, summed over "
                                   "videos", tag_keys=("stage",)),
                "samples": Counter("tvts_pipeline_samples_total", "Samples written to shards"),
                "bytes": Counter("tvts_pipeline_bytes_written_total", "Bytes of shard tars written"),
            }
        except Exception:  # noqa: BLE001 - metrics must never fail a piece
            return None
    return _METRICS


def record_piece(task: Any, stats: dict[str, Any]) -> None:
    """Count one finished piece (its rows' outcomes and stage seconds)."""
    m = _metrics()
    if m is None:
        return
    try:
        seconds: dict[str, float] = {}
        for outcome in stats["outcomes"].values():
            m["videos"].inc(1, tags={"status": outcome["status"], "error_class": outcome.get("error_class") or ""})
            for stage, value in (outcome.get("seconds") or {}).items():
                seconds[stage] = seconds.get(stage, 0.0) + float(value)
        for stage, value in seconds.items():
            m["seconds"].inc(value, tags={"stage": stage})
        if stats["samples"]:
            m["samples"].inc(int(stats["samples"]))
        if stats.get("tar_bytes"):
            m["bytes"].inc(int(stats["tar_bytes"]))
    except Exception:  # noqa: BLE001
        return
