"""The corpus side: stream samples out of the pipeline's shards and give each its frame features.

Samples follow ARCHITECTURE.md ("Sample in a shard"): frames `000.jpg`..`015.jpg`, `json` (key, video_id,
frames.times, windows, meta), optional `clip.npy` (float16 [n_frames, D], L2-normalised, model in
`json.meta.clip_model`). Shards are read one at a time with webdataset, so memory holds one batch.

`CorpusFeatures` is the stage `batch -> batch` that fills a `clip` column: the stored `clip.npy` when its
model fingerprint equals the embedder's, else features computed from the JPEGs. A sample with neither
frames nor usable features is a counted failure (`no_features`), never a crash.
"""
from __future__ import annotations

import glob
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from common.deps import require

FRAME_SUFFIX = ".jpg"


@dataclass
class CorpusSample:
    key: str
    video_id: str
    shard: str
    frames: list[bytes]  # JPEG bytes in member order (000.jpg, 001.jpg, ...)
    frame_times: list[float]
    meta: dict
    text: str = ""  # the sample's transcript windows, joined
    clip: np.ndarray | None = None  # stored features (float16 [n_frames, D]) if present
    clip_model: str | None = None
    errors: list[str] = field(default_factory=list)


def expand_shards(pattern: str) -> list[str]:
    """Shard paths from a glob, a brace pattern (`shard-{000000..000009}.tar`) or a comma list."""
    wds = require("webdataset")
    out: list[str] = []
    for part in [p.strip() for p in pattern.split(",") if p.strip()]:
        for expanded in wds.shardlists.expand_urls(part) if "{" in part else [part]:
            matches = sorted(glob.glob(expanded)) if any(c in expanded for c in "*?[") else [expanded]
            out.extend(m for m in matches if os.path.isfile(m))
    return list(dict.fromkeys(out))


def _sample_from_record(record: dict, shard: str) -> CorpusSample:
    key = record.get("__key__", "")
    frame_names = sorted(k for k in record if k.endswith(FRAME_SUFFIX) and k[:-4].isdigit())
    frames = [record[name] for name in frame_names]
    info: dict[str, Any] = {}
    errors = []
    if "json" in record:
        try:
            info = json.loads(record["json"])
        except (ValueError, UnicodeDecodeError) as exc:
            errors.append(f"bad json: {exc}")
    meta = info.get("meta") or {}
    times = list((info.get("frames") or {}).get("times") or [])
    text = " ".join(str(w.get("text", "")) for w in info.get("windows") or [] if isinstance(w, dict)).strip()
    clip = None
    if "clip.npy" in record:
        try:
            clip = np.load(io.BytesIO(record["clip.npy"]), allow_pickle=False)
        except (ValueError, OSError) as exc:
            errors.append(f"bad clip.npy: {exc}")
    return CorpusSample(key=info.get("key") or key, video_id=str(info.get("video_id") or key.rsplit("_", 1)[0]),
                        shard=shard, frames=frames, frame_times=times, meta=meta, text=text, clip=clip,
                        clip_model=meta.get("clip_model"), errors=errors)


def iter_shard(shard: str, counts: Counter | None = None) -> Iterator[CorpusSample]:
    """Samples of one shard; an unreadable tar ends that shard with a counted `bad_shard`."""
    wds = require("webdataset")
    counts = counts if counts is not None else Counter()
    try:
        records = wds.tarfile_to_samples()(iter([{"url": shard}]))
        for record in records:
            yield _sample_from_record(record, shard)
    except Exception as exc:  # noqa: BLE001 - a broken tar must not end the job
        counts["bad_shard"] += 1
        print(f"warning: shard {shard} is unreadable ({type(exc).__name__}: {exc}); its remaining samples are skipped")


def iter_samples(shards: Iterable[str], counts: Counter | None = None, max_samples: int = 0) -> Iterator[CorpusSample]:
    n = 0
    for shard in shards:
        for sample in iter_shard(shard, counts):
            yield sample
            n += 1
            if max_samples and n >= max_samples:
                return


def sample_features(sample: CorpusSample, embedder: Any, use_stored: bool = True) -> tuple[np.ndarray | None, str]:
    """(float16 [n_frames, D] L2-normalised, source) or (None, error_class)."""
    if use_stored and sample.clip is not None and sample.clip_model == embedder.fingerprint:
        clip = np.asarray(sample.clip)
        if clip.ndim == 2 and clip.shape[1] == embedder.dim and len(clip):
            return clip.astype(np.float16, copy=False), "stored"
    if not sample.frames:
        return None, "no_features"
    try:
        return embedder.embed(sample.frames), "computed"
    except (OSError, ValueError) as exc:  # a JPEG that does not decode
        sample.errors.append(f"frames do not decode: {exc}")
        return None, "bad_frames"


class CorpusFeatures:
    """Stage `batch -> batch` over rows {key, video_id, frames, clip, clip_model, ...}: fills `clip`.

    Rows whose features cannot be had get `clip = None` and `error = <class>`. Used in process and as a
    Ray Data actor (`map_batches(CorpusFeatures, fn_constructor_kwargs={"embedder_kwargs": ...})`).
    """

    def __init__(self, embedder_kwargs: dict, use_stored: bool = True):
        from dedup.embed import FrameEmbedder

        self.embedder = FrameEmbedder(**embedder_kwargs)
        self.use_stored = use_stored

    def __call__(self, batch: dict) -> dict:
        feats, errors, sources = [], [], []
        for i in range(len(batch["key"])):
            sample = CorpusSample(key=batch["key"][i], video_id=batch["video_id"][i], shard="",
                                  frames=list(batch["frames"][i]), frame_times=[], meta={},
                                  clip=batch["clip"][i], clip_model=batch["clip_model"][i] or None)
            clip, source = sample_features(sample, self.embedder, self.use_stored)
            feats.append(clip)
            sources.append(source if clip is not None else "")
            errors.append("" if clip is not None else source)
        batch["clip"], batch["error"], batch["feature_source"] = feats, errors, sources
        return batch
