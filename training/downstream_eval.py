"""The downstream tasks of `python -m training.evaluate` (TVTS-SPEC.md, "Evaluation"), each on one dataset
of the config's `downstream.datasets`, read from its official annotation files:

- t2v: text-to-video retrieval (MSR-VTT 1k-A, MSVD, DiDeMo, LSMDC). Every caption of an eval-split video
  queries a gallery of those videos (MSVD: about 40 captions per video, a hit when the caption finds its
  video); DiDeMo is paragraph-to-video: a video's sentences joined, in order, into one query. R@1/5/10,
  MedR, MeanR and video-to-text (`v2t_*`: a video's rank is its best-ranked own caption), ranks as
  training/metrics.py counts them (ties in the query's favour, `tied` says how often).
  Video embedding: the projected [CLS] of the views' mean (1 clip x 1 centre crop unless the dataset says).
- v2v: zero-shot video-to-video retrieval (SSV2 protocol): [CLS] features (views averaged), cosine; an
  eval-split query is a hit at K when one of its K nearest gallery videos shares its class. Gallery: the
  train split, or the eval split itself with the query left out (v2v.gallery).
- linear-probe: frozen [CLS] of clips x crops views (2 x 3; 5 x 3 for K400 via the dataset's clips), a
  linear classifier trained with SGD on the train split (training/linear_probe.py), top-1/top-5 on the
  eval split, `seeds` probes on the same features (mean, std and each).
- svo-probes: a sentence against a positive and a negative image (training/svo_probes.py).
Each result holds its chance level next to the metric, and `features` says whether they came from the
cache (training/downstream_features.py).
"""
from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import torch

from training.downstream_features import Split, read_split, resolve_device, text_features, video_features
from training.eval_config import DatasetSpec
from training.features_cache import FeatureCache
from training.linear_probe import probe_scores
from training.metrics import class_retrieval, retrieval_metrics
from training.svo_probes import run_svo
from training.svo_probes import table_lines as svo_lines
from training.video_views import ViewSpec

__all__ = ["run_task", "t2v_queries", "table_lines"]


def view_spec(model, cfg, clips: int, crops: int) -> ViewSpec:
    v = model.cfg.video
    return ViewSpec(frames=v.frames, image_size=v.image_size, clips=clips, crops=crops,
                    resize_short=cfg.data.resize_short)


def _base(task: str, spec: DatasetSpec, split: Split, views: ViewSpec) -> dict[str, Any]:
    return {"task": task, "dataset": spec.name, "format": spec.format, "split": split.name,
            "views": f"{views.clips} x {views.crops} views (clips x crops)", "frames": views.frames,
            "image_size": views.image_size}


def t2v_queries(videos: list, paragraphs: bool) -> tuple[list[str], list[int]]:
    """(query texts, the index in `videos` of each query's video): every caption, or one paragraph per
    video, its sentences joined in the order the annotation file lists them (DiDeMo)."""
    texts, owner = [], []
    for g, video in enumerate(videos):
        for text in ([" ".join(c.strip() for c in video.captions)] if paragraphs else video.captions):
            texts.append(text)
            owner.append(g)
    return texts, owner


def run_t2v(model, tokenizer, weights: str, spec: DatasetSpec, cfg, cache: FeatureCache) -> dict[str, Any]:
    ds = cfg.downstream
    split = read_split(spec, spec.eval_split)
    views = view_spec(model, cfg, spec.clips or 1, spec.crops or 1)
    feats = video_features(model, weights, spec, split, views, ds.features, cache)
    keep = [i for i, v in enumerate(split.videos) if feats.ok[i] and v.captions]
    if not keep:
        raise ValueError(f"dataset {spec.name}: no decoded {split.name} video has a caption")
    texts, owner = t2v_queries([split.videos[i] for i in keep], spec.paragraphs)
    base_len = model.cfg.text.max_length
    max_len = ds.t2v.max_text_length or (min(512, 4 * base_len) if spec.paragraphs else base_len)
    text_emb, text_cached = text_features(model, tokenizer, weights, texts, max_len, ds.features, cache,
                                          f"{spec.name}/{split.name}")
    with torch.no_grad():
        device = resolve_device(ds.features.device)
        cls = torch.from_numpy(feats.cls[keep].mean(axis=1)).to(device)
        video_emb = torch.nn.functional.normalize(model.video_proj(cls).float(), dim=-1).cpu()
    sim = torch.from_numpy(text_emb) @ video_emb.t()
    metrics = retrieval_metrics(sim, torch.tensor(owner))
    metrics.pop("queries"), metrics.pop("gallery")
    return {**_base("t2v", spec, split, views), "videos": len(keep), "queries": len(texts),
            "query": "paragraph" if spec.paragraphs else "caption", "max_text_length": max_len,
            "without_caption": sum(1 for i, v in enumerate(split.videos) if feats.ok[i] and not v.captions),
            **metrics, "rank_ties": "optimistic",
            "features": {**feats.summary(), "text_cached": text_cached}}


