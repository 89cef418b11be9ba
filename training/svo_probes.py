"""`--task svo-probes` (TVTS-SPEC.md, "Evaluation"): SVO-Probes on a dataset of format `svo`
(common/downstream_svo.py: our jsonl, or the release's csv with its images downloaded).

A probe is a sentence with a positive image (it shows what the sentence says) and a negative image that
differs in one of the subject, the verb or the object (`neg_type`). Both images and the sentence go
into the joint space L_base trains, as t2v embeds a video and a caption:
- image: a still video, the image repeated over the T frames the video tower takes (training/
  video_views.py's `image_views`: resize the short side to S * data.resize_short, centre crop S), its
  [CLS] through video_proj, L2-normalised;
- sentence: the text tower's projected, normalised embedding (`encode_text`, as t2v's captions).
The image counts as positive when cos(text, image) > rho, for each rho of `downstream.svo_probes.rhos`
(the spec's 0.2, 0.25, 0.3). Per negative type and overall (training/metrics.py's `svo_metrics`):
precision = TP / (TP + FP) with TP the positive images above rho and FP the negative images above rho
(null, not 0 or 100, when no image is above rho: nothing was predicted positive), recall TP / probes,
accuracy over both images, and the pairwise accuracy cos(pos) > cos(neg), which needs no rho. Chance is
50% for precision and pairwise accuracy (one positive and one negative image per probe). Cosines of
another model (CLIP's ~0.3) are not this model's scale: a rho that puts every image above or below it
says little, which is why the mean cosines and the pairwise accuracy are reported beside it.

Image features are extracted once per (weights, image files, frames, size) and cached like the video
features (training/downstream_features.py: batched, progress bar, Ray actors when asked); a probe with
an image that is missing or cannot be read is left out and counted.
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch

from common.downstream_svo import SVO_TYPES, read_svo
from training.downstream_features import extract_features, resolve_device, text_features
from training.eval_config import DatasetSpec
from training.features_cache import FeatureCache, files_digest
from training.metrics import SVO_DEFINITIONS, svo_metrics
from training.video_views import VideoDecodeError, ViewSpec, image_views

__all__ = ["run_svo", "table_lines"]


class _ImagesDataset(torch.utils.data.Dataset):
    """Image i -> (i, [1, 3, T, S, S] or None, error class, message), as downstream_features' videos."""

    def __init__(self, paths: list[str], spec: ViewSpec):
        self.paths, self.spec = paths, spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, image_views(self.paths[i], self.spec), "", ""
        except VideoDecodeError as exc:
            return i, None, exc.error_class, str(exc)


