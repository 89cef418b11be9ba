"""The data job: `python -m pipeline run --config FILE [--set key=value ...] [--retry-failed]`.

Ray Data streams the manifest's rows through the stages (pipeline/stages.py: fetch -> probe ->
transcript -> [asr actors] -> segment -> decode -> [embed actors]), one `map_batches` per stage with
its resources from the `ray` config section; the driver takes the finished videos as they come, puts them back in
manifest order (`pipeline.driver.InOrder`: early arrivals wait in memory, or on disk past `ray.reorder_memory_bytes`,
so one slow video never stalls the workers) and appends their samples to shards (pipeline/samples/shards.py), recording every video's
outcome in the ledger (pipeline/ledger.py). See ARCHITECTURE.md, "Pipeline: resume guarantee".

Why the driver writes: shard contents must not depend on which worker finished first. Videos reach the
writer in manifest order, a shard is closed only between two videos (once it holds `shards.max_samples`
samples or `shards.max_bytes` bytes), so the shards are a pure function of the manifest and the
per-video results; a rerun after a crash deletes the shard that was open, skips the videos whose
outcome is recorded, and rebuilds the same shards from the first unfinished video on.

Ray: with `ray.address` unset and no RAY_ADDRESS in the environment the job starts a private local
Ray (127.0.0.1, `ray.num_cpus` CPUs) and stops it at the end; under `ray job submit` (RAY_ADDRESS set)
or with `ray.address` it joins that cluster. `--no-ray` runs the same stages in this process.

Exit codes: 0 when the job ran (inputs may have failed: that is counted and reported), 1 when the job
itself broke, 2 for a bad config, an unreadable manifest or an output folder in use by another run.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import pickle
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

from common.cli import JobError
from common.config import add_config_args, load_from_args
from common.ray_env import prepare_ray
from pipeline.config import PipelineConfig, asr_enabled, to_dict
from pipeline.driver import Committer, InOrder, Inputs, chunks
from pipeline.ledger import Ledger
from pipeline.samples.shards import ShardWriter, clean_incomplete, read_stats
from pipeline.stages import (
    AsrStage,
    DecodeStage,
    EmbedStage,
    FetchStage,
    ProbeStage,
    SegmentStage,
    TranscriptStage,
    VideoWork,
)
from pipeline.summary import build_summary, format_table, write_summary

log = logging.getLogger("pipeline.run")

STAGES = {"fetch": FetchStage, "probe": ProbeStage, "transcript": TranscriptStage, "asr": AsrStage,
          "segment": SegmentStage, "decode": DecodeStage, "embed": EmbedStage}


# --------------------------------------------------------------------------------------------------
# Stage execution: Ray Data, or in this process


def _stage_names(cfg: PipelineConfig) -> list[str]:
    names = ["fetch", "probe", "transcript"]
    if asr_enabled(cfg):
        names.append("asr")
    names += ["segment", "decode"]
    if cfg.embed.enabled:
        names.append("embed")
    return names


def _unpack(batch: dict) -> list[VideoWork]:
    return [pickle.loads(blob) for blob in batch["work"]]


def _pack(items: list[VideoWork]) -> dict:
    import numpy as np

    work = np.empty(len(items), dtype=object)
    work[:] = [pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL) for item in items]
    return {"order": np.array([item.order for item in items], dtype=np.int64), "work": work}


def apply_stage(batch: dict, stage: str, cfg: PipelineConfig) -> dict:
    """A task-based Ray Data stage: build the stage (cheap) and run it on the batch."""
    return _pack(STAGES[stage](cfg)(_unpack(batch)))


class ActorStage:
    """An actor-based Ray Data stage: the stage (a model) is built once per actor."""

    def __init__(self, stage: str, cfg: PipelineConfig):
        self.stage = STAGES[stage](cfg)

    def __call__(self, batch: dict) -> dict:
        return _pack(self.stage(_unpack(batch)))


# Ray Data names an operator (its progress bar, its metrics, its log lines) after the function or class it
# runs: one per stage, so a user reads "MapBatches(fetch)->MapBatches(probe)" instead of "apply_stage".
def named_task_stage(stage: str, cfg: PipelineConfig):
    def run(batch: dict) -> dict:
        return apply_stage(batch, stage, cfg)

    run.__name__ = run.__qualname__ = stage
    return run


def named_actor_stage(stage: str) -> type:
    return type(stage, (ActorStage,), {"__doc__": f"The {stage} stage, built once per actor."})


def _stream_local(items: list[VideoWork], cfg: PipelineConfig, stages: dict) -> Iterator[VideoWork]:
    for item in items:
        batch = [item]
        for name in _stage_names(cfg):
            if name not in stages:
                stages[name] = STAGES[name](cfg)
            batch = stages[name](batch)
        yield from batch


def _stream_ray(items: list[VideoWork], cfg: PipelineConfig) -> Iterator[VideoWork]:
    import ray

    r = cfg.ray
    ds = ray.data.from_items([{"order": it.order, "work": pickle.dumps(it, protocol=pickle.HIGHEST_PROTOCOL)}
                              for it in items], override_num_blocks=len(items))
    # Ray Data's defaults already retry a task whose worker died and restart a dead actor (retrying its
    # calls): a killed worker costs time, never a video. Stage code catches every per-video error, so
    # a retried task is never a deterministic Python failure.
    for name in _stage_names(cfg):
        if name in ("asr", "embed"):
            asr = name == "asr"
            ds = ds.map_batches(
                named_actor_stage(name), fn_constructor_kwargs={"stage": name, "cfg": cfg}, batch_format="numpy",
                batch_size=r.asr_batch_size if asr else cfg.embed.batch_size,
                compute=ray.data.ActorPoolStrategy(size=r.asr_actors if asr else r.embed_actors),
                num_cpus=r.asr_num_cpus if asr else r.embed_num_cpus,
                num_gpus=(r.asr_num_gpus if asr else r.embed_num_gpus) or None)
        else:
            heavy = name in ("segment", "decode")
            ds = ds.map_batches(
                named_task_stage(name, cfg), batch_format="numpy", batch_size=1,
                compute=ray.data.TaskPoolStrategy(size=r.decode_concurrency if heavy else r.prepare_concurrency),
                num_cpus=r.decode_num_cpus if heavy else r.prepare_num_cpus)
    for row in ds.iter_rows():
        yield pickle.loads(row["work"])


@contextlib.contextmanager
def ray_session(cfg: PipelineConfig, show_stages: bool = False) -> Iterator[None]:
    """Join the configured cluster / the one of `ray job submit`, or start a private local Ray.
    `show_stages`: Ray Data's own per-stage progress bars (on a terminal, beside the job's bar)."""
    joining = prepare_ray(cfg.ray.address)
    import ray

    started = False
    if not ray.is_initialized():
        r = cfg.ray
        quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
        if joining:
            ray.init(address=r.address or None, **quiet)
        else:
            root = str(Path(__file__).resolve().parent.parent)  # workers import pipeline/ from here
            if root not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
                os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            ray.init(address="local", num_cpus=r.num_cpus, object_store_memory=r.object_store_memory,
                     include_dashboard=False, _temp_dir=r.temp_dir, **quiet)
        started = True
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.enable_operator_progress_bars,
             ctx.enable_progress_bar_name_truncation, ctx.print_on_execution_start,
             ctx.execution_options.resource_limits)
    # Results stream back as they finish (no head-of-line blocking in Ray); InOrder restores the order.
    ctx.execution_options.preserve_order = False
    # Where someone watches, Ray Data shows one bar per stage beside ours (videos committed, samples,
    # throughput); elsewhere neither, and no warning that they are off.
    ctx.enable_progress_bars = ctx.enable_operator_progress_bars = show_stages
    ctx.enable_progress_bar_name_truncation = False   # stage names are short; no "truncating" warning
    if not show_stages:
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    ctx.print_on_execution_start = False
    if cfg.ray.max_inflight_bytes:
        limits = ctx.execution_options.resource_limits
        ctx.execution_options.resource_limits = limits.copy(object_store_memory=cfg.ray.max_inflight_bytes)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        yield
    finally:
        # leave the process's Ray Data context as it was (other jobs may run in this process)
        (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.enable_operator_progress_bars,
         ctx.enable_progress_bar_name_truncation, ctx.print_on_execution_start,
         ctx.execution_options.resource_limits) = saved
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------------------------------
# The job


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """One run per output folder at a time (the lock dies with the process, also on kill -9)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise JobError(f"another run is writing to {out_dir} (lock {out_dir / '.lock'}); "
                           "wait for it or use another output.dir", code=2) from None
        yield


