"""Test helpers: write small WebDataset shards that follow the sample contract (ARCHITECTURE.md).

`write_shards_from_videos` cuts each video into spans, decodes 16 frames per span with the pipeline's
own probe + decode stages and writes `000.jpg`..`015.jpg` + `json` (+ optional `clip.npy`) samples with
webdataset's TarWriter, so the leakage tests do not depend on the whole pipeline job.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np


def sample_json(key: str, video_id: str, start: float, end: float, times: list[float], meta: dict,
                text: str = "") -> dict:
    return {"key": key, "video_id": video_id, "source": "test", "span": {"start": start, "end": end},
            "windows": [{"start": start, "end": end, "text": text, "words": []}],
            "frames": {"times": times, "per_bin": 1, "width": 0, "height": 0},
            "video": {"duration": 0.0, "fps": 0.0, "width": 0, "height": 0, "rotation": 0, "has_audio": False},
            "transcript": {"source": "vtt", "language": "en"}, "meta": meta, "pipeline_version": "test"}


def write_samples(path: Path, samples: Iterable[dict]) -> int:
    """samples: {"key", "members": {name: bytes}}; returns how many were written."""
    import webdataset as wds

    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "wb") as handle:
        writer = wds.TarWriter(handle, encoder=False)
        for sample in samples:
            record = {"__key__": sample["key"]}
            record.update(sample["members"])
            writer.write(record)
            n += 1
        writer.close()
    return n


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_shards_from_videos(videos: list[tuple[str, str, dict]], out_dir: Path, span_s: float = 20.0,
                             n_frames: int = 16, short_side: int = 256, samples_per_shard: int = 16,
                             embed: Callable | None = None, clip_model: str = "") -> list[Path]:
    """videos: (video_id, path, meta). One sample per `span_s` of each video; shards of `samples_per_shard`."""
    from pipeline.media.decode import DecodeConfig, decode_frames
    from pipeline.media.probe import probe

    samples = []
    for video_id, path, meta in videos:
        info = probe(path)
        starts = np.arange(0.0, max(info.duration - 2.0, 0.1), span_s)
        for start in starts:
            end = min(start + span_s, info.duration)
            step = (end - start) / n_frames
            times = [round(start + step * (i + 0.5), 3) for i in range(n_frames)]
            decoded = decode_frames(path, info, times, DecodeConfig(short_side=short_side))
            key = f"{video_id}_{int(round(start * 1000))}"
            members = {f"{i:03d}.jpg": jpg for i, jpg in enumerate(decoded.jpegs)}
            sample_meta = dict(meta)
            if embed is not None:
                members["clip.npy"] = npy_bytes(embed(decoded.jpegs))
                sample_meta["clip_model"] = clip_model
            members["json"] = json.dumps(sample_json(key, video_id, float(start), float(end), decoded.times,
                                                     sample_meta)).encode()
            samples.append({"key": key, "members": members})
    paths = []
    for i in range(0, max(len(samples), 1), samples_per_shard):
        path = out_dir / f"shard-{i // samples_per_shard:06d}.tar"
        write_samples(path, samples[i:i + samples_per_shard])
        paths.append(path)
    return paths


def demo_videos(corpus_dir: Path) -> list[tuple[str, str, dict]]:
    rows = [json.loads(line) for line in (corpus_dir / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return [(row["video_id"], row["url"], row.get("meta") or {}) for row in rows]


def demo_downstream_config(corpus_dir: Path) -> list[dict]:
    """The demo downstream set as `downstream:` config entries (official formats, video roots)."""
    d = corpus_dir / "downstream"
    return [
        {"name": "msrvtt", "format": "msrvtt", "annotations": [str(d / "msrvtt/MSRVTT_JSFUSION_test.csv")],
         "video_root": str(d / "msrvtt/videos/all")},
        {"name": "ucf101", "format": "ucf101", "annotations": [str(d / f"ucf101/ucfTrainTestlist/{n}") for n in
                                                                ("classInd.txt", "trainlist01.txt", "testlist01.txt")],
         "video_root": str(d / "ucf101/UCF-101")},
        {"name": "kinetics400", "format": "kinetics", "annotations": [str(d / "kinetics400/kinetics-400_val.csv")],
         "video_root": str(d / "kinetics400/val")},
    ]


def mark_shards_done(paths: Iterable[Path]) -> None:
    """Write each tar's `<name>_stats.json`, as the pipeline does last (a shard without one is not done)."""
    for path in paths:
        with tarfile.open(path) as tar:
            names = tar.getnames()
        keys = sorted({n.split(".", 1)[0] for n in names})
        Path(str(path)[: -len(".tar")] + "_stats.json").write_text(json.dumps({"samples": len(keys), "keys": keys}))
