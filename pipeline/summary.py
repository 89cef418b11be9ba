"""The run summary: `summary.json` in the output folder and a table on the terminal.

Totals (`inputs`, `written`, `skipped`, `failed`, `samples`, `shards`, `bytes`, `errors`,
`skip_reasons`, `seconds`) describe the whole output folder (every run that wrote to it, from the
ledger); `this_run` says what this invocation did and how fast (`videos_per_s`, `samples_per_s`,
`frames_per_s`). `seconds` holds the seconds spent per stage, summed over videos (CPU-side work time,
more than the wall time when stages run in parallel), and `wall` for this run.
"""
from __future__ import annotations

from typing import Any

from common import storage


def build_summary(counts: dict[str, Any], *, inputs: int, duplicates: int, manifest_errors: int,
                  this_run: dict[str, Any], frames_per_sample: int, extra: dict[str, Any] | None = None) -> dict:
    wall = max(float(this_run.get("wall_s", 0.0)), 1e-9)
    processed = int(this_run.get("processed", 0))
    samples_now = int(this_run.get("samples", 0))
    summary = {
        "inputs": inputs,
        "duplicates": duplicates,
        "changed": int(this_run.get("changed", 0)),   # rows redone this run: same id, other fields or files
        "manifest_errors": manifest_errors,
        "written": counts["written"],
        "skipped": counts["skipped"],
        "failed": counts["failed"],
        "samples": counts["samples"],
        "shards": counts["shards"],
        "bytes": counts["bytes"],
        "errors": counts["errors"],
        "skip_reasons": counts["skip_reasons"],
        "seconds": dict(counts["stage_seconds"], wall=round(wall, 3)),
        "videos_per_s": round(processed / wall, 4),
        "samples_per_s": round(samples_now / wall, 4),
        "frames_per_s": round(samples_now * frames_per_sample / wall, 3),
        "this_run": this_run,
    }
    summary.update(extra or {})
    return summary


def write_summary(out_dir: str, summary: dict) -> str:
    """summary.json into the output folder or URL (atomically; written after everything else)."""
    location = storage.join(out_dir, "summary.json")
    storage.write_json(location, summary)
    return location


def format_table(summary: dict) -> str:
    run = summary.get("this_run", {})
    rows = [
        ("inputs", summary["inputs"]),
        ("written", summary["written"]),
        ("skipped", summary["skipped"]),
        ("failed", summary["failed"]),
        ("samples", summary["samples"]),
        ("shards", summary["shards"]),
        ("bytes", f"{summary['bytes']:,}"),
        ("this run: driver bytes in", f"{run.get('driver_bytes_in', 0):,}"),
        ("this run: videos", run.get("processed", 0)),
        ("this run: wall s", f"{summary['seconds'].get('wall', 0):.1f}"),
        ("videos/s", summary["videos_per_s"]),
        ("samples/s", summary["samples_per_s"]),
        ("frames/s", summary["frames_per_s"]),
    ]
    if summary.get("duplicates"):
        rows.insert(1, ("duplicate rows", summary["duplicates"]))
    if summary.get("changed"):
        rows.insert(1, ("changed rows (redone)", summary["changed"]))
    lines = ["pipeline run summary", "-" * 40]
    lines += [f"{name:<24}{value:>16}" for name, value in rows]
    if summary["errors"]:
        lines += ["-" * 40, "failed by error class"]
        lines += [f"  {name:<22}{count:>16}" for name, count in summary["errors"].items()]
    if summary["skip_reasons"]:
        lines += ["-" * 40, "skipped by reason"]
        lines += [f"  {name:<22}{count:>16}" for name, count in summary["skip_reasons"].items()]
    stage_seconds = {k: v for k, v in summary["seconds"].items() if k != "wall"}
    if stage_seconds:
        lines += ["-" * 40, "seconds per stage (summed over videos)"]
        lines += [f"  {name:<22}{value:>16.2f}" for name, value in stage_seconds.items()]
    return "\n".join(lines)
