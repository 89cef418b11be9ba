"""A downstream dataset's frozen features: its videos' [CLS] tokens per view, its captions' embeddings.

    read_split(spec, split)       the dataset's videos of one split (official files, common/downstream.py)
    video_features(...)           [N, views, Dv] video-encoder [CLS] (after the final norm, not projected)
    text_features(...)            [Q, D] projected, normalised caption (or paragraph) embeddings

    extract_features(...)         the same for any source of views (training/svo_probes.py's images)

Both are cached (training/features_cache.py) under a key of the weights' digest, the dataset's
annotation and video files (path, size, mtime), the split and the view / tokenizer settings: the second
evaluation of a checkpoint on a dataset decodes nothing. Video features are computed in batches of
`features.batch_size` views (whole videos per batch, training/view_embed.py), decoding in
`features.num_workers` DataLoader workers, with a tqdm bar; in this process, or with
`features.ray_actors: N` on N Ray actors (training/ray_features.py), which give the same features.
A video that cannot be decoded is counted by error class and left out (its row of `ok` is False).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from common.cli import progress
from common.downstream import DownstreamVideo, read_dataset
from training.eval_config import DatasetSpec, FeatureSettings
from training.features_cache import FeatureCache, files_digest
from training.video_views import VideoDecodeError, ViewSpec, decode_views
from training.view_embed import embed_groups, item_groups, resolve_device

__all__ = ["Split", "read_split", "VideoFeatures", "ViewsDataset", "video_features", "extract_features",
           "text_features", "resolve_device"]


@dataclass
class Split:
    name: str
    videos: list[DownstreamVideo]
    bad_rows: int = 0


def read_split(spec: DatasetSpec, split: str) -> Split:
    """The videos of `split` ("" = every video); for eval_split "" the test split, else val, else all."""
    from training.data import DataError

    result = read_dataset(spec.name, spec.format, spec.annotations, spec.video_root)
    present = Counter(v.split for v in result.videos)
    if split == "":
        split = next((s for s in ("test", "val") if present.get(s)), "")
    videos = [v for v in result.videos if split == "" or v.split == split]
    if not videos:
        raise DataError(f"dataset {spec.name}: no videos in split {split!r} (the files list {dict(present)}); "
                        f"set downstream.datasets[{spec.name}].train_split / eval_split")
    if spec.max_videos:
        videos = videos[:spec.max_videos]
    return Split(split or "all", videos, result.bad_rows)


@dataclass
class VideoFeatures:
    cls: np.ndarray                   # float32 [N, V, Dv] (float16 values); rows of failed videos are zeros
    ok: np.ndarray                    # bool [N]
    failures: Counter = field(default_factory=Counter)   # error class -> videos
    examples: list[str] = field(default_factory=list)
    cached: bool = False
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"videos": int(self.ok.size), "decoded": int(self.ok.sum()), "failures": dict(self.failures),
                "failure_examples": self.examples[:3], "cached": self.cached, "extract_seconds": round(self.seconds, 2)}


class ViewsDataset(torch.utils.data.Dataset):
    """Video i -> (i, views or None, error class, message): decode errors travel as values, not exceptions,
    so one broken file does not stop the DataLoader."""

    def __init__(self, videos: list[DownstreamVideo], spec: ViewSpec):
        self.videos, self.spec = videos, spec

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int):
        video = self.videos[i]
        if not video.path:
            return i, None, "no_video_file", f"{video.video_id}: not found under the video root"
        try:
            return i, decode_views(video.path, self.spec), "", ""
        except VideoDecodeError as exc:
            return i, None, exc.error_class, str(exc)


def _video_key(weights: str, spec: DatasetSpec, split: Split, views: ViewSpec) -> dict[str, Any]:
    return {"weights": weights, "dataset": spec.name, "format": spec.format, "split": split.name,
            "annotations": files_digest(list(spec.annotations)),
            "videos": files_digest([v.path for v in split.videos]), "ids": [v.video_id for v in split.videos],
            "views": asdict(views)}


def video_features(model, weights: str, spec: DatasetSpec, split: Split, views: ViewSpec,
                   settings: FeatureSettings, cache: FeatureCache) -> VideoFeatures:
    """[CLS] of every view of every video of `split`, from the cache when (weights, files, views) match."""
    from training.data import DataError

    feats = extract_features(model, ViewsDataset(split.videos, views), len(split.videos), views.views,
                             _video_key(weights, spec, split, views), settings, cache,
                             f"features {spec.name}/{split.name}", "video")
    if not feats.cached and not feats.ok.any():
        raise DataError(f"dataset {spec.name}: none of its {len(split.videos)} {split.name} videos could be decoded "
                        f"({dict(feats.failures)}; e.g. {feats.examples[:1]}); check "
                        f"downstream.datasets[{spec.name}].video_root")
    return feats


def extract_features(model, source, n: int, views: int, key: dict[str, Any], settings: FeatureSettings,
                     cache: FeatureCache, desc: str, kind: str, unit: str = "video") -> VideoFeatures:
    """[N, views, Dv] [CLS] of the n items of `source` (`source[i] -> (i, views or None, error class,
    message)`), from the cache under (kind, key) when there, else extracted here or on Ray actors."""
    import time

    found = cache.load(kind, key) if settings.cache else None
    if found is not None:
        arrays, info = found
        return VideoFeatures(arrays["cls"].astype(np.float32), arrays["ok"], Counter(info.get("failures", {})),
                             info.get("examples", []), cached=True)
    start = time.perf_counter()
    groups = item_groups(n, views, settings.batch_size)
    if settings.ray_actors:
        from training.ray_features import embed_on_actors

        done = embed_on_actors(model, source, groups, views, settings, desc, unit)
    else:
        device = resolve_device(settings.device)
        model = model.to(device).eval()
        with progress(total=n, desc=desc, unit=unit) as bar:
            done = embed_groups(model, source, groups, views, settings.batch_size, settings.num_workers, device,
                                lambda: bar.update(1))
    examples = [message for _, message in done.examples]
    # Kept as float16 (a K400 val split at 5 x 3 views of ViT-B is 0.5 GB so); this run uses the same
    # rounded values, so a first and a cached run give the same numbers.
    stored = done.cls.astype(np.float16)
    result = VideoFeatures(stored.astype(np.float32), done.ok, done.failures, examples,
                           seconds=time.perf_counter() - start)
    if settings.cache and done.ok.any():
        cache.save(kind, key, {"cls": stored, "ok": done.ok}, {"failures": dict(done.failures), "examples": examples})
    return result


@torch.no_grad()
def text_features(model, tokenizer, weights: str, texts: list[str], max_length: int,
                  settings: FeatureSettings, cache: FeatureCache, what: str) -> tuple[np.ndarray, bool]:
    """([Q, D] normalised projected text embeddings, from the cache or not)."""
    import hashlib

    key = {"weights": weights, "max_length": max_length, "what": what,
           "texts": hashlib.sha1("\0".join(texts).encode("utf-8")).hexdigest(), "count": len(texts)}
    found = cache.load("text", key) if settings.cache else None
    if found is not None:
        return found[0]["emb"], True
    device = resolve_device(settings.device)
    model = model.to(device).eval()
    chunks = []
    step = max(1, settings.batch_size * 4)      # texts are cheap next to videos
    for at in progress(range(0, len(texts), step), desc=f"text {what}", unit="batch"):
        tok = tokenizer(texts[at:at + step], max_length=max_length, truncation=True, padding="longest",
                        return_tensors="pt")
        chunks.append(model.encode_text(tok["input_ids"].to(device), tok["attention_mask"].to(device)).float().cpu())
    emb = torch.cat(chunks).numpy()
    if settings.cache:
        cache.save("text", key, {"emb": emb})
    return emb, False
