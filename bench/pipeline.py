"""Benchmark of the data job (run: `.venv/bin/python bench/pipeline.py`).

Wall-clock numbers are only as good as the machine is quiet: on a shared 2-core machine compare the
ratios of one run, never numbers of two runs. The decode parts also print CPU seconds (this process and
its children), which a busy machine disturbs much less.

1. Throughput: the whole job (`pipeline.run.run_job` on Ray Data, Ray already started) on the demo
   corpus (or `--manifest`, or `--corpus N`: N generated 60 s captioned videos of `--corpus-size`, default
   1280x720, with a real speech track; `--corpus-minutes` loops them): videos/s and frames/s, cold (fresh
   workers) and warm; then (`--asr-fraction`, default 0.33) the same videos with the captions taken off a
   third of them (every third row, or with `--asr-rows first` the first third: faster-whisper Whisper
   tiny.en, the demo config's ASR, transcribes those). Baselines, on the
   same frames (times and sizes read back from the shards' json), as many at a time as the job has cores,
   in the same run: bare ffmpeg commands, one per sample (`-ss` span seek, `select` of those frames,
   scale, mjpeg to a pipe), and a bare PyAV seek loop (one container per video, a keyframe seek + decode to
   each frame, swscale, JPEG: the simplest in-process decode); for the ASR run bare ffmpeg only, decoding
   frames only (no ASR pass: the issue's goal is >= 0.8x of bare ffmpeg frame decoding with the ASR
   included in the job). Prints the ratio of the job to each (DESIGN.md target: >= 1.2x bare ffmpeg) and
   each one's CPU utilisation: CPU seconds of the process tree (driver, Ray services, workers, ffmpeg
   children; bench/cpu_usage.py says how) / (wall x cores), with the machine's busy share and the load
   average over the same window (the machine is shared: compare within one run). `--set KEY=VALUE`
   overrides the job's config; `--compare-set K=V,K=V` runs the warm and the ASR run once more right after
   each with those overrides (e.g. the stage resources before a change), under the same load
   (`--compare-repeats N`: N of each, alternately, medians compared), and checks that they wrote the same
   shard bytes. Parts 4-6 live in bench/decode_parts.py, the inputs in
   bench/corpora.py.
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
import importlib.util
import json
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent


def _sibling(name: str):
    """bench/NAME.py as a module: bench/ is no package, and it is off sys.path (see above)."""
    if f"bench_{name}" not in sys.modules:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module   # before running it: dataclasses and pickle look it up there
        spec.loader.exec_module(module)
    return sys.modules[f"bench_{name}"]


from common.config import load_config
from pipeline.config import PipelineConfig

corpora, cpu_usage, decode_parts = _sibling("corpora"), _sibling("cpu_usage"), _sibling("decode_parts")
BENCH = corpora.BENCH


def job_cores(num_cpus: int) -> int:
    return min(num_cpus, os.cpu_count() or num_cpus)


def run_jobs(runs: list[tuple[str, Path, list[str]]], num_cpus: int,
             extra: list[str]) -> dict[str, tuple[dict, dict, PipelineConfig]]:
    """Each (name, manifest, its own overrides) through the job in one Ray session, in order (the first one
    starts the workers: "cold"); per run its summary, the CPU use of the process tree while it ran, and its
    config."""
    import ray

    from pipeline.run import check_models, run_job

    out: dict = {}
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=400 * 1024**2)
    try:
        for name, manifest, own in runs:
            folder = BENCH / f"pipeline-run-{name.replace(' ', '-')}"
            shutil.rmtree(folder, ignore_errors=True)
            cfg = load_config(PipelineConfig, ROOT / "configs" / "demo.yaml",
                              [f"input.manifest={manifest}", f"output.dir={folder}", "ray.progress_bar=false",
                               f"ray.num_cpus={num_cpus}", *extra, *own], job="pipeline")
            check_models(cfg)  # build/resolve the ASR model outside the timed part
            with cpu_usage.TreeCpu(job_cores(num_cpus)) as usage:
                summary = run_job(cfg, use_ray=True)
            out[name] = (summary, usage.result(), cfg)
    finally:
        ray.shutdown()
    return out


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
                            "height": frames["height"], "transcript": meta["transcript"]["source"]})
    return samples


def _timed_pool(fn, jobs: list, workers: int, processes: bool) -> tuple[list, dict]:
    """Results of `fn` over `jobs`, and the CPU use (bench/cpu_usage.py) of this process and its children
    meanwhile; utilisation over `workers` cores."""
    import multiprocessing

    with cpu_usage.TreeCpu(workers) as usage:
        if processes:  # PyAV in threads would share one interpreter; the job's workers are processes
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                out = pool.map(fn, jobs, chunksize=1)
        else:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                out = list(pool.map(fn, jobs))
    return out, usage.result()


def _run_bare_ffmpeg(args: list[str]) -> int:
    return len(subprocess.run(args, capture_output=True, check=True, timeout=600).stdout)


def baseline(samples: list[dict], workers: int) -> dict:
    jobs = [bare_ffmpeg_args(s["source"], s["times"], s["width"], s["height"], 3) for s in samples]
    sizes, usage = _timed_pool(_run_bare_ffmpeg, jobs, workers, processes=False)
    frames = sum(len(s["times"]) for s in samples)
    return {"samples": len(jobs), "frames": frames, "wall_s": usage["wall_s"], "cpu_s": usage["cpu_s"],
            "frames_per_s": round(frames / usage["wall_s"], 2), "bytes": sum(sizes), "cpu": usage}


def bare_pyav_video(job: tuple[str, list[list[float]], int, int]) -> int:
    """The simplest in-process decode (decode_probe.seek_loop): one container, for each time a keyframe
    seek and decoding to the first frame at or after it, swscale to the size, JPEG (simplejpeg). Returns
    the JPEG bytes made."""
    from pipeline.media.probe import probe

    source, samples, width, height = job
    zero = probe(source).clock_zero   # the shards' times are on the caption clock
    return _sibling("decode_probe").seek_loop(source, zero, samples, (width, height), encode=True)


def baseline_pyav(samples: list[dict], workers: int) -> dict:
    by_video: dict[str, list[dict]] = {}
    for s in samples:
        by_video.setdefault(s["source"], []).append(s)
    jobs = [(src, [s["times"] for s in rows], rows[0]["width"], rows[0]["height"]) for src, rows in by_video.items()]
    sizes, usage = _timed_pool(bare_pyav_video, jobs, workers, processes=True)
    frames = sum(len(s["times"]) for s in samples)
    return {"samples": len(samples), "videos": len(jobs), "frames": frames, "wall_s": usage["wall_s"],
            "cpu_s": usage["cpu_s"], "frames_per_s": round(frames / usage["wall_s"], 2), "bytes": sum(sizes),
            "cpu": usage}


def job_row(summary: dict, usage: dict, cfg: PipelineConfig) -> dict:
    wall, this = summary["seconds"]["wall"], summary["this_run"]
    frames = this["samples"] * cfg.segment.frames * cfg.segment.frames_per_bin
    return {"videos": this["processed"], "samples": this["samples"], "frames": frames, "wall_s": wall,
            "videos_per_s": round(this["processed"] / wall, 3), "frames_per_s": round(frames / wall, 2),
            "stage_seconds": summary["seconds"], "written": summary["written"], "skipped": summary["skipped"],
            "failed": summary["failed"], "driver_bytes_in": this["driver_bytes_in"],
            "driver_bytes_out": this["driver_bytes_out"], "shard_bytes_written": this["bytes_written"], "cpu": usage}


def throughput(args) -> dict:
    if args.corpus:
        width, height = (int(x) for x in args.corpus_size.lower().split("x"))
        manifest = corpora.corpus(args.corpus, width, height, args.corpus_minutes)
    else:
        manifest = corpora.demo_manifest(args.manifest)
    extra = (["asr.enabled=false"] if args.no_asr else []) + [f"decode.backend={args.backend}", *args.set]
    asr = not args.no_asr and args.asr_fraction > 0
    runs_of = [("warm", manifest)]
    if asr:
        asr_manifest, without = corpora.asr_variant(manifest, args.asr_fraction, args.asr_rows)
        runs_of.append(("asr", asr_manifest))
    other = [x for x in args.compare_set.split(",") if x]
    plan = [("cold", manifest, [])]
    for name, path in runs_of:   # with other settings right after, in the same session: a before/after
        plan.append((name, path, []))
        for i in range(args.compare_repeats if other else 0):
            # alternately (A B, B A, A B, ...): the first run of a pair may pay for starting workers
            pair = [(f"{name} [other]" + (f" #{i + 1}" if i else ""), path, other)]
            if i:
                pair.append((f"{name} #{i + 1}", path, []))
            plan += pair if i % 2 == 0 else pair[::-1]
    done = run_jobs(plan, args.num_cpus, extra)
    runs = {name: job_row(*result) for name, result in done.items()}
    cores = job_cores(args.num_cpus)
    for name, job in runs.items():
        print(f"job ({name}, decode.backend={args.backend}): {job['videos']} videos, {job['samples']} samples, "
              f"{job['frames']} frames in {job['wall_s']:.1f} s: {job['videos_per_s']} videos/s, "
              f"{job['frames_per_s']} frames/s; skipped {job['skipped']}, failed {job['failed']}; stage seconds "
              f"{job['stage_seconds']}")
        print(f"  job ({name}) {cpu_usage.describe(job['cpu'])}")
    report = {"job": runs, "baselines": {}, "ratios": {}}
    if not args.skip_baselines:
        print_baselines(report, done, cores)
    warm = runs["warm"]
    print(f"bytes across the driver (warm run): {warm['driver_bytes_out']:,} out (task rows), "
          f"{warm['driver_bytes_in']:,} in (piece stats); the workers wrote {warm['shard_bytes_written']:,} "
          f"bytes of shards ({warm['driver_bytes_in'] / max(warm['shard_bytes_written'], 1):.4%} of that came "
          "back, and none of it is sample data)")
    if asr:
        job = runs["asr"]
        asr_samples = shard_samples(Path(done["asr"][2].output.dir))
        by_asr = [s for s in asr_samples if s["transcript"] == "asr"]
        print(f"with ASR: {without} of {job['videos']} videos without captions ({len({s['source'] for s in by_asr})} "
              f"transcribed into samples, {len(by_asr)} of {len(asr_samples)} samples; ASR stage "
              f"{job['stage_seconds'].get('asr', 0):.1f} s): job {job['frames_per_s']} frames/s, "
              f"{job['videos_per_s']} videos/s, CPU utilisation {job['cpu']['util']:.0%}")
        if not args.skip_baselines:
            base = report["baselines"]["bare ffmpeg, ASR run"] = baseline(asr_samples, cores)
            ratio = report["ratios"]["bare ffmpeg, ASR run"] = {
                run: round(runs[run]["frames_per_s"] / base["frames_per_s"], 3) for run in runs if run.startswith("asr")}
            print(f"bare ffmpeg on the same frames (decoding only, no ASR pass): {base['frames_per_s']} frames/s\n"
                  f"  bare ffmpeg {cpu_usage.describe(base['cpu'])}\nratio with ASR (job / bare ffmpeg, frames/s): "
                  + ", ".join(f"{run} {r}x" for run, r in ratio.items()) + "  (issue target >= 0.8x); CPU "
                  "utilisation: job " + ", ".join(f"{run} {runs[run]['cpu']['util']:.0%}" for run in ratio)
                  + f", bare ffmpeg {base['cpu']['util']:.0%}")
            print_per_cpu("bare ffmpeg", {run: runs[run] for run in ratio}, base)
    for first in [n for n, _ in runs_of] if other else []:
        report["compare"] = compare = report.get("compare", {})
        fps = {side: sorted(r["frames_per_s"] for n, r in runs.items() if n.split(" #")[0] == name)
               for side, name in (("this", first), ("other", f"{first} [other]"))}
        util = {side: [r["cpu"]["util"] for n, r in runs.items() if n.split(" #")[0] == name]
                for side, name in (("this", first), ("other", f"{first} [other]"))}
        same = all(shard_bytes(done[n][2]) == shard_bytes(done[first][2]) for n in runs if n.startswith(f"{first} "))
        median = {side: values[len(values) // 2] for side, values in fps.items()}
        compare[first] = {"frames_per_s": fps, "util": util, "ratio": round(median["this"] / median["other"], 3)}
        print(f"{first}: this config {fps['this']} frames/s (CPU utilisation {', '.join(f'{u:.0%}' for u in util['this'])}) "
              f"vs with {','.join(other)}: {fps['other']} ({', '.join(f'{u:.0%}' for u in util['other'])}); median "
              f"ratio {compare[first]['ratio']}x; shards byte-identical: {same}")
    print(f"shards of the cold and the warm run byte-identical: {shard_bytes(done['cold'][2]) == shard_bytes(done['warm'][2])}")
    return report


def print_baselines(report: dict, done: dict, cores: int) -> None:
    """The captioned runs against bare ffmpeg and the bare PyAV loop on the warm run's frames."""
    runs = report["job"]
    samples = shard_samples(Path(done["warm"][2].output.dir))
    bases = report["baselines"]
    bases.update({"bare ffmpeg": baseline(samples, cores), "bare PyAV seek loop": baseline_pyav(samples, cores)})
    target = {"bare ffmpeg": "  (DESIGN.md target >= 1.2x)", "bare PyAV seek loop": "  (issue target >= 0.8x)"}
    for name, base in bases.items():
        print(f"{name}: {base['frames']} frames in {base['wall_s']:.1f} s: {base['frames_per_s']} frames/s "
              f"({cores} at a time)\n  {name} {cpu_usage.describe(base['cpu'])}")
        ratio = report["ratios"][name] = {run: round(runs[run]["frames_per_s"] / base["frames_per_s"], 3)
                                          for run in runs if not run.startswith("asr")}
        print(f"ratio (job / {name}, frames/s): " + ", ".join(f"{run} {r}x" for run, r in ratio.items())
              + f"{target[name]}; CPU utilisation: job " + ", ".join(f"{run} {runs[run]['cpu']['util']:.0%}"
                                                                    for run in ratio) + f", {name} {base['cpu']['util']:.0%}")
        print_per_cpu(name, {run: runs[run] for run in ratio}, base)