def check_models(cfg: PipelineConfig) -> None:
    """Resolve models before starting, so a missing one is one clear line and not a failure per video."""
    if asr_enabled(cfg):
        from pipeline.transcripts.asr import AsrModelError, check_model

        try:
            cfg.asr.model = check_model(cfg.asr)
        except AsrModelError as exc:
            raise JobError(str(exc), code=2) from None
    if cfg.embed.enabled:
        try:
            import features.embed  # noqa: F401
        except ImportError as exc:
            raise JobError(f"embed.enabled is true but features.embed cannot be imported: {exc}", code=2) from None


# Config sections that change what lands in the shards (not how fast or from where).
OUTPUT_SECTIONS = ("transcript", "asr", "segment", "decode", "embed", "shards", "seed")
NOT_OUTPUT_KEYS = {"asr": ("device", "cpu_threads"), "embed": ("device", "batch_size"),
                   "decode": ("timeout_s", "audio_timeout_s", "threads", "ffmpeg", "mode", "seek_min_gap_s")}


def output_fingerprint(cfg: PipelineConfig) -> str:
    """A hash of the settings that shape the samples: a rerun into the same output.dir must match it."""
    import hashlib
    import json

    full = to_dict(cfg)
    picked = {}
    for name in OUTPUT_SECTIONS:
        value = full[name]
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in NOT_OUTPUT_KEYS.get(name, ())}
        picked[name] = value
    return hashlib.sha256(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_same_settings(ledger: Ledger, cfg: PipelineConfig) -> None:
    fingerprint = output_fingerprint(cfg)
    known = ledger.get_meta("output_fingerprint")
    if known is None:
        ledger.set_meta("output_fingerprint", fingerprint)
    elif known != fingerprint:
        raise JobError(f"{cfg.output.dir} holds shards made with other settings (sections "
                       f"{', '.join(OUTPUT_SECTIONS)}: fingerprint {known}, now {fingerprint}); resuming would mix "
                       "them: use a new output.dir or the settings of the first run", code=2)


def run_job(cfg: PipelineConfig, *, retry_failed: bool = False, use_ray: bool = True,
            progress: bool | None = None) -> dict:
    """Run (or resume) the job into cfg.output.dir; returns the summary (also written to summary.json)."""
    started = time.time()
    out_dir = Path(cfg.output.dir)
    shards_dir = out_dir / cfg.shards.subdir
    with _exclusive(out_dir):
        shutil.rmtree(out_dir / ".reorder", ignore_errors=True)  # a crashed run's early arrivals: redone
        removed = clean_incomplete(shards_dir)
        ledger = Ledger(out_dir / "ledger.sqlite")
        try:
            reconciled = ledger.reconcile(read_stats(shards_dir))
            _check_same_settings(ledger, cfg)
            check_models(cfg)
            inputs = Inputs(cfg)
            finished = ledger.finished_ids(retry_failed=retry_failed)
            todo = inputs.scan(finished)
            writer = ShardWriter(shards_dir, next_index=ledger.next_shard_index())
            committer = Committer(cfg, ledger, writer)
            show = cfg.ray.progress_bar if progress is None else progress
            _process(cfg, inputs.work(finished, ledger), committer, todo, use_ray, show)
            committer.commit()  # the last, partial shard
            shutil.rmtree(out_dir / ".reorder", ignore_errors=True)
            counts = ledger.counts()
        finally:
            ledger.close()
    wall = time.time() - started
    this_run = dict(committer.counts, wall_s=round(wall, 3), retry_failed=retry_failed,
                    removed_incomplete=removed, ledger_reconciled=reconciled, todo=todo)
    summary = build_summary(counts, inputs=inputs.total, duplicates=inputs.duplicates,
                            manifest_errors=inputs.errors, this_run=this_run,
                            frames_per_sample=cfg.segment.frames * cfg.segment.frames_per_bin,
                            extra={"output_dir": str(out_dir), "manifest": cfg.input.manifest,
                                   "ray": {"used": use_ray}, "config": to_dict(cfg)})
    write_summary(out_dir, summary)
    return summary


def _process(cfg: PipelineConfig, work: Iterator[VideoWork], committer: Committer, todo: int,
             use_ray: bool, show: bool) -> None:
    from tqdm import tqdm

    local_stages: dict = {}
    # Nothing left to do (a rerun of a finished job): no Ray to start; malformed rows are still recorded.
    session = ray_session(cfg, show_stages=show and sys.stderr.isatty()) if use_ray and todo else contextlib.nullcontext()
    with session:  # Ray starts first: the bar's rate counts only the work
        bar = tqdm(total=todo, unit="video", disable=not show, dynamic_ncols=True, file=sys.stderr)
        started = time.time()
        try:
            for chunk in chunks(work, cfg.ray.chunk_rows):
                in_order = InOrder([it.order for it in chunk], Path(cfg.output.dir) / ".reorder",
                                   cfg.ray.reorder_memory_bytes)
                stream = _stream_ray(chunk, cfg) if use_ray else _stream_local(chunk, cfg, local_stages)
                for arrived in stream:
                    for item in in_order.push(arrived):
                        committer.add(item)
                        bar.update(1)
                        elapsed = max(time.time() - started, 1e-9)
                        bar.set_postfix(samples=committer.counts["samples"], failed=committer.counts["failed"],
                                        vps=f"{committer.counts['processed'] / elapsed:.2f}")
                in_order.check_complete()
        finally:
            bar.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline run",
        description="Run (or resume) the data job: manifest -> fetch -> probe -> transcript -> segment -> "
                    "decode -> WebDataset shards in output.dir, with a ledger and summary.json. Rerunning the "
                    "same command after a crash does only what is missing.")
    add_config_args(parser)
    parser.add_argument("--retry-failed", action="store_true",
                        help="also redo the videos the ledger records as failed")
    parser.add_argument("--no-ray", action="store_true",
                        help="run the stages in this process instead of Ray Data (debugging)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    cfg = load_from_args(PipelineConfig, args, job="pipeline")
    try:
        summary = run_job(cfg, retry_failed=args.retry_failed, use_ray=not args.no_ray,
                          progress=False if args.no_progress else None)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # the job itself broke (Ray, disk full, a bug outside the per-video stages)
        log.exception("pipeline job failed")
        print(f"error: the pipeline job failed: {type(exc).__name__}: {exc} (rerun the same command to resume)",
              file=sys.stderr)
        return 1
    print(format_table(summary))
    print(f"summary: {Path(cfg.output.dir) / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
