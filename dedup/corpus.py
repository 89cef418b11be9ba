"""The corpus side: stream samples out of the pipeline's shards and give each its frame features.

Samples follow ARCHITECTURE.md ("Sample in a shard"): frames `000.jpg`..`015.jpg`, `json` (key, video_id,
frames.times, windows, meta), optional `clip.npy` (float16 [n_frames, D], L2-normalised, model in
`json.meta.clip_model`). Shards are read one at a time with webdataset, so memory holds one batch.

`CorpusFeatures` is the stage `batch -> batch` that fills a `clip` column: the stored `clip.npy` when its
model fingerprint equals the embedder's, else features computed from the JPEGs. A sample with neither
frames nor usable features is a counted failure (`no_features`), never a crash.

`corpus.frames_per_sample` (N > 0) embeds and searches only N evenly spaced frames of each sample
(`frame_subset`); stored rows are subset by the same rule, so stored and computed runs agree, and the
original index of every row goes along (`frame_indices`) so reports point at the right frame and time.

`youtube_id_of` / `manifest_youtube_ids`: a corpus video's YouTube id (sample meta, or the manifest's
`meta.youtube_id` / YouTube url) for the leakage job's source-id check.
"""
from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
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
    # Set by sample_features: the original frame index of each feature row (all frames unless subset).
    frame_indices: list[int] | None = None


def expand_shards(pattern: str) -> list[str]:
    """Shards from a glob, a brace pattern (`shard-{000000..000009}.tar`), a folder or a comma list of
    them, local paths or fsspec URLs (`s3://bucket/run/shards/shard-*.tar`, listed through fsspec and
    returned as URLs). Tars whose stats file is missing while others have one are still being written and
    are left out (common/shard_io.py). StorageError (one line, `corpus.shards`) for an unusable location.
    """
    from common.shard_io import find_shards

    wds = require("webdataset")
    items: list[str] = []
    for part in [p.strip() for p in pattern.split(",") if p.strip()]:
        items.extend(wds.shardlists.expand_urls(part) if "{" in part else [part])
    return find_shards(items, "corpus.shards")[0]


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
    from common.shard_io import tar_samples  # local files and fsspec URLs alike
    from common.storage import redact

    require("webdataset")
    counts = counts if counts is not None else Counter()
    try:
        for record in tar_samples([shard]):
            yield _sample_from_record(record, shard)
    except Exception as exc:  # noqa: BLE001 - a broken tar must not end the job
        counts["bad_shard"] += 1
        reason = str(exc).splitlines()[0] if str(exc) else ""
        print(f"warning: shard {redact(shard)} is unreadable ({type(exc).__name__}: {reason}); "
              "its remaining samples are skipped")


def iter_samples(shards: Iterable[str], counts: Counter | None = None, max_samples: int = 0) -> Iterator[CorpusSample]:
    n = 0
    for shard in shards:
        for sample in iter_shard(shard, counts):
            yield sample
            n += 1
            if max_samples and n >= max_samples:
                return