def _labelled(split: Split, ok: np.ndarray) -> list[int]:
    return [i for i, v in enumerate(split.videos) if ok[i] and v.label]


def _gallery_split(spec: DatasetSpec, mode: str) -> Split | None:
    """The v2v gallery's split, or None for the eval split itself (query left out)."""
    from training.data import DataError

    if mode == "eval":
        return None
    try:
        return read_split(spec, spec.train_split)
    except DataError:
        if mode == "train":
            raise
        return None


def run_v2v(model, weights: str, spec: DatasetSpec, cfg, cache: FeatureCache) -> dict[str, Any]:
    ds = cfg.downstream
    split = read_split(spec, spec.eval_split)
    views = view_spec(model, cfg, spec.clips or 1, spec.crops or 1)
    qf = video_features(model, weights, spec, split, views, ds.features, cache)
    gallery = _gallery_split(spec, ds.v2v.gallery)
    gf = qf if gallery is None else video_features(model, weights, spec, gallery, views, ds.features, cache)
    q_idx = _labelled(split, qf.ok)
    g_split = split if gallery is None else gallery
    g_idx = _labelled(g_split, gf.ok)
    if not q_idx or len(g_idx) < 2:
        raise ValueError(f"dataset {spec.name}: v2v needs labelled videos on both sides "
                         f"({len(q_idx)} queries, {len(g_idx)} gallery)")
    names = sorted({split.videos[i].label for i in q_idx} | {g_split.videos[i].label for i in g_idx})
    index = {n: k for k, n in enumerate(names)}
    q_lab = torch.tensor([index[split.videos[i].label] for i in q_idx])
    g_lab = torch.tensor([index[g_split.videos[i].label] for i in g_idx])
    q = torch.nn.functional.normalize(torch.from_numpy(qf.cls[q_idx].mean(axis=1)), dim=-1)
    g = torch.nn.functional.normalize(torch.from_numpy(gf.cls[g_idx].mean(axis=1)), dim=-1)
    exclude = None
    if gallery is None:                      # the query itself is in the gallery: leave it out
        exclude = torch.eye(len(q_idx), dtype=torch.bool)
    metrics = class_retrieval(q @ g.t(), q_lab, g_lab, ks=tuple(ds.v2v.ks), exclude=exclude)
    return {**_base("v2v", spec, split, views), "gallery_split": g_split.name if gallery is not None else
            f"{split.name} (query left out)", "classes": len(names), **metrics, "feature": "[CLS], cosine",
            "features": {"queries": qf.summary(), "gallery": gf.summary() if gallery is not None else "the queries"}}


def run_linear_probe(model, weights: str, spec: DatasetSpec, cfg, cache: FeatureCache) -> dict[str, Any]:
    ds, lp = cfg.downstream, cfg.downstream.linear_probe
    train_split, eval_split = read_split(spec, spec.train_split), read_split(spec, spec.eval_split)
    if train_split.name == eval_split.name:
        raise ValueError(f"dataset {spec.name}: train_split and eval_split are both {train_split.name!r}")
    views = view_spec(model, cfg, spec.clips or lp.clips, spec.crops or lp.crops)
    tf = video_features(model, weights, spec, train_split, views, ds.features, cache)
    ef = video_features(model, weights, spec, eval_split, views, ds.features, cache)
    t_idx = _labelled(train_split, tf.ok)
    names = sorted({train_split.videos[i].label for i in t_idx})
    if len(names) < 2:
        raise ValueError(f"dataset {spec.name}: the {train_split.name} split has {len(names)} labelled class(es); "
                         "a probe needs at least 2")
    index = {n: k for k, n in enumerate(names)}
    e_all = _labelled(eval_split, ef.ok)
    e_idx = [i for i in e_all if eval_split.videos[i].label in index]
    if not e_idx:
        raise ValueError(f"dataset {spec.name}: no labelled {eval_split.name} video of a class the train split has")
    t_lab = torch.tensor([index[train_split.videos[i].label] for i in t_idx])
    e_lab = torch.tensor([index[eval_split.videos[i].label] for i in e_idx])
    train, test = torch.from_numpy(tf.cls[t_idx]), torch.from_numpy(ef.cls[e_idx])
    device = resolve_device(ds.features.device)
    runs = [probe_scores(train, t_lab, test, e_lab, len(names), lp, cfg.seed + s, device) for s in range(lp.seeds)]
    out: dict[str, Any] = {**_base("linear-probe", spec, eval_split, views), "train_split": train_split.name,
                           "classes": len(names), "train_videos": len(t_idx), "eval_videos": len(e_idx),
                           "eval_unknown_class": len(e_all) - len(e_idx)}
    for key in runs[0]:
        values = [r[key] for r in runs]
        out[key] = statistics.fmean(values)
        if key.startswith("top"):
            out[f"{key}_std"] = statistics.pstdev(values)
            out[f"{key}_per_seed"] = values
    counts = torch.bincount(e_lab, minlength=len(names))
    for k in [k for k in lp.ks if k <= len(names)] or [1]:
        out[f"chance_top{k}"] = 100.0 * k / len(names)
    out["majority_top1"] = 100.0 * float(counts.max()) / len(e_idx)   # always answering the commonest class
    out.update(seeds=lp.seeds, epochs=lp.epochs, lr=lp.lr, batch_size=lp.batch_size, train_on=lp.train_on,
               features={"train": tf.summary(), "eval": ef.summary()})
    return out


