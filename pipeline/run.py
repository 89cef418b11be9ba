"""The data job: `python -m pipeline run --config FILE [--set key=value ...] [--retry-failed]`.

The driver reads the manifest and cuts its rows into input shards of `shards.input_rows` rows
(pipeline/driver.py); Ray Data streams one row per input shard through the stages (pipeline/stages.py:
fetch -> probe -> transcript -> [asr actors] -> segment -> decode -> [embed actors] -> write), one
`map_batches` per stage with its resources from the `ray` config section. The last stage
(pipeline/write.py) runs on the workers and writes the shard's piece straight to `output.dir` (a local
folder or any fsspec URL: s3://, gs://, ...); only its stats (outcomes, counts) come back, and the
driver commits them to the ledger (pipeline/ledger.py), one transaction per piece. No sample byte
crosses the driver. See ARCHITECTURE.md, "Pipeline: resume guarantee".

Why input shards: a piece's bytes are a pure function of its rows and the settings, whichever worker
or node made it and however often it was retried; a rerun after any crash (driver, worker, node)
skips the done pieces (their stats file, written last, is the commit) and makes the others again.

Where state lives: shards/ and summary.json in output.dir; the ledger (SQLite) and the run lock in
output.dir when it is local, else in `output.state_dir` (default ~/.cache/tvts/state/<url>): it is
rebuilt from the pieces' stats files when missing.

Ray: with `ray.address` unset and no RAY_ADDRESS in the environment the job starts a private local
Ray (127.0.0.1, `ray.num_cpus` CPUs) and stops it at the end; under `ray job submit` (RAY_ADDRESS set)
or with `ray.address` it joins that cluster. `--no-ray` runs the same stages in this process.

Exit codes: 0 when the job ran (inputs may have failed: that is counted and reported), 1 when the job
itself broke, 2 for a bad config, an unreadable manifest, an unusable output location or an output
folder in use by another run.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import pickle
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from common import storage
from common.cli import JobError, one_line
from common.config import add_config_args, load_from_args
from common.ray_env import prepare_ray
from pipeline import metrics
from pipeline.config import OUTPUT_SECTIONS, PipelineConfig, asr_enabled, output_fingerprint, to_dict
from pipeline.driver import Inputs, Plan, Recorder, plan_tasks, task_chunks
from pipeline.errors import job_fault_in
from pipeline.ledger import Ledger
from pipeline.samples.shards import clean_incomplete, done_pieces, read_stats
from pipeline.stages import (
    AsrStage,
    DecodeStage,
    EmbedStage,
    FetchStage,
    ProbeStage,
    SegmentStage,
    ShardTask,
    TranscriptStage,
)
from pipeline.summary import build_summary, format_table, write_summary
from pipeline.write import WriteStage

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


def _unpack(batch: dict) -> list[ShardTask]:
    return [pickle.loads(blob) for blob in batch["task"]]


def _pack(tasks: list[ShardTask]) -> dict:
    import numpy as np

    blobs = np.empty(len(tasks), dtype=object)
    blobs[:] = [pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL) for task in tasks]
    return {"shard": np.array([t.input_shard for t in tasks], dtype=np.int64), "task": blobs}


def _run_on_tasks(stage: Any, tasks: list[ShardTask]) -> list[ShardTask]:
    for task in tasks:
        task.items = stage(task.items)
    return tasks


def apply_stage(batch: dict, stage: str, cfg: PipelineConfig) -> dict:
    """A task-based Ray Data stage: build the stage (cheap) and run it on each input shard of the batch."""
    return _pack(_run_on_tasks(STAGES[stage](cfg), _unpack(batch)))


def apply_write(batch: dict, cfg: PipelineConfig) -> dict:
    """The write stage on a worker: pieces to output.dir; only their stats (JSON) go on to the driver."""
    import numpy as np
    import ray

    writer = WriteStage(cfg)
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    out = []
    for task in _unpack(batch):
        stats = writer(task)
        metrics.record_piece(task, stats)
        out.append(json.dumps(dict(stats, node=node), sort_keys=True))  # which node wrote it: the summary's
    stats_json = np.empty(len(out), dtype=object)
    stats_json[:] = out
    return {"stats": stats_json}


class ActorStage:
    """An actor-based Ray Data stage: the stage (a model) is built once per actor."""

    def __init__(self, stage: str, cfg: PipelineConfig):
        self.stage = STAGES[stage](cfg)

    def __call__(self, batch: dict) -> dict:
        return _pack(_run_on_tasks(self.stage, _unpack(batch)))


# Ray Data names an operator (its progress bar, its metrics, its log lines) after the function or class it
# runs: one per stage, so a user reads "MapBatches(fetch)->MapBatches(probe)" instead of "apply_stage".
def named_task_stage(stage: str, cfg: PipelineConfig):
    def run(batch: dict) -> dict:
        return apply_write(batch, cfg) if stage == "write" else apply_stage(batch, stage, cfg)

    run.__name__ = run.__qualname__ = stage
    return run


def named_actor_stage(stage: str) -> type:
    return type(stage, (ActorStage,), {"__doc__": f"The {stage} stage, built once per actor."})


def _stream_local(tasks: list[ShardTask], cfg: PipelineConfig, stages: dict) -> Iterator[dict]:
    for task in tasks:
        for name in _stage_names(cfg):
            if name not in stages:
                stages[name] = STAGES[name](cfg)
            task.items = stages[name](task.items)
        if "write" not in stages:
            stages["write"] = WriteStage(cfg)
        yield stages["write"](task)


def might_need_asr(task: ShardTask, cfg: PipelineConfig) -> bool:
    """Whether a video of the task may end up with ASR words: no captions, or captions that may fail to
    fetch and fall back to ASR (fetch.captions_required false)."""
    return asr_enabled(cfg) and any(not item.row.get("captions") or not cfg.fetch.captions_required
                                    for item in task.items)


def _stream_ray(tasks: list[ShardTask], cfg: PipelineConfig, traffic: dict) -> Iterator[dict]:
    import ray

    names = _stage_names(cfg)
    # Only input shards with a video that may need ASR go through the ASR actors: the others would wait
    # in the actors' queues behind transcriptions they do not need (idle decode workers meanwhile).
    groups: list[list[ShardTask]] = [[], []]
    for task in tasks:
        groups[0 if might_need_asr(task, cfg) else 1].append(task)
    datasets = []
    for group, stages in zip(groups, (names, [n for n in names if n != "asr"])):
        if group:
            rows = [{"shard": t.input_shard, "task": pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)}
                    for t in group]
            traffic["driver_bytes_out"] += sum(len(row["task"]) for row in rows)
            datasets.append(_chain(ray.data.from_items(rows, override_num_blocks=len(rows)), stages, cfg))
    ds = datasets[0] if len(datasets) == 1 else datasets[0].union(*datasets[1:])
    for row in ds.iter_rows():
        traffic["driver_bytes_in"] += len(row["stats"])
        yield json.loads(row["stats"])


def _chain(ds, names: list[str], cfg: PipelineConfig):
    """`ds` through the stages `names`, then write."""
    import ray

    r = cfg.ray
    # Ray Data's defaults already retry a task whose worker (or node) died and restart a dead actor: a
    # killed worker costs time, never a video, and the retried write makes the same bytes. Stage code
    # catches every per-video error, so a retried task is never a deterministic Python failure.
    for name in names + ["write"]:
        if name in ("asr", "embed"):
            asr = name == "asr"
            ds = ds.map_batches(
                named_actor_stage(name), fn_constructor_kwargs={"stage": name, "cfg": cfg}, batch_format="numpy",
                batch_size=1, compute=ray.data.ActorPoolStrategy(size=r.asr_actors if asr else r.embed_actors),
                num_cpus=r.asr_num_cpus if asr else r.embed_num_cpus,
                num_gpus=(r.asr_num_gpus if asr else r.embed_num_gpus) or None)
        else:
            # write takes decode's resources: Ray Data then fuses segment -> decode -> write into one task
            # (without embed between them), so the frames go from ffmpeg to the shard without an object-store hop
            heavy = name in ("segment", "decode", "write")
            ds = ds.map_batches(
                named_task_stage(name, cfg), batch_format="numpy", batch_size=1,
                compute=ray.data.TaskPoolStrategy(size=r.decode_concurrency if heavy else r.prepare_concurrency),
                num_cpus=r.decode_num_cpus if heavy else r.prepare_num_cpus)
    return ds


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
    # Pieces are committed in whatever order they finish (each is whole on its own): no head-of-line blocking.
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
    with warnings.catch_warnings():
        # A chunk with fewer input shards than a stage's task pool is fine (the last chunk, a retry run).
        warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks", category=UserWarning)
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
def _exclusive(state_dir: Path, output: str) -> Iterator[None]:
    """One run per output at a time (the lock dies with the process, also on kill -9). For an object-store
    output the lock is in the local state folder: it guards against a second run from this machine only."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise JobError(f"another run is writing to {storage.redact(output)} (lock {state_dir / '.lock'}); "
                           "wait for it or use another output.dir", code=2) from None
        yield