def frame_subset(n_frames: int, frames_per_sample: int = 0) -> list[int]:
    """Original indexes (ascending) of the frames of an `n_frames` sample that are embedded and searched.

    0, or N >= n_frames: all of them. Else the centre frame of each of N equal groups of consecutive
    frames, floor((2i + 1) * n_frames / (2N)) for i = 0..N-1: 16 frames and N=4 -> 2, 6, 10, 14;
    N=2 -> 4, 12; N=1 -> 8; N=3 -> 2, 8, 13. Distinct because the groups are more than one frame wide.
    """
    if frames_per_sample <= 0 or frames_per_sample >= n_frames:
        return list(range(n_frames))
    return [(2 * i + 1) * n_frames // (2 * frames_per_sample) for i in range(frames_per_sample)]


def sample_features(sample: CorpusSample, embedder: Any, use_stored: bool = True,
                    frames_per_sample: int = 0) -> tuple[np.ndarray | None, str]:
    """(float16 [n, D] L2-normalised, source) or (None, error_class).

    n is the sample's frame count, or with `frames_per_sample` the frames `frame_subset` picks (of the
    stored rows or of the JPEGs, by the same rule); `sample.frame_indices` gets their original indexes.
    """
    if use_stored and sample.clip is not None and sample.clip_model == embedder.fingerprint:
        clip = np.asarray(sample.clip)
        if clip.ndim == 2 and clip.shape[1] == embedder.dim and len(clip):
            chosen = frame_subset(len(clip), frames_per_sample)
            if len(chosen) < len(clip):
                clip = clip[chosen]
            sample.frame_indices = chosen
            return clip.astype(np.float16, copy=False), "stored"
    if not sample.frames:
        return None, "no_features"
    chosen = frame_subset(len(sample.frames), frames_per_sample)
    frames = sample.frames if len(chosen) == len(sample.frames) else [sample.frames[i] for i in chosen]
    try:
        feats = embedder.embed(frames)
        sample.frame_indices = chosen
        return feats, "computed"
    except (OSError, ValueError) as exc:  # a JPEG that does not decode
        sample.errors.append(f"frames do not decode: {exc}")
        return None, "bad_frames"


class CorpusFeatures:
    """Stage `batch -> batch` over rows {key, video_id, frames, clip, clip_model, ...}: fills `clip`
    (and `frame_indices`, the original frame index of each feature row, see `frame_subset`).

    Rows whose features cannot be had get `clip = None`, `frame_indices = []` and `error = <class>`. Used
    in process and as a Ray Data actor (`map_batches(CorpusFeatures, fn_constructor_kwargs={"embedder_kwargs": ...})`).
    """

    def __init__(self, embedder_kwargs: dict, use_stored: bool = True, frames_per_sample: int = 0):
        from features.embed import FrameEmbedder

        self.embedder = FrameEmbedder(**embedder_kwargs)
        self.use_stored = use_stored
        self.frames_per_sample = frames_per_sample

    def __call__(self, batch: dict) -> dict:
        feats, errors, sources, indices = [], [], [], []
        for i in range(len(batch["key"])):
            sample = CorpusSample(key=batch["key"][i], video_id=batch["video_id"][i], shard="",
                                  frames=list(batch["frames"][i]), frame_times=[], meta={},
                                  clip=batch["clip"][i], clip_model=batch["clip_model"][i] or None)
            clip, source = sample_features(sample, self.embedder, self.use_stored, self.frames_per_sample)
            feats.append(clip)
            indices.append(list(sample.frame_indices or []) if clip is not None else [])
            sources.append(source if clip is not None else "")
            errors.append("" if clip is not None else source)
        batch["clip"], batch["error"], batch["feature_source"] = feats, errors, sources
        batch["frame_indices"] = indices
        return batch


def youtube_id_of(meta: dict | None, url: str = "") -> str | None:
    """A corpus video's YouTube id from its metadata or URL (the source-id check of the leakage job)."""
    from dedup.downstream import YOUTUBE_ID, YOUTUBE_URL

    meta = meta or {}
    for key in ("youtube_id", "ytid", "yt_id"):
        value = meta.get(key)
        if isinstance(value, str) and YOUTUBE_ID.match(value.strip()):
            return value.strip()
    if url:
        match = YOUTUBE_URL.search(url)
        if match:
            return match.group(1)
    return None


def manifest_youtube_ids(path: str) -> dict[str, str]:
    """video_id -> YouTube id from a manifest jsonl (`meta.youtube_id`, or a YouTube `url`); local or a URL."""
    from common import storage
    from common.cli import JobError

    out: dict[str, str] = {}
    if not path:
        return out
    try:
        text = storage.read_bytes(path).decode("utf-8", errors="replace")
    except (OSError, storage.StorageError):
        raise JobError(f"corpus.manifest {storage.redact(path)} does not exist or cannot be read (give the "
                       "pipeline's manifest or leave it empty)") from None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("video_id") is not None:
            ytid = youtube_id_of(row.get("meta"), str(row.get("url", "")))
            if ytid:
                out[str(row["video_id"])] = ytid
    return out
