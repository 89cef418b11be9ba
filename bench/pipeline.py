"""Benchmark of the data job (run: `.venv/bin/python bench/pipeline.py`).

1. Throughput: the whole job (`pipeline.run.run_job` on Ray Data, Ray already started) on the demo
   corpus: videos/s and frames/s; baseline: the same frames (times and sizes read back from the shards'
   json) decoded by bare ffmpeg commands, one per sample (`-ss` span seek, `select` of those frames,
   scale, mjpeg to a pipe), run with the job's decode parallelism, in the same run. Prints the ratio
   (DESIGN.md target: >= 0.8x).
2. Driver: a manifest of `--driver-rows` rows (default 20,000) whose files do not exist (every row fails at
   fetch, so the workers do almost nothing and the driver's own cost shows): rows/s through the whole
   job and the driver process's CPU seconds per row; baseline: reading and de-duplicating the same
   manifest alone (the least any driver must do), in the same run. Also the bytes that crossed the
   driver in part 1 (task rows out, piece stats in) against the shard bytes the workers wrote.
3. `--compare-with REV`: the whole job as a command (`python -m pipeline run`, its own local Ray) at this
   checkout and at git revision REV (a worktree under .cache/bench; e.g. the last commit before the workers
   wrote the shards), alternately, `--repeats` times each, on the same manifest: videos/s and the ratio.
4. Memory: peak RSS of one decode (the ffmpeg child and the Python worker) for a 1-minute and a 20-minute
   1280x720 input (generated with lavfi, cached under .cache/bench): a TVTS span in the middle, and 16
   frames over the whole video (`seek` mode). Streaming decode: the 20-minute input must not cost more.
"""
from __future__ import annotations

import os
import sys

# `python bench/NAME.py` puts bench/ first on sys.path, where pipeline.py and training.py would shadow the
# installed packages of those names: drop it (the project itself is installed, see pyproject.toml).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import concurrent.futures
import json
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from common.config import load_config
from common.paths import CACHE_DIR, DATA_DIR
from pipeline.config import PipelineConfig

BENCH = CACHE_DIR / "bench"


def demo_manifest(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    manifest = DATA_DIR / "demo" / "manifest.jsonl"
    if not manifest.exists():
        made = subprocess.run([sys.executable, "-m", "pipeline.demo", "--out", str(manifest.parent)], cwd=ROOT)
        if made.returncode != 0 or not manifest.exists():  # no demo generator: a generated captioned corpus
            from tests.pipeline.corpus import make_corpus

            return make_corpus(BENCH / "corpus", n=12, duration=48.0)
    return manifest


def run_job_timed(manifest: Path, num_cpus: int, extra: list[str]) -> tuple[list[dict], PipelineConfig]:
    """The job twice in one Ray session: cold (fresh workers import everything) and warm (workers reused)."""
    import ray

    from pipeline.run import check_models, run_job

    summaries = []
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=400 * 1024**2)
    try:
        for run in ("cold", "warm"):
            out = BENCH / f"pipeline-run-{run}"
            shutil.rmtree(out, ignore_errors=True)
            cfg = load_config(PipelineConfig, ROOT / "configs" / "demo.yaml",
                              [f"input.manifest={manifest}", f"output.dir={out}", "ray.progress_bar=false",
                               f"ray.num_cpus={num_cpus}", *extra], job="pipeline")
            check_models(cfg)  # build/resolve the ASR model outside the timed part
            summaries.append(run_job(cfg, use_ray=True))
    finally:
        ray.shutdown()
    return summaries, cfg