def state_dir(cfg: PipelineConfig) -> Path:
    """The local folder of the run's ledger and lock (see the module docstring)."""
    if cfg.output.state_dir:
        return Path(cfg.output.state_dir)
    if storage.is_local(cfg.output.dir):
        return storage.local_path(cfg.output.dir)
    return storage.local_state_dir(cfg.output.dir)


def check_locations(cfg: PipelineConfig) -> None:
    """Before any work: the manifest and output.dir are usable locations (protocol, package, bucket)."""
    try:
        storage.check_location(cfg.input.manifest, "input.manifest")
        storage.check_location(cfg.output.dir, "output.dir", writable=True)
    except storage.StorageError as exc:
        raise JobError(str(exc), code=2) from None


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


def _check_same_settings(ledger: Ledger, cfg: PipelineConfig, pieces: dict[str, dict]) -> None:
    fingerprint = output_fingerprint(cfg)
    known = ledger.get_meta("output_fingerprint")
    if known is None and pieces:  # a new ledger beside old pieces: they say what they were made with
        known = next(iter(pieces.values())).get("fingerprint")
    if known is None or known == fingerprint:
        ledger.set_meta("output_fingerprint", fingerprint)
        return
    raise JobError(f"{storage.redact(cfg.output.dir)} holds shards made with other settings (sections "
                   f"{', '.join(OUTPUT_SECTIONS)}: fingerprint {known}, now {fingerprint}); resuming would mix "
                   "them: use a new output.dir or the settings of the first run", code=2)