def per_cpu_s(row: dict) -> float:
    return row["frames"] / max(row["cpu"]["cpu_s"], 1e-9)


def print_per_cpu(name: str, runs: dict, base: dict) -> None:
    """Frames per CPU-second of the process tree: what a busy machine disturbs less than frames/s (it takes
    cores away, it barely changes the work per frame). frames/s ratio = this ratio x utilisation ratio."""
    print(f"  per CPU-second (job's CPU: driver, Ray services and workers): {name} {per_cpu_s(base):.1f} frames, job "
          + ", ".join(f"{run} {per_cpu_s(row):.1f} ({per_cpu_s(row) / per_cpu_s(base):.2f}x)" for run, row in runs.items()))


def shard_bytes(cfg: PipelineConfig) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((Path(cfg.output.dir) / "shards").glob("shard-*.tar"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", help="manifest to run (default: the demo corpus)")
    parser.add_argument("--corpus", "--corpus-720p", type=int, default=0, metavar="N",
                        help="run part 1 on N generated 60 s captioned videos with speech instead")
    parser.add_argument("--corpus-size", default="1280x720", metavar="WxH", help="their size (e.g. 640x360)")
    parser.add_argument("--corpus-minutes", type=int, default=1, help="their length (the minute looped)")
    parser.add_argument("--asr-fraction", type=float, default=0.33,
                        help="part 1 again with no captions on this fraction of the videos (0: not)")
    parser.add_argument("--asr-rows", default="spread", choices=["spread", "first"],
                        help="which rows lose their captions: spread evenly (every input shard needs ASR) or the "
                             "first ones (the other shards skip the ASR actors and run beside them)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a pipeline config override for the job of part 1 (e.g. ray.decode_num_cpus=0.75)")
    parser.add_argument("--compare-set", default="", metavar="KEY=VALUE,...",
                        help="part 1's warm and ASR runs once more with these overrides, in the same Ray session "
                             "(a before/after of e.g. stage resources under the same load)")
    parser.add_argument("--compare-repeats", type=int, default=1, metavar="N",
                        help="--compare-set: N runs of each setting, alternately; the medians are compared")
    parser.add_argument("--backend", default="pyav", choices=["pyav", "ffmpeg"], help="the job's decode.backend")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--no-asr", action="store_true", help="skip videos without captions instead of ASR")
    for part in ("throughput", "baselines", "driver", "decode", "jpeg", "memory"):
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
        c = report["compare"] = compare_with(args.compare_with, corpora.demo_manifest(args.manifest), args.num_cpus, extra,
                                             args.repeats)
        for name, rows in c["runs"].items():
            print(f"job at {name}: " + ", ".join(f"{r['videos']} videos in {r['wall_s']} s ({r['videos_per_s']}/s)"
                                                 for r in rows))
        print(f"ratio (this checkout / {args.compare_with}, best videos/s of each): {c['ratio']}x")
    if not args.skip_decode:
        decode_parts.print_decode(report.setdefault("decode", decode_parts.decode_speed(args.repeats, corpora.make_720p)))
    if not args.skip_jpeg:
        report["jpeg"] = decode_parts.jpeg_speed(corpora.make_720p)
        base = report["jpeg"]["pillow"]["ms_per_frame"]
        for name, row in report["jpeg"].items():
            print(f"jpeg {name:>12}: {row['ms_per_frame']:.3f} ms/frame CPU ({base / row['ms_per_frame']:.2f}x "
                  f"Pillow), {row['bytes']} bytes/frame")
    if not args.skip_memory:
        decode_parts.print_memory(report.setdefault("memory", decode_parts.memory(corpora.make_720p)))
    BENCH.mkdir(parents=True, exist_ok=True)
    (BENCH / "pipeline.json").write_text(json.dumps(report, indent=2))
    print(f"report: {BENCH / 'pipeline.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
