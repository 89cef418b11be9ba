"""Synthetic TVTS shards in the contract format (ARCHITECTURE.md "Sample in a shard").

For tests, benchmarks and the GPU smoke run, where no pipeline output exists. Each video is a coloured
background with a square that moves across the frame; its K transcripts name the video's colour and the
square's position in that window, so both retrieval and ordering are learnable.

    python -m training.synthetic --out DIR [--shards 4 --samples 32 --size 64 --frames 16 --per-bin 1]
"""
from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path

import numpy as np

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 70, 210), "yellow": (220, 200, 40),
           "purple": (140, 50, 170), "orange": (240, 140, 30), "grey": (128, 128, 128), "teal": (30, 150, 150)}
PLACES = ["left", "centre", "right", "corner"]


def _jpeg(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def make_sample(video_id: str, start: float, rng: random.Random, size: tuple[int, int] = (64, 64),
                frames: int = 16, per_bin: int = 1, k: int = 4) -> dict:
    """One sample dict for webdataset's TarWriter: key, 000.jpg.., json."""
    width, height = size
    colour_name = rng.choice(sorted(COLOURS))
    colour = np.array(COLOURS[colour_name], dtype=np.uint8)
    window_len = rng.choice([3, 4, 5])
    span = k * window_len + (k - 1)
    n = frames * per_bin
    times = [start + span * (i + 0.5) / n for i in range(n)]
    sample: dict = {"__key__": f"{video_id}_{int(start * 1000)}"}
    side = max(4, min(width, height) // 4)
    for i, t in enumerate(times):
        frac = (t - start) / span                  # 0 -> 1 across the span: the square moves left to right
        img = np.empty((height, width, 3), dtype=np.uint8)
        img[:] = colour
        x = int(frac * (width - side))
        y = int((0.5 + 0.4 * np.sin(6.28 * frac)) * (height - side))
        img[y:y + side, x:x + side] = 255 - colour
        sample[f"{i:03d}.jpg"] = _jpeg(img)
    windows = []
    for j in range(k):
        w_start = start + j * (window_len + 1)
        words = [colour_name, "video", "step", ["one", "two", "three", "four"][j % 4], "square", PLACES[j % 4]]
        rng.shuffle(words[:2])
        step = window_len / (len(words) + 1)
        windows.append({"start": w_start, "end": w_start + window_len, "text": " ".join(words),
                        "words": [{"word": w, "start": w_start + (i + 0.5) * step, "end": w_start + (i + 1) * step}
                                  for i, w in enumerate(words)]})
    meta = {"key": sample["__key__"], "video_id": video_id, "source": f"synthetic://{video_id}",
            "span": {"start": start, "end": start + span}, "windows": windows,
            "frames": {"times": times, "per_bin": per_bin, "width": width, "height": height},
            "video": {"duration": start + span + 5, "fps": 25.0, "width": width, "height": height,
                      "rotation": 0, "has_audio": True},
            "transcript": {"source": "vtt", "language": "en"}, "meta": {}, "pipeline_version": "synthetic"}
    sample["json"] = json.dumps(meta).encode()
    return sample


def write_synthetic_shards(out: str | Path, shards: int = 4, samples: int = 32, size: tuple[int, int] = (64, 64),
                           frames: int = 16, per_bin: int = 1, seed: int = 0, spans_per_video: int = 2,
                           stats: bool = True) -> list[Path]:
    """Write shards/shard-NNNNNN.tar (+ _stats.json) under `out`; returns the tar paths."""
    import webdataset as wds

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for s in range(shards):
        path = out / f"shard-{s:06d}.tar"
        tmp = path.with_suffix(".tar.tmp")
        with wds.TarWriter(str(tmp)) as sink:
            for i in range(samples):
                video = f"vid{seed}x{s:03d}x{i // spans_per_video:04d}"
                sample = make_sample(video, start=float(10 * (i % spans_per_video)), rng=rng, size=size,
                                     frames=frames, per_bin=per_bin)
                sink.write(sample)
        tmp.replace(path)
        if stats:
            (out / f"shard-{s:06d}_stats.json").write_text(json.dumps({"samples": samples}))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--per-bin", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = write_synthetic_shards(args.out, args.shards, args.samples, (args.size, args.size), args.frames,
                                   args.per_bin, args.seed)
    print(f"wrote {len(paths)} shards x {args.samples} samples to {args.out}")


if __name__ == "__main__":
    main()
