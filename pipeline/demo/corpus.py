"""`python -m pipeline.demo --out DIR [--seed N] [--videos N] [--narration scenes|how-to|plain]`: the narrated
demo corpus and its downstream set.

Made offline in about a minute and a half on 2 cores: every video is 12-22 steps of 3-5 s of coloured
shapes (a new shape/colour/count/position per step, some moving, growing or shrinking) drawn with
Pillow and encoded with ffmpeg (H.264 320x240 15 fps + AAC mono 22.05 kHz), narrated by espeak-ng:
each step is described while it is on screen, every sentence naming what is there and nothing about
order, e.g. "Three blue squares appear on the left. The blue squares are small." So the order of the
transcripts can be learned only from the frames. (`--narration how-to`: each step announced, "Step
four.", an order cue in the text; `--narration plain`: 6-10 steps of 5-9 s, 2-4 sentences each, the
tests' corpus. See pipeline.demo.script.) Word times are exact (espeak's word events), so captions are
truthful.

DIR layout
    manifest.jsonl   one row per video (ARCHITECTURE.md, "Manifest"): video_id, url (ABSOLUTE path of
                     the mp4), captions (absolute path; absent for the ASR-only videos), meta {title,
                     youtube_id (fake, 11 characters, some start with '-'), split (train|val), duration,
                     caption_kind (vtt|srt|merlot|none), caption_style, n_steps, voice, generator}.
                     Paths are absolute; if the folder is moved, rerun this command to rewrite them.
    narration.jsonl  the generator's script, one object per video: video_id, duration, caption_kind,
                     voice, steps [{start, end, text, visual, scene, sentences}] (steps tile [0, duration]),
                     words [{word, start, end}] (seconds; `word` as written: capitals and punctuation kept,
                     compare with pipeline.demo.script.normalize_words). Tests check shard texts against it.
    videos/<video_id>.mp4
    captions/<video_id>.en.vtt     YouTube auto-caption style (word tags, rolling lines, 10 ms cues)
    captions/<video_id>.en.srt     SubRip, one cue per sentence (some with CRLF line endings)
    captions/<video_id>.merlot.json  MERLOT / YT-Temporal annotation (subtitles, denoised, info)
    downstream/      MSR-VTT, UCF-101 and Kinetics-400 style sets with planted leaks: see
                     pipeline.demo.downstream; downstream/ground_truth.json lists the leaks (tests only).
                     Beside them the evaluation sets of training.evaluate (pipeline.demo.eval_sets):
                     shapes_actions/ (UCF-101 layout, 6 motion classes), shapes_captions/ (MSVD layout)
                     and shapes_svo/ (SVO-Probes: sentences with a positive and a negative image).
    README.md        this layout, for whoever finds the folder.

Caption kinds by video index: the first 8 videos are vtt, srt, merlot, none, vtt, merlot, none, vtt;
later ones mostly vtt (24 videos: 15 vtt, 3 srt, 3 merlot, 3 without captions that need ASR).

Deterministic: everything is a function of (seed, video index, generator version); video i is the
same file whatever --videos is. Idempotent: a finished corpus is recognised by DIR/.demo-done.json
(version + arguments + folder) and the command returns at once; an interrupted run is finished (every
file is written atomically, finished videos are kept); other arguments in a folder holding a corpus
replace that corpus. Two runs on one folder at once take turns (a lock file `.<DIR name>.demo-lock`
beside DIR): the second finds the corpus finished.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from common.atomic import write_json, write_text
from pipeline.demo import captions as demo_captions
from pipeline.demo import downstream as demo_downstream
from pipeline.demo import eval_sets as demo_eval_sets
from pipeline.demo.render import render_corpus_video
from pipeline.demo.script import DEFAULT_NARRATION, NARRATIONS, EspeakError, VideoScript

# Bump when any output changes for the same arguments: cached corpora (the tests' fixture) key on it.
GENERATOR_VERSION = "5"
DEFAULT_VIDEOS = 24
PLAN_FILE, DONE_FILE = ".demo-plan.json", ".demo-done.json"
MANAGED = ("videos", "captions", "downstream", "manifest.jsonl", "narration.jsonl", "README.md", DONE_FILE)

_FIRST_KINDS = ("vtt", "srt", "merlot", "none", "vtt", "merlot", "none", "vtt")
_LATER_KINDS = ("vtt", "vtt", "srt", "vtt", "vtt", "vtt", "merlot", "vtt",
                "vtt", "vtt", "srt", "vtt", "vtt", "none", "vtt", "vtt")


class DemoError(RuntimeError):
    """The corpus could not be made; the message says what and what to do."""


def caption_kind(index: int) -> str:
    if index < len(_FIRST_KINDS):
        return _FIRST_KINDS[index]
    return _LATER_KINDS[(index - len(_FIRST_KINDS)) % len(_LATER_KINDS)]


def caption_path(out: Path, video_id: str, kind: str) -> Path | None:
    suffix = {"vtt": ".en.vtt", "srt": ".en.srt", "merlot": ".merlot.json"}.get(kind)
    return out / "captions" / f"{video_id}{suffix}" if suffix else None


def caption_text(script: VideoScript, kind: str) -> str:
    if kind == "vtt":
        style = "classic" if script.index % 3 == 0 else "modern"
        return demo_captions.youtube_auto_vtt(script.words, script.duration, style)
    if kind == "srt":
        return demo_captions.srt(script, crlf=script.index % 4 == 2)
    if kind == "merlot":
        return demo_captions.merlot_annotation(script)
    raise ValueError(kind)


def _run_jobs(jobs: list[tuple], workers: int, desc: str) -> list:
    """Run `(fn, *args)` jobs on a process pool, each in a fresh process; results in job order.

    Fresh processes matter: libespeak-ng carries state from one utterance to the next (its output
    length drifts by a few samples), so a video's speech is the same bytes only if its synthesis
    starts in a process that has synthesized nothing yet. Children fork from a forkserver that
    has the modules loaded, so a fresh process costs milliseconds, not an interpreter start.
    """
    from tqdm import tqdm

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pipeline.demo.downstream"])  # not this module: it may be __main__
    results: list = [None] * len(jobs)
    with ProcessPoolExecutor(max(1, workers), mp_context=context, max_tasks_per_child=1) as pool:
        futures = {pool.submit(fn, *args): i for i, (fn, *args) in enumerate(jobs)}
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc=desc, disable=None):
                results[futures[future]] = future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results


def _prepare(out: Path, plan: dict, force: bool) -> None:
    """Make `out` ready for `plan`: keep a matching partial corpus, replace a corpus made otherwise."""
    plan_file = out / PLAN_FILE
    previous = None
    if plan_file.is_file():
        try:
            previous = json.loads(plan_file.read_text())
        except (OSError, ValueError):
            previous = {}
    elif out.is_dir() and any(p.name not in MANAGED for p in out.iterdir()):
        raise DemoError(f"--out {out} is not empty and holds no demo corpus: pass a new or empty folder")
    if force or (previous is not None and {k: v for k, v in previous.items() if k != "out"}
                 != {k: v for k, v in plan.items() if k != "out"}):
        for name in MANAGED:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    # Scratch left by a killed run (atomic writes use hidden temp files and .render-* folders).
    for folder in ("videos", "captions", "downstream"):
        for path in sorted((out / folder).rglob(".*"), reverse=True) if (out / folder).is_dir() else []:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / PLAN_FILE, plan)


def generate(out: str | Path, seed: int = 0, videos: int = DEFAULT_VIDEOS, workers: int = 2,
             downstream: bool = True, force: bool = False, narration: str = DEFAULT_NARRATION) -> dict:
    """Make (or finish, or find) the demo corpus in `out`; returns a small summary dict."""
    if videos < 1:
        raise DemoError(f"--videos must be at least 1, got {videos}")
    if narration not in NARRATIONS:
        raise DemoError(f"--narration must be one of {', '.join(NARRATIONS)}, got {narration!r}")
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out} exists and is not a folder: pass a folder path")
    t0 = time.monotonic()
    plan = {"generator_version": GENERATOR_VERSION, "seed": seed, "videos": videos,
            "downstream": downstream, "narration": narration, "out": str(out)}
    done_file = out / DONE_FILE
    if not force and _is_done(out, plan) and (not downstream or demo_eval_sets.is_done(out, seed)):
        return {"out": str(out), "videos": videos, "reused": True, "seconds": time.monotonic() - t0}
    out.parent.mkdir(parents=True, exist_ok=True)
    # One generator per folder at a time (parallel test sessions share the cached corpus): the
    # second waits, then finds the corpus finished.
    with open(out.parent / f".{out.name}.demo-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and _is_done(out, plan):
            # A corpus made before the evaluation sets existed gains them; the corpus itself (and every
            # output made from it) stays as it is.
            if downstream:
                demo_eval_sets.ensure(out, seed, workers)
            return {"out": str(out), "videos": videos, "reused": True, "seconds": time.monotonic() - t0}
        _prepare(out, plan, force)
        if done_file.exists():
            done_file.unlink()
        _make(out, plan, workers)
    return {"out": str(out), "videos": videos, "reused": False, "seconds": time.monotonic() - t0}


def _is_done(out: Path, plan: dict) -> bool:
    try:
        return (out / "manifest.jsonl").is_file() and json.loads((out / DONE_FILE).read_text()) == plan
    except (OSError, ValueError):
        return False


def _make(out: Path, plan: dict, workers: int) -> None:
    """Write every output of `plan` into `out` (videos first, the done-marker last)."""
    seed, videos, downstream, style = plan["seed"], plan["videos"], plan["downstream"], plan["narration"]

    jobs = [(render_corpus_video, seed, i, str(out), style) for i in range(videos)]
    scripts: list[VideoScript] = _run_jobs(jobs, workers, "demo videos")

    manifest, narration = [], []
    for script in scripts:
        kind = caption_kind(script.index)
        captions = caption_path(out, script.video_id, kind)
        if captions is not None:
            write_text(captions, caption_text(script, kind))
        row = {
            "video_id": script.video_id,
            "url": str(out / "videos" / f"{script.video_id}.mp4"),
            **({"captions": str(captions)} if captions else {}),
            "meta": {
                "title": script.title,
                "youtube_id": script.youtube_id,
                "split": "val" if script.index % 8 == 7 else "train",
                "duration": script.duration,
                "caption_kind": kind,
                "caption_style": ("classic" if script.index % 3 == 0 else "modern") if kind == "vtt" else None,
                "n_steps": len(script.steps),
                "voice": script.voice,
                "generator": f"pipeline.demo v{GENERATOR_VERSION} seed {seed} {style}",
            },
        }
        manifest.append(row)
        narration.append(script.narration_record(kind))

    if downstream:
        clips = demo_downstream.plan(seed, scripts)
        _run_jobs([(demo_downstream.make_clip, clip, out, seed, style) for clip in clips], workers,
                  "downstream clips")
        down = out / "downstream"
        for rel, text in demo_downstream.annotation_files(clips).items():
            write_text(down / rel, text)
        write_json(down / "datasets.json", demo_downstream.DATASETS)
        write_json(down / "ground_truth.json", {"generator_version": GENERATOR_VERSION, "seed": seed,
                                                **demo_downstream.ground_truth(clips, down)})
        demo_eval_sets.ensure(out, seed, workers)

    write_text(out / "narration.jsonl", "".join(json.dumps(r) + "\n" for r in narration))
    write_text(out / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in manifest))
    layout, kinds = (__doc__ or "").split("DIR layout\n", 1)[1].split("Deterministic:", 1)[0].split("\n\n", 1)
    write_text(out / "README.md", f"# Demo corpus\n\nMade by `python -m pipeline.demo --out {out} --seed {seed} "
               f"--videos {videos} --narration {style}` (generator version {GENERATOR_VERSION}).\n\n```\n{layout.rstrip()}\n```\n\n{kinds}")
    write_json(out / DONE_FILE, plan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.demo",
        description="Make the narrated demo corpus (videos, captions, manifest.jsonl, narration.jsonl) and its "
                    "downstream evaluation set with planted leaks in --out. A second run with the same "
                    "arguments finds the finished corpus and returns at once.")
    parser.add_argument("--out", required=True, help="output folder (e.g. data/demo)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--videos", type=int, default=DEFAULT_VIDEOS, help=f"number of videos (default {DEFAULT_VIDEOS})")
    parser.add_argument("--workers", type=int, default=2, help="encoding processes (default 2)")
    parser.add_argument("--no-downstream", action="store_true", help="skip the downstream set")
    parser.add_argument("--force", action="store_true", help="remake everything even if finished")
    parser.add_argument("--narration", choices=sorted(NARRATIONS), default=DEFAULT_NARRATION,
                        help="scenes (default: 12-22 steps of 3-5 s, sentences that name what is on screen and "
                             "carry no order cue), how-to (each step announced 'Step <n>.': the text tells the "
                             "order) or plain (6-10 longer steps, the tests' corpus)")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out, seed=args.seed, videos=args.videos, workers=args.workers,
                           downstream=not args.no_downstream, force=args.force, narration=args.narration)
    except (DemoError, EspeakError) as exc:
        print(f"error: demo corpus: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"error: demo corpus: {exc.filename or exc} not found (is ffmpeg installed? run `make setup`)",
              file=sys.stderr)
        return 1
    except Exception as exc:  # one line, not a traceback, for a failed encode
        print(f"error: demo corpus in {args.out}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    state = "already complete" if summary["reused"] else f"made in {summary['seconds']:.1f}s"
    print(f"demo corpus: {summary['videos']} videos in {summary['out']} ({state}); "
          f"manifest {Path(summary['out']) / 'manifest.jsonl'}")
    return 0

