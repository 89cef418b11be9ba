"""Benchmark of the data job (run: `.venv/bin/python bench/pipeline.py`).

Wall-clock numbers are only as good as the machine is quiet: on a shared 2-core machine compare the
ratios of one run, never numbers of two runs. The decode parts also print CPU seconds (this process and
its children), which a busy machine disturbs much less.

1. Throughput: the whole job (`pipeline.run.run_job` on Ray Data, Ray already started) on the demo
   corpus (or `--manifest`, or `--corpus-720p N`: N generated 60 s 1280x720 captioned videos):
   videos/s and frames/s; baselines, on the same frames (times and sizes read back from the shards'
   json), with the job's decode parallelism, in the same run: bare ffmpeg commands, one per sample
   (`-ss` span seek, `select` of those frames, scale, mjpeg to a pipe), and a bare PyAV seek loop (one
   container per video, a keyframe seek + decode to each frame, swscale, JPEG: the simplest in-process
   decode). Prints the ratio of the job to each (DESIGN.md target: >= 1.2x bare ffmpeg).
2. Driver: a manifest of `--driver-rows` rows (default 20,000) whose files do not exist (every row fails at
   fetch, so the workers do almost nothing and the driver's own cost shows): rows/s through the whole
   job and the driver process's CPU seconds per row; baseline: reading and de-duplicating the same
   manifest alone (the least any driver must do), in the same run. Also the bytes that crossed the
   driver in part 1 (task rows out, piece stats in) against the shard bytes the workers wrote.
3. `--compare-with REV`: the whole job as a command (`python -m pipeline run`, its own local Ray) at this
   checkout and at git revision REV (a worktree under .cache/bench; e.g. the last commit before the workers
   wrote the shards), alternately, `--repeats` times each, on the same manifest: videos/s and the ratio.
4. Decode: on a 60 s 1280x720 H.264 (testsrc2, GOP 2 s; generated, cached under .cache/bench), the same
   frames three ways: 16 frames over the whole video, one TVTS span, 8 overlapping spans (as the demo's
   4 spans per slot): `decode.backend: pyav` (one pass per video), `decode.backend: ffmpeg` (one command
   per sample), a bare PyAV seek loop, and one bare ffmpeg command with an `fps` filter (decodes all).
   CPU and wall seconds, and the ratio of the pyav backend to each.
5. JPEG: encoding the same RGB frames (455x256 from that video) with Pillow, simplejpeg and PyTurboJPEG
   (when its library loads): ms per frame, bytes. The PyAV decoder uses the fastest (simplejpeg).
6. Memory: peak RSS of one decode (the Python worker, and the ffmpeg child for the ffmpeg backend) for a
   1-minute and a 20-minute 1280x720 input: a TVTS span in the middle, 16 frames over the whole video,
   and (pyav) 16 spans spread over the whole video in one pass. Streaming decode: the 20-minute input
   must not cost more (issue goal: <= 1.3x).
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


def corpus_720p(n: int) -> Path:
    """`n` captioned 60 s 1280x720 videos (copies of the 720p test video, cached) and their manifest."""
    from tests.pipeline.corpus import make_vtt

    folder = BENCH / f"corpus-720p-{n}"
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            video = folder / f"v{i}.mp4"
            shutil.copyfile(make_720p(1), video)
            rows.append({"video_id": f"hd{i}", "url": str(video), "captions": str(make_vtt(folder / f"v{i}.en.vtt", 60.0))})
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
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


def shard_samples(out_dir: Path) -> list[dict]:
    """What the job wrote: per sample its source, frame times (caption clock) and frame size."""
    import webdataset as wds

    samples = []
    for tar in sorted((out_dir / "shards").glob("shard-*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            meta = json.loads(sample["json"])
            frames = meta["frames"]
            samples.append({"source": str(meta["source"]), "times": frames["times"], "width": frames["width"],
                            "height": frames["height"]})
    return samples


def _timed_pool(fn, jobs: list, workers: int, processes: bool) -> tuple[list, float, float]:
    """Results, wall seconds, CPU seconds (this process + its children) of `fn` over `jobs`."""
    import multiprocessing
    import resource

    def cpu() -> float:
        return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                   for f in ("ru_utime", "ru_stime"))

    c0, started = cpu(), time.perf_counter()
    if processes:  # PyAV in threads would share one interpreter; the job's workers are processes
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            out = pool.map(fn, jobs, chunksize=1)
    else:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            out = list(pool.map(fn, jobs))
    return out, time.perf_counter() - started, cpu() - c0


def _run_bare_ffmpeg(args: list[str]) -> int:
    return len(subprocess.run(args, capture_output=True, check=True, timeout=600).stdout)


def baseline(samples: list[dict], workers: int) -> dict:
    jobs = [bare_ffmpeg_args(s["source"], s["times"], s["width"], s["height"], 3) for s in samples]
    sizes, wall, cpu = _timed_pool(_run_bare_ffmpeg, jobs, workers, processes=False)
    frames = sum(len(s["times"]) for s in samples)
    return {"samples": len(jobs), "frames": frames, "wall_s": round(wall, 3), "cpu_s": round(cpu, 2),
            "frames_per_s": round(frames / wall, 2), "bytes": sum(sizes)}


def bare_pyav_video(job: tuple[str, list[list[float]], int, int]) -> int:
    """The simplest in-process decode (decode_probe.seek_loop): one container, for each time a keyframe
    seek and decoding to the first frame at or after it, swscale to the size, JPEG (simplejpeg). Returns
    the JPEG bytes made."""
    import importlib.util

    from pipeline.media.probe import probe

    source, samples, width, height = job
    spec = importlib.util.spec_from_file_location("bench_decode_probe", DECODE_SCRIPT)
    decode_probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decode_probe)
    zero = probe(source).clock_zero   # the shards' times are on the caption clock
    return decode_probe.seek_loop(source, zero, samples, (width, height), encode=True)


def baseline_pyav(samples: list[dict], workers: int) -> dict:
    by_video: dict[str, list[dict]] = {}
    for s in samples:
        by_video.setdefault(s["source"], []).append(s)
    jobs = [(src, [s["times"] for s in rows], rows[0]["width"], rows[0]["height"]) for src, rows in by_video.items()]
    sizes, wall, cpu = _timed_pool(bare_pyav_video, jobs, workers, processes=True)
    frames = sum(len(s["times"]) for s in samples)
    return {"samples": len(samples), "videos": len(jobs), "frames": frames, "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 2), "frames_per_s": round(frames / wall, 2), "bytes": sum(sizes)}


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


DECODE_SCRIPT = Path(__file__).resolve().parent / "decode_probe.py"


def run_decode_probe(path: Path, way: str, requests: list[list[float]], size=(455, 256)) -> dict:
    """One decode in a fresh process (its own peak RSS, nothing cached from an earlier one)."""
    result = subprocess.run([sys.executable, str(DECODE_SCRIPT), way, str(path), str(size[0]), str(size[1]),
                             json.dumps(requests)], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _span(start: float, length: float = 19.0) -> list[float]:
    return [round(start + (i + 0.5) * length / 16, 6) for i in range(16)]


def decode_speed(repeats: int) -> dict:
    """The same frames of the 60 s 720p video by each way; best CPU time of `repeats` runs."""
    path = make_720p(1)
    cases = {"16 over 60 s": [_span(0.0, 60.0)], "one 19 s span": [_span(20.0)],
             "8 overlapping spans": [_span(s) for s in (1, 5, 9, 13, 21, 25, 29, 33)]}
    out = {}
    for case, requests in cases.items():
        ways = ["pyav", "ffmpeg", "pyav_seek_loop"] + (["ffmpeg_fps_filter"] if case == "16 over 60 s" else [])
        rows = {}
        for way in ways:
            runs = [run_decode_probe(path, way, requests) for _ in range(repeats)]
            rows[way] = min(runs, key=lambda r: r["cpu_s"])
        for way, row in rows.items():
            row["pyav_cpu_speedup"] = round(row["cpu_s"] / rows["pyav"]["cpu_s"], 2)
            row["pyav_wall_speedup"] = round(row["wall_s"] / rows["pyav"]["wall_s"], 2)
        out[case] = rows
    return out


def jpeg_speed() -> dict:
    """ms per frame to encode the same 455x256 RGB frames (quality 90, 4:2:0) by each encoder found."""
    result = subprocess.run([sys.executable, str(DECODE_SCRIPT), "jpeg", str(make_720p(1))], cwd=ROOT, check=True,
                            capture_output=True, text=True)
    *notes, last = result.stdout.strip().splitlines()
    for note in notes:  # encoders that could not be measured
        print(note)
    return json.loads(last)


def memory() -> dict:
    out = {}
    for minutes in (1, 20):
        path = make_720p(minutes)
        length = minutes * 60.0
        cases = {"span": [_span(length / 2)], "whole": [_span(0.0, length)],
                 "16 spans": [_span(k * (length - 20.0) / 15) for k in range(16)]}
        for backend in ("pyav", "ffmpeg"):
            for case, requests in cases.items():
                if backend == "ffmpeg" and case == "16 spans":
                    continue  # 16 commands; each is one "span" run
                out[f"{minutes}min_{backend}_{case}"] = run_decode_probe(path, backend, requests)
    return out


def throughput(args) -> dict:
    manifest = corpus_720p(args.corpus_720p) if args.corpus_720p else demo_manifest(args.manifest)
    extra = (["asr.enabled=false"] if args.no_asr else []) + [f"decode.backend={args.backend}"]
    summaries, cfg = run_job_timed(manifest, args.num_cpus, extra)
    runs = {}
    for name, summary in zip(("cold", "warm"), summaries):
        wall, this = summary["seconds"]["wall"], summary["this_run"]
        frames = this["samples"] * cfg.segment.frames * cfg.segment.frames_per_bin
        runs[name] = {"videos": this["processed"], "samples": this["samples"], "frames": frames, "wall_s": wall,
                      "videos_per_s": round(this["processed"] / wall, 3), "frames_per_s": round(frames / wall, 2),
                      "stage_seconds": summary["seconds"], "written": summary["written"],
                      "skipped": summary["skipped"], "failed": summary["failed"],
                      "driver_bytes_in": this["driver_bytes_in"], "driver_bytes_out": this["driver_bytes_out"],
                      "shard_bytes_written": this["bytes_written"]}
    samples = shard_samples(Path(cfg.output.dir))
    workers = cfg.ray.decode_concurrency
    bases = {"bare ffmpeg": baseline(samples, workers), "bare PyAV seek loop": baseline_pyav(samples, workers)}
    for name, job in runs.items():
        print(f"job ({name}, decode.backend={args.backend}): {job['videos']} videos, {job['samples']} samples, "
              f"{job['frames']} frames in {job['wall_s']:.1f} s: {job['videos_per_s']} videos/s, "
              f"{job['frames_per_s']} frames/s (stage seconds {job['stage_seconds']})")
    ratios = {}
    for name, base in bases.items():
        print(f"{name}: {base['frames']} frames in {base['wall_s']:.1f} s (CPU {base['cpu_s']} s): "
              f"{base['frames_per_s']} frames/s ({workers} at a time)")
        ratios[name] = {run: round(runs[run]["frames_per_s"] / base["frames_per_s"], 3) for run in runs}
        print(f"ratio (job / {name}, frames/s): warm {ratios[name]['warm']}x, cold {ratios[name]['cold']}x"
              + ("  (DESIGN.md target >= 1.2x)" if name == "bare ffmpeg" else ""))
    warm = runs["warm"]
    print(f"bytes across the driver (warm run): {warm['driver_bytes_out']:,} out (task rows), "
          f"{warm['driver_bytes_in']:,} in (piece stats); the workers wrote {warm['shard_bytes_written']:,} "
          f"bytes of shards ({warm['driver_bytes_in'] / max(warm['shard_bytes_written'], 1):.4%} of that came "
          "back, and none of it is sample data)")
    return {"job": runs, "baselines": bases, "ratios": dict(ratios)}


def print_decode(rows: dict) -> None:
    for case, ways in rows.items():
        for way, r in ways.items():
            print(f"decode {case:>19} {way:>17}: {r['frames']:3d} frames, CPU {r['cpu_s']:6.2f} s, wall "
                  f"{r['wall_s']:6.2f} s; pyav backend faster by {r['pyav_cpu_speedup']}x CPU, "
                  f"{r['pyav_wall_speedup']}x wall")


def print_memory(mem: dict) -> None:
    for name, row in mem.items():
        print(f"decode memory {name:>20}: worker peak {row['worker_kb'] / 1024:7.1f} MiB, ffmpeg peak "
              f"{row['ffmpeg_kb'] / 1024:7.1f} MiB, CPU {row['cpu_s']} s")
    for key in sorted({k.split("_", 1)[1] for k in mem}):
        one, twenty = mem[f"1min_{key}"], mem[f"20min_{key}"]
        peak = [max(r["worker_kb"], r["ffmpeg_kb"]) for r in (one, twenty)]
        print(f"peak RSS 20-min / 1-min, {key}: {peak[1] / peak[0]:.2f}x (issue goal <= 1.3x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", help="manifest to run (default: the demo corpus)")
    parser.add_argument("--corpus-720p", type=int, default=0, metavar="N",
                        help="run part 1 on N generated 60 s 1280x720 captioned videos instead")
    parser.add_argument("--backend", default="pyav", choices=["pyav", "ffmpeg"], help="the job's decode.backend")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--no-asr", action="store_true", help="skip videos without captions instead of ASR")
    for part in ("throughput", "driver", "decode", "jpeg", "memory"):
        parser.add_argument(f"--skip-{part}", action="store_true")
    parser.add_argument("--driver-rows", default="20000",
                        help="rows of the driver part; a comma list (e.g. 10000,100000,1000000) runs each size in "
                             "a fresh process, for its own peak RSS")
    parser.add_argument("--compare-with", metavar="REV", help="also time the job at this git revision (see 3.)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    report: dict = {}
    if not args.skip_throughput:
        report["throughput"] = throughput(args)
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
    if not args.skip_decode:
        print_decode(report.setdefault("decode", decode_speed(args.repeats)))
    if not args.skip_jpeg:
        report["jpeg"] = jpeg_speed()
        base = report["jpeg"]["pillow"]["ms_per_frame"]
        for name, row in report["jpeg"].items():
            print(f"jpeg {name:>12}: {row['ms_per_frame']:.3f} ms/frame CPU ({base / row['ms_per_frame']:.2f}x "
                  f"Pillow), {row['bytes']} bytes/frame")
    if not args.skip_memory:
        print_memory(report.setdefault("memory", memory()))
    BENCH.mkdir(parents=True, exist_ok=True)
    (BENCH / "pipeline.json").write_text(json.dumps(report, indent=2))
    print(f"report: {BENCH / 'pipeline.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