def driver_cost(rows: int, num_cpus: int) -> dict:
    """The job on `rows` missing files (Ray started outside the timing) vs reading the manifest alone."""
    import resource

    import ray

    from pipeline.run import run_job
    from pipeline.sources.manifest import DedupeStats, dedupe_rows, read_manifest

    folder = BENCH / f"driver-{rows}"
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with open(manifest, "w") as handle:
            for i in range(rows):
                handle.write(json.dumps({"video_id": f"missing-{i:07d}", "url": str(folder / f"v{i}.mp4"),
                                         "captions": str(folder / f"v{i}.vtt")}) + "\n")
    started = time.perf_counter()
    read = sum(1 for _ in dedupe_rows(read_manifest(str(manifest)), DedupeStats()))
    read_s = time.perf_counter() - started
    out = BENCH / "driver-run"
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(PipelineConfig, ROOT / "configs" / "demo.yaml",
                      [f"input.manifest={manifest}", f"output.dir={out}", "ray.progress_bar=false",
                       f"ray.num_cpus={num_cpus}", "asr.enabled=false", "shards.input_rows=64"], job="pipeline")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=400 * 1024**2)
    try:
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        summary = run_job(cfg, use_ray=True)
        wall = time.perf_counter() - started
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        ray.shutdown()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"rows": rows, "read": read, "failed": summary["failed"], "wall_s": round(wall, 2),
            "rows_per_s": round(rows / wall, 1), "driver_cpu_s": round(cpu, 2),
            "driver_cpu_ms_per_row": round(1000 * cpu / rows, 3), "driver_rows_per_cpu_s": round(rows / cpu, 1),
            "read_only_s": round(read_s, 2), "read_only_rows_per_s": round(rows / read_s, 1),
            "peak_rss_mb": round(cpu1.ru_maxrss / 1024, 1), "tasks": summary["this_run"]["tasks"],
            "driver_bytes_in": summary["this_run"]["driver_bytes_in"],
            "driver_bytes_out": summary["this_run"]["driver_bytes_out"]}


def job_command(tree: Path, manifest: Path, out: Path, num_cpus: int, extra: list[str]) -> dict:
    """The job of the checkout at `tree` as a user runs it; returns its summary (wall from the outside)."""
    shutil.rmtree(out, ignore_errors=True)
    sets = [f"input.manifest={manifest.resolve()}", f"output.dir={out}", f"ray.num_cpus={num_cpus}", *extra]
    env = dict(os.environ, PYTHONPATH=str(tree))   # that checkout's packages first (this one is installed)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", str(tree / "configs" / "demo.yaml"),
                           *[a for x in sets for a in ("--set", x)], "--no-progress"], cwd=tree, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the job at {tree} failed: {done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": round(wall, 2), "videos": summary["this_run"]["processed"], "samples": summary["samples"],
            "videos_per_s": round(summary["this_run"]["processed"] / wall, 4)}


def compare_with(rev: str, manifest: Path, num_cpus: int, extra: list[str], repeats: int) -> dict:
    tree = BENCH / f"worktree-{rev}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True,
                       capture_output=True)
    runs: dict[str, list[dict]] = {"this": [], rev: []}
    for _ in range(repeats):
        for name, where in (("this", ROOT), (rev, tree)):
            runs[name].append(job_command(where, manifest, BENCH / f"compare-{name}", num_cpus, extra))
    best = {name: max(r["videos_per_s"] for r in rows) for name, rows in runs.items()}
    return {"runs": runs, "best_videos_per_s": best, "ratio": round(best["this"] / best[rev], 3)}


def bare_ffmpeg_args(source: str, times: list[float], width: int, height: int, quality: int) -> list[str]:
    start = max(0.0, min(times) - 0.01)
    length = max(times) - start + 1.0
    expr = "+".join(f"gte(t,{t - start - 0.002:.6f})*not(gte(prev_pts*TB,{t - start - 0.002:.6f}))"
                    for t in sorted(set(times)))
    return ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-ss", f"{start:.6f}", "-t", f"{length:.6f}",
            "-i", source, "-an", "-sn", "-vf", f"select='{expr}',scale={width}:{height}", "-fps_mode", "passthrough",
            "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", str(quality), "-"]