def run_job(cfg: PipelineConfig, *, retry_failed: bool = False, use_ray: bool = True,
            progress: bool | None = None) -> dict:
    """Run (or resume) the job into cfg.output.dir; returns the summary (also written to summary.json)."""
    started = time.time()
    check_locations(cfg)
    shards_url = storage.join(cfg.output.dir, cfg.shards.subdir)
    state = state_dir(cfg)
    with _exclusive(state, cfg.output.dir):
        removed = clean_incomplete(shards_url)
        done = done_pieces(shards_url)
        ledger = Ledger(state / "ledger.sqlite")
        try:
            reconciled = ledger.reconcile(done, lambda names: read_stats(shards_url, names))
            first = read_stats(shards_url, done[:1]) if done and not ledger.get_meta("output_fingerprint") else {}
            _check_same_settings(ledger, cfg, first)
            check_models(cfg)
            generation = _retry_generation(ledger, retry_failed)
            inputs = Inputs(cfg)
            counted = Plan()
            for _ in plan_tasks(inputs, ledger, done, retry_generation=generation, plan=counted):
                pass  # first pass: how much there is to do (the progress bar's total)
            errors: list[dict] = []

            def drop_stale(index: int, names: list[str]) -> None:
                for name in names:
                    for suffix in ("_stats.json", ".tar", ".parquet"):   # the commit first
                        storage.remove(storage.join(shards_url, name + suffix))
                ledger.forget_shard(index)

            tasks = plan_tasks(inputs, ledger, done, retry_generation=generation, errors=errors,
                               drop_stale=drop_stale)
            recorder = Recorder(ledger)
            show = cfg.ray.progress_bar if progress is None else progress
            traffic = _process(cfg, tasks, errors, ledger, recorder, counted, use_ray, show)
            ledger.record_failed_rows(errors)
            ledger.set_meta("retry_generation", None)   # the retry generation (if any) is complete
            counts = ledger.counts()
        finally:
            ledger.close()
    wall = time.time() - started
    this_run = dict(recorder.counts, wall_s=round(wall, 3), retry_failed=retry_failed,
                    removed_incomplete=removed, ledger_reconciled=reconciled, todo=counted.rows,
                    tasks=counted.tasks, regrouped_pieces=counted.stale_pieces, changed=counted.changed,
                    pieces_by_node=recorder.pieces_by_node, **traffic)
    summary = build_summary(counts, inputs=inputs.total, duplicates=inputs.duplicates,
                            manifest_errors=inputs.errors, this_run=this_run,
                            frames_per_sample=cfg.segment.frames * cfg.segment.frames_per_bin,
                            extra={"output_dir": storage.redact(cfg.output.dir),
                                   "manifest": storage.redact(cfg.input.manifest),
                                   "ray": {"used": use_ray}, "config": _redacted_config(cfg)})
    write_summary(cfg.output.dir, summary)
    return summary