def run_svo(model, tokenizer, weights: str, spec: DatasetSpec, cfg, cache: FeatureCache) -> dict[str, Any]:
    from training.data import DataError

    ds, svo = cfg.downstream, cfg.downstream.svo_probes
    read = read_svo(spec.name, list(spec.annotations), spec.video_root)
    probes = read.probes[:spec.max_videos] if spec.max_videos else read.probes
    if not probes:
        raise DataError(f"dataset {spec.name}: no probes in {spec.annotations} ({read.bad_rows} bad rows; e.g. "
                        f"{read.errors[:1]})")
    missing = sum(1 for p in probes if not (p.pos_path and p.neg_path))
    paths = list(dict.fromkeys(path for p in probes for path in (p.pos_path, p.neg_path) if path))
    v = model.cfg.video
    views = ViewSpec(frames=v.frames, image_size=v.image_size, resize_short=cfg.data.resize_short)
    key = {"weights": weights, "dataset": spec.name, "format": spec.format, "images": files_digest(paths),
           "paths": hashlib.sha1("\n".join(paths).encode()).hexdigest(), "views": {
               "frames": views.frames, "image_size": views.image_size, "resize_short": views.resize_short}}
    feats = extract_features(model, _ImagesDataset(paths, views), len(paths), 1, key, ds.features, cache,
                             f"images {spec.name}", "image", unit="image")
    row = {path: i for i, path in enumerate(paths)}
    keep = [p for p in probes if p.pos_path and p.neg_path and feats.ok[row[p.pos_path]] and feats.ok[row[p.neg_path]]]
    if not keep:
        raise DataError(f"dataset {spec.name}: none of its {len(probes)} probes has both images readable "
                        f"({missing} with a missing file, {dict(feats.failures)}); check the image paths "
                        f"(downstream.datasets[{spec.name}].video_root for a csv)")
    sentences = list(dict.fromkeys(p.sentence for p in keep))
    max_len = svo.max_text_length or model.cfg.text.max_length
    text_emb, text_cached = text_features(model, tokenizer, weights, sentences, max_len, ds.features, cache,
                                          f"{spec.name}/sentences")
    with torch.no_grad():
        device = resolve_device(ds.features.device)
        cls = torch.from_numpy(feats.cls[:, 0]).to(device)
        image_emb = torch.nn.functional.normalize(model.video_proj(cls).float(), dim=-1).cpu()
    sentence_row = {sentence: i for i, sentence in enumerate(sentences)}
    text = torch.from_numpy(text_emb)[torch.tensor([sentence_row[p.sentence] for p in keep])]
    pos = image_emb[torch.tensor([row[p.pos_path] for p in keep])]
    neg = image_emb[torch.tensor([row[p.neg_path] for p in keep])]
    cos_pos, cos_neg = (text * pos).sum(-1), (text * neg).sum(-1)
    metrics = svo_metrics(cos_pos, cos_neg, [p.neg_type for p in keep], svo.rhos, SVO_TYPES)
    return {"task": "svo-probes", "dataset": spec.name, "format": spec.format, "split": "all",
            "views": "1 image repeated over the frames (1 x 1 view)", "frames": views.frames,
            "image_size": views.image_size, "rhos": list(svo.rhos), "types": list(SVO_TYPES),
            "probes_read": len(probes), "bad_rows": read.bad_rows,
            "probes_left_out": len(probes) - len(keep), "probes_missing_image": missing,
            "sentences": len(sentences), "images": len(paths), "max_text_length": max_len,
            **metrics, "definitions": SVO_DEFINITIONS,
            "features": {**_image_summary(feats.summary()), "text_cached": text_cached}}


def _image_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The video features' summary, counting images."""
    return {("images" if key == "videos" else key): value for key, value in summary.items()}


def table_lines(result: dict[str, Any]) -> list[str]:
    """Rows of metrics, columns subject / verb / object / all; "-" where precision is null."""
    types = result.get("types", list(SVO_TYPES))

    def cell(key: str) -> str:
        value = result.get(key)
        return "-" if value is None else f"{value:.2f}"

    cols = [*types, "all"]
    suffix = {t: f"_{t}" for t in types} | {"all": ""}
    rows = [("pairwise acc", "pairwise_acc")]
    rows += [(f"{m} rho {r:g}", f"{m}@{r:g}") for m in ("precision", "recall") for r in result["rhos"]]
    rows += [("mean cos pos", "cos_pos_mean"), ("mean cos neg", "cos_neg_mean")]
    lines = [f"svo-probes on {result['dataset']} ({result['format']}, {result['probes']} probes: "
             + " / ".join(f"{result['probes_' + t]} {t}" for t in types)
             + f"; {result['frames']} frames of one image at {result['image_size']}px; {result.get('preset')}, "
             f"{result.get('weights_from')})",
             f"  {'':<18}" + "".join(f"{c:>9}" for c in cols)]
    lines += [f"  {label:<18}" + "".join(f"{cell(key + suffix[c]):>9}" for c in cols) for label, key in rows]
    lines.append(f"  % of probes; precision = TP / (TP + FP) over the images with cos > rho ('-': none above "
                 f"rho); chance {result['chance_precision']:.0f}% for precision and pairwise accuracy")
    if result.get("probes_left_out"):
        lines.append(f"  {result['probes_left_out']} probes left out ({result['probes_missing_image']} with a "
                     f"missing image file)")
    return lines