def baseline(out_dir: Path, workers: int) -> dict:
    import webdataset as wds

    jobs = []
    for tar in sorted((out_dir / "shards").glob("shard-*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            meta = json.loads(sample["json"])
            frames = meta["frames"]
            jobs.append(bare_ffmpeg_args(str(meta["source"]), frames["times"], frames["width"], frames["height"], 3))
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        sizes = list(pool.map(lambda a: len(subprocess.run(a, capture_output=True, check=True, timeout=600).stdout), jobs))
    wall = time.perf_counter() - started
    frames = 16 * len(jobs)
    return {"samples": len(jobs), "frames": frames, "wall_s": round(wall, 3), "frames_per_s": round(frames / wall, 2),
            "bytes": sum(sizes)}


def make_720p(minutes: int) -> Path:
    BENCH.mkdir(parents=True, exist_ok=True)
    one = BENCH / "720p_1min.mp4"
    if not one.exists():
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=1280x720:rate=30:duration=60", "-f", "lavfi", "-i", "sine=duration=60",
                        "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p", "-c:a", "aac",
                        "-shortest", str(one)], check=True, timeout=1800)
    if minutes == 1:
        return one
    path = BENCH / f"720p_{minutes}min.mp4"
    if not path.exists():  # the 1-minute file looped, stream copy: same content, `minutes` long
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", str(minutes - 1), "-i", str(one),
                        "-c", "copy", str(path)], check=True, timeout=1800)
    return path


