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
    embedded: int = 0  # set by batch_features: frames this sample sent through the model (not cached)


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


class FrameCache:
    """Features of frames already embedded, by the digest of their JPEG bytes: overlapping samples of a
    video store the same picture as the same bytes (the pipeline's JPEGs are deterministic), so each
    distinct frame goes through the model once. Bounded: the oldest entries go first."""

    def __init__(self, max_items: int = 16384):
        from collections import OrderedDict

        self.items: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.max_items = max_items

    def get(self, digest: bytes) -> np.ndarray | None:
        row = self.items.get(digest)
        if row is not None:
            self.items.move_to_end(digest)
        return row

    def put(self, digest: bytes, row: np.ndarray) -> None:
        self.items[digest] = row
        self.items.move_to_end(digest)
        while len(self.items) > self.max_items:
            self.items.popitem(last=False)


def _stored(sample: CorpusSample, embedder: Any, frames_per_sample: int) -> np.ndarray | None:
    if sample.clip is None or sample.clip_model != embedder.fingerprint:
        return None
    clip = np.asarray(sample.clip)
    if clip.ndim != 2 or clip.shape[1] != embedder.dim or not len(clip):
        return None
    chosen = frame_subset(len(clip), frames_per_sample)
    sample.frame_indices = chosen
    return (clip[chosen] if len(chosen) < len(clip) else clip).astype(np.float16, copy=False)


def batch_features(samples: list[CorpusSample], embedder: Any, use_stored: bool = True, frames_per_sample: int = 0,
                   cache: FrameCache | None = None) -> list[tuple[np.ndarray | None, str]]:
    """`sample_features` for many samples at once: the distinct frames of all of them that are neither
    stored nor cached go through the model together, in batches of the embedder's batch size."""
    import hashlib

    cache = cache if cache is not None else FrameCache()
    results: list[tuple[np.ndarray | None, str] | None] = [None] * len(samples)
    wanted: dict[int, list[bytes]] = {}     # sample index -> digests of its chosen frames
    missing: dict[bytes, bytes] = {}        # digest -> JPEG, in first-seen order
    for i, sample in enumerate(samples):
        stored = _stored(sample, embedder, frames_per_sample) if use_stored else None
        if stored is not None:
            results[i] = (stored, "stored")
            continue
        if not sample.frames:
            results[i] = (None, "no_features")
            continue
        chosen = frame_subset(len(sample.frames), frames_per_sample)
        sample.frame_indices = chosen
        digests = []
        for index in chosen:
            jpeg = sample.frames[index]
            digest = hashlib.blake2b(jpeg, digest_size=16).digest()
            digests.append(digest)
            if cache.get(digest) is None and digest not in missing:
                missing[digest] = jpeg
                sample.embedded += 1
        wanted[i] = digests
    fresh, bad = _embed_into(cache, missing, embedder)
    for i, digests in wanted.items():
        broken = [d for d in digests if d in bad]
        if broken:
            samples[i].errors.append(f"frames do not decode: {bad[broken[0]]}")
            samples[i].frame_indices = None
            results[i] = (None, "bad_frames")
            continue
        rows = [fresh[d] if d in fresh else cache.get(d) for d in digests]   # fresh: the cache may be small
        results[i] = (np.stack(rows).astype(np.float16, copy=False), "computed")
    return results  # type: ignore[return-value]


def _embed_into(cache: FrameCache, missing: dict[bytes, bytes], embedder: Any
                ) -> tuple[dict[bytes, np.ndarray], dict[bytes, str]]:
    """Embed the missing frames (into the cache too): their rows, and the frames that do not decode."""
    if not missing:
        return {}, {}
    digests, jpegs = list(missing), list(missing.values())
    fresh: dict[bytes, np.ndarray] = {}
    bad: dict[bytes, str] = {}
    try:
        fresh = dict(zip(digests, embedder.embed(jpegs)))
    except (OSError, ValueError):   # a JPEG that does not decode: find it, keep the others
        for digest, jpeg in zip(digests, jpegs):
            try:
                fresh[digest] = embedder.embed([jpeg])[0]
            except (OSError, ValueError) as exc:
                bad[digest] = str(exc)
    for digest, row in fresh.items():
        cache.put(digest, row)
    return fresh, bad


def samples_per_batch(batch_size: int, frames_per_sample: int) -> int:
    """Samples whose frames fill about one model batch (16 frames a sample unless frames_per_sample)."""
    return max(1, batch_size // (frames_per_sample or 16))


def iter_features(samples: Iterable[CorpusSample], embedder: Any, use_stored: bool = True, frames_per_sample: int = 0,
                  group_size: int = 1, cache: FrameCache | None = None
                  ) -> Iterator[tuple[CorpusSample, np.ndarray | None, str]]:
    """(sample, features or None, source or error class) in order, `group_size` samples per
    `batch_features` call sharing one frame cache: the in-process corpus pass of the leakage and
    near-duplicate jobs."""
    import itertools

    cache = cache if cache is not None else FrameCache()
    stream = iter(samples)
    while True:
        group = list(itertools.islice(stream, group_size))
        if not group:
            return
        for sample, (feats, source) in zip(group, batch_features(group, embedder, use_stored, frames_per_sample,
                                                                 cache)):
            yield sample, feats, source


def sample_features(sample: CorpusSample, embedder: Any, use_stored: bool = True,
                    frames_per_sample: int = 0, cache: FrameCache | None = None) -> tuple[np.ndarray | None, str]:
    """(float16 [n, D] L2-normalised, source) or (None, error_class).

    n is the sample's frame count, or with `frames_per_sample` the frames `frame_subset` picks (of the
    stored rows or of the JPEGs, by the same rule); `sample.frame_indices` gets their original indexes.
    """
    return batch_features([sample], embedder, use_stored, frames_per_sample, cache)[0]


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
        self.cache = FrameCache()   # per actor: the samples of a shard (a video's neighbours) come to one actor

    def __call__(self, batch: dict) -> dict:
        samples = [CorpusSample(key=batch["key"][i], video_id=batch["video_id"][i], shard="",
                                frames=list(batch["frames"][i]), frame_times=[], meta={},
                                clip=batch["clip"][i], clip_model=batch["clip_model"][i] or None)
                   for i in range(len(batch["key"]))]
        results = batch_features(samples, self.embedder, self.use_stored, self.frames_per_sample, self.cache)
        batch["clip"] = [clip for clip, _ in results]
        batch["error"] = ["" if clip is not None else source for clip, source in results]
        batch["feature_source"] = [source if clip is not None else "" for clip, source in results]
        batch["frame_indices"] = [list(s.frame_indices or []) if clip is not None else []
                                  for s, (clip, _) in zip(samples, results)]
        batch["embedded"] = [s.embedded for s in samples]
        return batch


def youtube_id_of(meta: dict | None, url: str = "") -> str | None:
    """A corpus video's YouTube id from its metadata or URL (the source-id check of the leakage job)."""
    from common.downstream import YOUTUBE_ID, YOUTUBE_URL

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
