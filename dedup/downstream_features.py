"""The downstream side of the leakage check: each evaluation set's videos as frame features.

`load_downstream(spec, embedder, cache_dir) -> DownstreamSet`: read one dataset's official annotation
files (common/downstream.py), decode N frames of each video (dedup/frames.py), embed them, and keep the
features with each frame's video, index and time. The result is cached under `cache_dir` keyed by the
embedder's fingerprint, the dataset spec and the annotation and video files (path, size, mtime), so a
rerun reuses it and another model never does. Decode failures are counted per error class.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import write_bytes
from common.cli import progress
from common.downstream import DownstreamFormatError, DownstreamVideo, read_dataset
from dedup.config import DownstreamSpec
from dedup.frames import decode_frames
from pipeline.errors import StageError

__all__ = ["DownstreamSet", "load_downstream", "CACHE_VERSION"]

CACHE_VERSION = 1


@dataclass
class DownstreamSet:
    spec: DownstreamSpec
    videos: list[DownstreamVideo] = field(default_factory=list)
    error: str = ""  # the dataset could not be read at all
    bad_rows: int = 0
    row_errors: list[str] = field(default_factory=list)
    failures: Counter = field(default_factory=Counter)  # decode error class -> count
    failure_examples: list[str] = field(default_factory=list)
    feats: np.ndarray | None = None  # float16 [F, D]
    frame_video: np.ndarray | None = None  # int32 [F] index into videos
    frame_index: np.ndarray | None = None  # int32 [F]
    frame_time: np.ndarray | None = None  # float32 [F]
    cached: bool = False

    @property
    def with_file(self) -> int:
        return sum(1 for v in self.videos if v.path)

    @property
    def checked(self) -> int:
        return 0 if self.frame_video is None else len(np.unique(self.frame_video))


def _file_id(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, int(st.st_mtime)]


def _cache_key(spec: DownstreamSpec, fingerprint: str, videos: list[DownstreamVideo]) -> str:
    blob = json.dumps({
        "v": CACHE_VERSION, "model": fingerprint, "spec": asdict(spec),
        "annotations": [_file_id(p) for p in spec.annotations],
        "videos": [[v.video_id, v.path, os.path.getsize(v.path) if v.path else None] for v in videos],
    }, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def load_downstream(spec: DownstreamSpec, embedder: Any, cache_dir: Path) -> DownstreamSet:
    """Read one dataset's annotations, decode and embed its videos (or reuse the cached features)."""
    ds = DownstreamSet(spec)
    try:
        result = read_dataset(spec.name, spec.format, spec.annotations, spec.video_root, spec.splits, spec.max_videos)
    except (DownstreamFormatError, OSError) as exc:
        ds.error = str(exc)
        return ds
    ds.videos, ds.bad_rows, ds.row_errors = result.videos, result.bad_rows, result.errors
    cache = cache_dir / f"downstream-{spec.name}-{_cache_key(spec, embedder.fingerprint, ds.videos)}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            ds.feats, ds.frame_video = z["feats"], z["frame_video"]
            ds.frame_index, ds.frame_time = z["frame_index"], z["frame_time"]
            info = json.loads(str(z["info"]))
        ds.failures, ds.failure_examples, ds.cached = Counter(info["failures"]), info["examples"], True
        return ds
    feats, frame_video, frame_index, frame_time = [], [], [], []
    todo = [(i, v) for i, v in enumerate(ds.videos) if v.path]
    ds.failures["no_video_file"] = len(ds.videos) - len(todo)
    for i, video in progress(todo, desc=f"downstream {spec.name}", unit="video"):
        try:
            decoded = decode_frames(video.path, spec.frames, short_side=max(embedder.image_size, 256))
            vectors = embedder.embed(decoded.frames)
        except StageError as exc:
            ds.failures[exc.error_class] += 1
            if len(ds.failure_examples) < 10:
                ds.failure_examples.append(exc.message)
            continue
        feats.append(vectors)
        frame_video.append(np.full(len(vectors), i, np.int32))
        frame_index.append(np.arange(len(vectors), dtype=np.int32))
        frame_time.append(np.asarray(decoded.times, np.float32))
    if not ds.failures["no_video_file"]:
        del ds.failures["no_video_file"]
    dim = embedder.dim
    ds.feats = np.concatenate(feats) if feats else np.zeros((0, dim), np.float16)
    ds.frame_video = np.concatenate(frame_video) if feats else np.zeros(0, np.int32)
    ds.frame_index = np.concatenate(frame_index) if feats else np.zeros(0, np.int32)
    ds.frame_time = np.concatenate(frame_time) if feats else np.zeros(0, np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, feats=ds.feats, frame_video=ds.frame_video, frame_index=ds.frame_index,
             frame_time=ds.frame_time,
             info=np.array(json.dumps({"failures": dict(ds.failures), "examples": ds.failure_examples})))
    write_bytes(cache, buffer.getvalue())
    return ds