MEMORY_PROBE = r"""
import json, resource, sys
from pipeline.media.probe import probe
from pipeline.media.decode import DecodeConfig, decode_frames
path, mode = sys.argv[1], sys.argv[2]
info = probe(path)
if mode == "span":   # one TVTS span (19 s, 16 bins) in the middle of the video
    start = info.duration / 2
    times = [start + (i + 0.5) * 19.0 / 16 for i in range(16)]
else:                # 16 frames over the whole video
    times = [(i + 0.5) * info.duration / 16 for i in range(16)]
got = decode_frames(path, info, times, DecodeConfig(mode=mode))
print(json.dumps({"frames": len(got.jpegs), "worker_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "ffmpeg_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def memory() -> dict:
    out = {}
    for minutes in (1, 20):
        path = make_720p(minutes)
        for mode in ("span", "seek"):
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path), mode], cwd=ROOT, check=True,
                                    capture_output=True, text=True)
            row = json.loads(result.stdout.strip().splitlines()[-1])
            row["seconds"] = round(time.perf_counter() - started, 2)
            out[f"{minutes}min_{mode}"] = row
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", help="manifest to run (default: the demo corpus)")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--no-asr", action="store_true", help="skip videos without captions instead of ASR")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-driver", action="store_true")
    parser.add_argument("--driver-rows", default="20000",
                        help="rows of the driver part; a comma list (e.g. 10000,100000,1000000) runs each size in "
                             "a fresh process, for its own peak RSS")
    parser.add_argument("--compare-with", metavar="REV", help="also time the job at this git revision (see 3.)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    report: dict = {}
    if not args.skip_throughput:
        manifest = demo_manifest(args.manifest)
        extra = ["asr.enabled=false"] if args.no_asr else []
        summaries, cfg = run_job_timed(manifest, args.num_cpus, extra)
        runs = {}
        for name, summary in zip(("cold", "warm"), summaries):
            wall = summary["seconds"]["wall"]
            frames = summary["this_run"]["samples"] * cfg.segment.frames * cfg.segment.frames_per_bin
            runs[name] = {"videos": summary["this_run"]["processed"], "samples": summary["this_run"]["samples"],
                          "frames": frames, "wall_s": wall,
                          "videos_per_s": round(summary["this_run"]["processed"] / wall, 3),
                          "frames_per_s": round(frames / wall, 2), "stage_seconds": summary["seconds"],
                          "written": summary["written"], "skipped": summary["skipped"], "failed": summary["failed"],
                          "driver_bytes_in": summary["this_run"]["driver_bytes_in"],
                          "driver_bytes_out": summary["this_run"]["driver_bytes_out"],
                          "shard_bytes_written": summary["this_run"]["bytes_written"]}
        base = baseline(Path(cfg.output.dir), cfg.ray.decode_concurrency)
        report["throughput"] = {"job": runs, "bare_ffmpeg": base,
                                "ratio_warm": round(runs["warm"]["frames_per_s"] / base["frames_per_s"], 3),
                                "ratio_cold": round(runs["cold"]["frames_per_s"] / base["frames_per_s"], 3)}
        for name, job in runs.items():
            print(f"job ({name}):  {job['videos']} videos, {job['samples']} samples, {job['frames']} frames in "
                  f"{job['wall_s']:.1f} s: {job['videos_per_s']} videos/s, {job['frames_per_s']} frames/s "
                  f"(stage seconds {job['stage_seconds']})")
        print(f"bare ffmpeg: {base['frames']} frames in {base['wall_s']:.1f} s: {base['frames_per_s']} frames/s "
              f"({cfg.ray.decode_concurrency} processes at a time)")
        print(f"ratio (job / bare ffmpeg, frames/s): warm {report['throughput']['ratio_warm']}x, "
              f"cold {report['throughput']['ratio_cold']}x  (target >= 0.8x)")
        warm = runs["warm"]
        print(f"bytes across the driver (warm run): {warm['driver_bytes_out']:,} out (task rows), "
              f"{warm['driver_bytes_in']:,} in (piece stats); the workers wrote {warm['shard_bytes_written']:,} "
              f"bytes of shards ({warm['driver_bytes_in'] / max(warm['shard_bytes_written'], 1):.4%} of that came "
              "back, and none of it is sample data)")
    if not args.skip_driver:
        import multiprocessing

        sizes = [int(n) for n in args.driver_rows.split(",")]
        report["driver"] = []
        for rows in sizes:
            with multiprocessing.get_context("spawn").Pool(1) as pool:  # a fresh process: its own peak RSS
                d = pool.apply(driver_cost, (rows, args.num_cpus))
            report["driver"].append(d)
            print(f"driver: {d['rows']} missing-file rows ({d['tasks']} input shards) in {d['wall_s']} s: "
                  f"{d['rows_per_s']} rows/s through the job; driver CPU {d['driver_cpu_s']} s = "
                  f"{d['driver_cpu_ms_per_row']} ms/row ({d['driver_rows_per_cpu_s']} rows per driver CPU-second, "
                  f"target >= 1,000), peak RSS {d['peak_rss_mb']} MB, summary failed={d['failed']}")
            print(f"baseline: reading + de-duplicating the manifest alone: {d['read_only_rows_per_s']} rows/s; "
                  f"ratio (job rows/s / read-only rows/s): {d['rows_per_s'] / d['read_only_rows_per_s']:.3f}x")
        if len(sizes) > 1:
            first, last = report["driver"][0], report["driver"][-1]
            print(f"driver peak RSS from {first['rows']} to {last['rows']} rows: {first['peak_rss_mb']} -> "
                  f"{last['peak_rss_mb']} MB ({last['peak_rss_mb'] / first['peak_rss_mb']:.2f}x for "
                  f"{last['rows'] / first['rows']:.0f}x the rows)")
    if args.compare_with:
        extra = ["asr.enabled=false"] if args.no_asr else []
        c = report["compare"] = compare_with(args.compare_with, demo_manifest(args.manifest), args.num_cpus, extra,
                                             args.repeats)
        for name, rows in c["runs"].items():
            print(f"job at {name}: " + ", ".join(f"{r['videos']} videos in {r['wall_s']} s ({r['videos_per_s']}/s)"
                                                 for r in rows))
        print(f"ratio (this checkout / {args.compare_with}, best videos/s of each): {c['ratio']}x")
    if not args.skip_memory:
        report["memory"] = memory()
        for name, row in report["memory"].items():
            print(f"decode {name:>12}: ffmpeg peak {row['ffmpeg_kb'] / 1024:7.1f} MiB, worker peak "
                  f"{row['worker_kb'] / 1024:7.1f} MiB, {row['seconds']} s")
        mem = report["memory"]
        print(f"peak ffmpeg RSS 20-min / 1-min: span {mem['20min_span']['ffmpeg_kb'] / mem['1min_span']['ffmpeg_kb']:.2f}x, "
              f"seek {mem['20min_seek']['ffmpeg_kb'] / mem['1min_seek']['ffmpeg_kb']:.2f}x")
    BENCH.mkdir(parents=True, exist_ok=True)
    (BENCH / "pipeline.json").write_text(json.dumps(report, indent=2))
    print(f"report: {BENCH / 'pipeline.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
