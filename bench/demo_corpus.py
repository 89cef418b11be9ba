"""How fast the demo corpus generator is, against bare ffmpeg encoding the same minutes of video.

    .venv/bin/python bench/demo_corpus.py [--videos 8] [--workers 2]

Generator: `pipeline.demo.generate` (espeak-ng speech, Pillow frames, x264 + AAC, captions, manifest)
into a temp folder, corpus only (no downstream set). Baseline, same run: one ffmpeg per video encoding
an ffmpeg test source (testsrc2 + sine) of the same duration with the same codec settings, with the
same number of parallel processes. Prints seconds, video-seconds made per second, and the ratio
generator/baseline speed (1.0 = the generator costs nothing beyond encoding).
"""
from __future__ import annotations

import os
import sys

# `python bench/NAME.py` puts bench/ first on sys.path, where pipeline.py and training.py would shadow the
# installed packages of those names: drop it (the project itself is installed, see pyproject.toml).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.demo.corpus import generate
from pipeline.demo.render import encode_lavfi


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        t0 = time.perf_counter()
        generate(Path(tmp) / "corpus", seed=0, videos=args.videos, workers=args.workers, downstream=False)
        generator_s = time.perf_counter() - t0
        durations = [json.loads(line)["duration"] for line in open(Path(tmp) / "corpus" / "narration.jsonl")]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:  # each thread waits on one ffmpeg process
            list(pool.map(lambda kv: encode_lavfi("testsrc2", kv[1], Path(tmp) / "base" / f"{kv[0]}.mp4"),
                          enumerate(durations)))
        baseline_s = time.perf_counter() - t0
    minutes = sum(durations)
    print(f"videos {len(durations)}, {minutes:.0f} s of video, workers {args.workers}")
    print(f"generator   {generator_s:6.1f} s  {minutes / generator_s:6.1f} video-s/s")
    print(f"ffmpeg only {baseline_s:6.1f} s  {minutes / baseline_s:6.1f} video-s/s")
    print(f"ratio (generator speed / bare ffmpeg speed): {baseline_s / generator_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