def _redacted_config(cfg: PipelineConfig) -> dict:
    config = to_dict(cfg)
    config["input"]["manifest"] = storage.redact(cfg.input.manifest)
    config["output"]["dir"] = storage.redact(cfg.output.dir)
    return config


def _retry_generation(ledger: Ledger, retry_failed: bool) -> int | None:
    """The retry generation this run does: the one a crashed retry run left, else a new one."""
    if not retry_failed:
        return None
    known = ledger.get_meta("retry_generation")
    if known is None:
        known = str(1 + max(ledger.latest_attempts().values(), default=0))
        ledger.set_meta("retry_generation", known)
    return int(known)


def _process(cfg: PipelineConfig, tasks: Iterator[ShardTask], errors: list[dict], ledger: Ledger,
             recorder: Recorder, counted: Plan, use_ray: bool, show: bool) -> dict:
    """Run the tasks chunk by chunk, committing each finished piece; returns the driver's traffic in bytes."""
    from tqdm import tqdm

    traffic = {"driver_bytes_out": 0, "driver_bytes_in": 0}
    local_stages: dict = {}
    # Nothing left to do (a rerun of a finished job): no Ray to start; malformed rows are still recorded.
    session = (ray_session(cfg, show_stages=show and sys.stderr.isatty()) if use_ray and counted.tasks
               else contextlib.nullcontext())
    with session:  # Ray starts first: the bar's rate counts only the work
        bar = tqdm(total=counted.rows, unit="video", disable=not show, dynamic_ncols=True, file=sys.stderr)
        started = time.time()
        try:
            for chunk in task_chunks(tasks, cfg.ray.chunk_rows):
                if len(errors) >= 1000:   # malformed rows, batched
                    ledger.record_failed_rows(errors)
                    errors.clear()
                stream = _stream_ray(chunk, cfg, traffic) if use_ray else _stream_local(chunk, cfg, local_stages)
                expected = {(t.input_shard, t.attempt) for t in chunk}
                for stats in stream:
                    expected.discard((stats["input_shard"], stats["attempt"]))
                    bar.update(recorder.add(stats))
                    c = recorder.counts
                    bar.set_postfix(samples=c["samples"], failed=c["failed"],
                                    vps=f"{c['processed'] / max(time.time() - started, 1e-9):.2f}")
                if expected:
                    missing = min(expected)
                    raise JobError(f"the stages returned no result for input shard {missing[0]} (attempt "
                                   f"{missing[1]}); rerun to resume")
        finally:
            bar.close()
    return traffic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline run",
        description="Run (or resume) the data job: manifest -> fetch -> probe -> transcript -> segment -> "
                    "decode -> WebDataset shards written by the workers to output.dir (a folder or an fsspec "
                    "URL such as s3://bucket/run), with a ledger and summary.json. Rerunning the same command "
                    "after a crash does only what is missing.")
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
        fault = job_fault_in(exc)
        if fault is not None:
            print(f"error: the pipeline job stopped: {one_line(fault)} (fix it, then rerun the same command to "
                  "resume)", file=sys.stderr)
            return 1
        log.exception("pipeline job failed")
        print(f"error: the pipeline job failed: {type(exc).__name__}: {one_line(exc)} (rerun the same command to "
              "resume)", file=sys.stderr)
        return 1
    print(format_table(summary))
    print(f"summary: {storage.redact(storage.join(cfg.output.dir, 'summary.json'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