def run_task(task: str, model, tokenizer, weights: str, spec: DatasetSpec, cfg, cache: FeatureCache) -> dict:
    if task == "t2v":
        return run_t2v(model, tokenizer, weights, spec, cfg, cache)
    if task == "v2v":
        return run_v2v(model, weights, spec, cfg, cache)
    if task == "linear-probe":
        return run_linear_probe(model, weights, spec, cfg, cache)
    if task == "svo-probes":
        return run_svo(model, tokenizer, weights, spec, cfg, cache)
    raise ValueError(f"unknown downstream task {task!r}")


def _cached(result: dict) -> str:
    f = result.get("features", {})
    parts = [f] if "cached" in f else [v for v in f.values() if isinstance(v, dict)]
    return "from the cache" if parts and all(p.get("cached") for p in parts) else "extracted"


def table_lines(result: dict[str, Any]) -> list[str]:
    def num(key: str, fmt: str = "{:.2f}") -> str:
        return fmt.format(result[key]) if key in result else "-"

    if result["task"] == "svo-probes":
        return svo_lines(result) + [f"  features {_cached(result)}; {result.get('seconds', 0):.1f} s"]
    head = (f"{result['task']} on {result['dataset']} ({result['format']}, {result['split']} split, "
            f"{result['views']}, {result['frames']} frames at {result['image_size']}px; "
            f"{result.get('preset')}, {result.get('weights_from')})")
    lines = [head]
    if result["task"] == "t2v":
        cols = ("R@1", "R@5", "R@10", "MedR", "MeanR")
        lines.append(f"  {'':<14}" + "".join(f"{c:>8}" for c in cols))
        for label, prefix in (("text -> video", ""), ("video -> text", "v2t_")):
            lines.append(f"  {label:<14}" + "".join(f"{num(prefix + c):>8}" for c in cols))
        lines.append(f"  {result['queries']} {result['query']} queries, {result['videos']} videos; chance R@1 "
                     f"{num('chance_R@1')}% (v2t {num('v2t_chance_R@1')}%); ties {num('tied')}% of queries")
    elif result["task"] == "v2v":
        ks = [k.split("@")[1] for k in result if k.startswith("R@")]
        lines.append(f"  {'':<10}" + "".join(f"{'R@' + k:>8}" for k in ks))
        lines.append(f"  {'model':<10}" + "".join(f"{num('R@' + k):>8}" for k in ks))
        lines.append(f"  {'chance':<10}" + "".join(f"{num('chance_R@' + k):>8}" for k in ks))
        lines.append(f"  {int(result['queries'])} queries, gallery {int(result['gallery'])} videos of "
                     f"{result['gallery_split']}, {result['classes']} classes")
    else:
        ks = [k[3:] for k in result if k.startswith("top") and k[3:].isdigit()]
        spread = result.get("seeds", 1) > 1
        lines.append(f"  {'':<16}" + "".join(f"{'top-' + k:>14}" for k in ks))
        lines.append(f"  {'linear probe':<16}" + "".join(
            f"{num('top' + k) + (' ± ' + num('top' + k + '_std') if spread else ''):>14}" for k in ks))
        lines.append(f"  {'(train split)':<16}" + "".join(f"{num('train_top' + k):>14}" for k in ks))
        lines.append(f"  {'chance':<16}" + "".join(f"{num('chance_top' + k):>14}" for k in ks))
        lines.append(f"  {result['classes']} classes, {result['train_videos']} train / {result['eval_videos']} eval "
                     f"videos; {result['seeds']} seed(s), {result['epochs']} epochs; commonest class "
                     f"{num('majority_top1')}%")
    lines.append(f"  features {_cached(result)}; {result.get('seconds', 0):.1f} s")
    return lines
