"""Evaluate a pretrained TVTS model: `python -m training.evaluate --checkpoint DIR --task TASK [--dataset NAME]
[--random-init | --preset-init] [--config FILE] [--set ...]`, TASK one of sort, t2v, v2v, linear-probe,
svo-probes, finetune.

DIR is a training output.dir (its model_fp32.pt, or else its newest DeepSpeed checkpoint), a checkpoint
folder, or a .pt state_dict. `--random-init` evaluates the same preset with random weights (seed from the
config) instead: the baseline next to chance; `--preset-init` the preset as pretraining starts it (its
video.init image weights, its pretrained text tower, random projections and sorter): what the image
and text weights give before any video pretraining. This module is the CLI and the held-out tasks; the
downstream tasks are training/downstream_eval.py.

Held-out tasks (sort, and t2v without a dataset). Samples: data.eval_shards when given, else the videos
of data.shards that the run held out (the same video-id hash split the training loader used, so train
and eval never share a video). Evaluation transforms: bin-centre frames, centre crop.
- sort: transcript sorting accuracy (a sample counts when all K transcripts are put in the right place,
  each transcript at the argmax of its K position scores; chance (1/K)^K = 1/256 for K = 4), with the
  pretraining mask ratio and without masking, plus the per-transcript position accuracy (chance 1/K).
  Beside it, as in the paper's appendix Table 6: text only (`*_text_only`: the sorter given the
  transcripts alone, no video tokens; row "T, SortTSF") and random guessing (`chance_*`); and a control,
  mismatched video (`*_other_video`: each sample's transcripts sorted against the frames of a sample of
  another video).
- t2v: text-to-video retrieval among the held-out videos: R@1/5/10 (%), median and mean rank, and the
  video-to-text direction (`v2t_*`). Every held-out span is a query; the gallery has one entry per video
  (the normalised mean of its spans' video embeddings), so a query is right when it finds its own video,
  as in MSR-VTT's many captions per clip; the overlapping spans of one video are never each other's
  negatives. The query of a span is the mean of its K projected transcript embeddings (what L_base
  trains; eval.text_query "mean") or its K transcripts joined into one text ("concat", like DiDeMo's
  paragraph-to-video). Ranks: 1 + the videos scoring strictly higher (ties in the query's favour, as
  CLIP4Clip counts them; training/metrics.py), `tied` says how many queries had a tie.
eval.max_samples limits every pass (each sort repeat too) to the same first samples.

Downstream tasks, on a dataset of the config's `downstream.datasets` (--dataset NAME, or the task's
`downstream.<task>.dataset`), read from its official annotation files: t2v (MSR-VTT, MSVD, DiDeMo, LSMDC),
v2v (zero-shot video-to-video retrieval by class), linear-probe (UCF-101, HMDB-51, SSV2, K400) and
svo-probes (SVO-Probes, format svo: a sentence against a positive and a negative image, each image a clip
of itself repeated over the frames; precision per subject / verb / object at downstream.svo_probes.rhos,
0.2 / 0.25 / 0.3, and the pairwise accuracy; training/svo_probes.py). Video and image features are
cached per (weights, dataset files, views) under downstream.features.cache_dir, extracted in this
process or, with downstream.features.ray_actors N, on N Ray actors (training/ray_features.py).
- finetune (UCF-101, HMDB-51, SSV2, K400; training/finetune.py): the video tower and a linear head on
  [CLS] trained end to end through DeepSpeed (AdamW lr 1e-3, warmup + cosine, layer-wise lr decay, 100
  epochs, 50 for SSV2), top-1/top-5 over 2 x 3 test views. Checkpoints (and metrics.jsonl) in the folder
  finetune/ beside finetune.json; a rerun with the same settings resumes from the newest complete one.

Prints a table and writes <output.dir>[/random-init|/preset-init][/<dataset>]/<task>.json (demo:
data/demo-run/eval).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from common.atomic import write_json
from common.config import add_config_args, load_from_args
from training.metrics import grouped_retrieval, is_permutation

DOWNSTREAM_TASKS = ("v2v", "linear-probe", "svo-probes", "finetune")      # always on a dataset of downstream.datasets
TASKS = ("sort", "t2v", *DOWNSTREAM_TASKS)


def model_config_from_dict(data: dict):
    from training.model_config import LossConfig, ModelConfig, SortConfig, TextConfig, VideoConfig

    data = dict(data)
    return ModelConfig(**{**data, "video": VideoConfig(**data["video"]), "text": TextConfig(**data["text"]),
                          "sort": SortConfig(**data["sort"]),
                          "loss": LossConfig(**data.get("loss", {}))})   # checkpoints before the loss section


def _weights_source(checkpoint: str | Path):
    """(the run's info file, a function that loads the fp32 state_dict) of a checkpoint path."""
    from training import checkpoint as ckpt

    path = Path(checkpoint)
    if path.is_file():
        return path.with_suffix(".json"), lambda: torch.load(path, map_location="cpu", weights_only=True)
    if (path / "model_fp32.pt").is_file():
        return path / "model_fp32.json", lambda: torch.load(path / "model_fp32.pt", map_location="cpu",
                                                            weights_only=True)
    root, tag = ckpt.resolve_resume(str(path), path)     # newest complete DeepSpeed checkpoint

    def load() -> dict:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)

    return root / tag / "run.json", load


BASELINES = ("random-init", "preset-init")


def load_model(checkpoint: str | Path, baseline: str = "", seed: int = 0) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(TVTS in eval mode with the checkpoint's fp32 weights, the run's info dict).

    baseline "random-init": the same preset (the checkpoint's model config) with every weight drawn at
    random from `seed` (no video.init image weights, no pretrained text tower): the baseline that says what
    the weights learned at all. "preset-init": the preset as pretraining starts it (video.init, the
    pretrained text tower; the rest random from `seed`): what the video pretraining added. Either's
    weights are a function of (config, seed), so their features cache too."""
    from training.model import TVTS

    info_path, load_state = _weights_source(checkpoint)
    if info_path is None or not info_path.is_file():
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no model_fp32.json/run.json beside the weights "
                                "(give a training output.dir)")
    info = json.loads(info_path.read_text())
    if "config" in info and "holdout_fraction" not in info:      # run.json of a DeepSpeed checkpoint
        info["holdout_fraction"] = info["config"]["data"]["holdout_fraction"]
    cfg = model_config_from_dict(info["model"])
    if baseline == "preset-init":
        torch.manual_seed(seed)
        info["weights_from"] = f"preset init ({cfg.video.init or 'random'} video tower, text pretrained " \
                               f"{cfg.text.pretrained}; seed {seed})"
        return TVTS(cfg).eval(), info
    # The checkpoint holds every video weight: building from video.init (an ImageMAE file, the DINOv2 ONNX
    # graph) would read that file only to overwrite it, and fail where it is not present.
    cfg = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, init=None))
    if baseline == "random-init":
        cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, pretrained=False))
        torch.manual_seed(seed)
        info["weights_from"] = f"random init (seed {seed})"
        return TVTS(cfg).eval(), info
    if baseline:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    model = TVTS(cfg)
    missing, unexpected = model.load_state_dict(load_state(), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"--checkpoint {checkpoint}: weights do not fit preset '{info.get('preset')}' "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    info["weights_from"] = "checkpoint"
    return model.eval(), info


def sort_batch_sums(model, batch: dict, generator: torch.Generator) -> dict[str, float]:
    """One batch's sort scores, summed over its samples (sort_percentages turns the sums into %):
    with the pretraining mask and without masking; permutation_rate, the samples whose K predicted
    positions are all different; the text-only ablation (the sorter without video tokens, the paper's
    appendix Table 6 "T, SortTSF"); and the mismatched-video control: each sample's transcripts against
    the video of a sample from another video (skipped for a batch of one video)."""
    b = batch["video"].shape[0]
    out = model(batch, mode="pretrain", generator=generator)
    plain = model(batch, mode="pretrain", mask_ratio=0.0, generator=generator)
    text_only = model(batch, mode="pretrain", generator=generator, sort_with_video=False)
    sums = {"samples": float(b),
            "sort_acc": out["sort_acc"].item() * b, "pos_acc": out["pos_acc"].item() * b,
            "sort_acc_unmasked": plain["sort_acc"].item() * b, "pos_acc_unmasked": plain["pos_acc"].item() * b,
            "sort_acc_text_only": text_only["sort_acc"].item() * b, "pos_acc_text_only": text_only["pos_acc"].item() * b,
            "permutation_rate": float(is_permutation(out["sort_logits"]).sum().item())}
    partner = other_video_partner(batch.get("video_ids") or [str(i) for i in range(b)])
    if partner is not None:
        other = model(dict(batch, video=batch["video"][partner]), mode="pretrain", generator=generator)
        sums.update(other_video_samples=float(b), sort_acc_other_video=other["sort_acc"].item() * b,
                    pos_acc_other_video=other["pos_acc"].item() * b)
    return sums


def other_video_partner(video_ids: list[str]) -> torch.Tensor | None:
    """For each sample, the index of the next sample (cyclically) of ANOTHER video: overlapping spans of
    one video sit side by side in a batch and show the same scenes, so they would not ablate the video.
    None when the batch holds a single video."""
    n = len(video_ids)
    partner = []
    for i in range(n):
        j = next((k % n for k in range(i + 1, i + n) if video_ids[k % n] != video_ids[i]), None)
        if j is None:
            return None
        partner.append(j)
    return torch.tensor(partner, dtype=torch.long)


def sort_percentages(sums: dict[str, float]) -> dict[str, float]:
    """Summed sort scores -> % of the samples (the mismatched-video ones of the samples that had a partner)."""
    out = {}
    for key, value in sums.items():
        if key.endswith("samples"):
            continue
        total = sums.get("other_video_samples" if key.endswith("_other_video") else "samples", 0.0)
        if total:
            out[key] = 100.0 * value / total
    return out


def keys_digest(keys: list[str]) -> str:
    """A short fingerprint of the samples scored: equal in two results when they scored the same samples."""
    return hashlib.sha1("\n".join(keys).encode("utf-8")).hexdigest()[:12]


@torch.no_grad()
def held_out_scores(model, batches, generator: torch.Generator, sort: bool = True) -> dict[str, Any]:
    """What training logs every train.eval_every steps: the sort scores (%) of one pass over `batches`
    (unless `sort` is off: post-pretraining has no sort loss) and text-to-video retrieval among the
    same samples (mean-of-transcripts queries, one gallery entry per video). `keys`: the samples scored."""
    sums: dict[str, float] = {"samples": 0.0}
    videos, texts, video_ids, keys = [], [], [], []
    for batch in batches:
        if sort:
            for key, value in sort_batch_sums(model, batch, generator).items():
                sums[key] = sums.get(key, 0.0) + value
        else:
            sums["samples"] += batch["video"].shape[0]
        videos.append(model.encode_video(batch["video"]))
        texts.append(model.encode_text(batch["text_ids"], batch["text_mask"]))
        video_ids += batch["video_ids"]
        keys += batch["keys"]
    if not videos:
        from training.data import DataError

        raise DataError("no held-out samples to evaluate")
    retrieval = grouped_retrieval(torch.cat(texts), torch.cat(videos), video_ids)
    return {"samples": int(sums["samples"]), "videos": int(retrieval["gallery"]), **sort_percentages(sums),
            "R@1": retrieval["R@1"], "R@5": retrieval["R@5"], "MedR": retrieval["MedR"], "keys": keys}


@torch.no_grad()
def evaluate(cfg, checkpoint: str, task: str, baseline: str = "") -> dict[str, Any]:
    """sort or t2v on the held-out samples of the run (or data.eval_shards)."""
    from training.data import LoaderSettings, build_loader, first_samples
    from training.model import build_tokenizer

    model, info = load_model(checkpoint, baseline, cfg.seed)
    mcfg = model.cfg
    data_cfg = cfg.data
    if not data_cfg.eval_shards and "holdout_fraction" in info and info["holdout_fraction"] != data_cfg.holdout_fraction:
        print(f"note: using the run's hold-out fraction {info['holdout_fraction']} (config says "
              f"{data_cfg.holdout_fraction}) so that no training video is evaluated", file=sys.stderr)
        data_cfg.holdout_fraction = info["holdout_fraction"]
    if not data_cfg.eval_shards and data_cfg.holdout_fraction <= 0:
        raise ValueError("no held-out samples: the run trained on every video (data.holdout_fraction 0); "
                         "give data.eval_shards")
    tokenizer = build_tokenizer(mcfg)
    settings = LoaderSettings(batch_size=cfg.eval.batch_size, frames=mcfg.video.frames,
                              image_size=mcfg.video.image_size, num_transcripts=mcfg.num_transcripts,
                              split="eval", seed=cfg.seed,
                              max_text_length=data_cfg.max_text_length or mcfg.text.max_length)
    loader = build_loader(data_cfg, settings, tokenizer, epochs=1)
    generator = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    sums: dict[str, float] = {}
    videos, texts, video_ids, keys = [], [], [], []
    for _ in range(cfg.eval.sort_repeats if task == "sort" else 1):
        keys = []          # every repeat scores the same samples, with fresh shuffles and masks
        for batch in first_samples(loader, cfg.eval.max_samples):
            keys += batch["keys"]
            if task == "sort":
                for key, value in sort_batch_sums(model, batch, generator).items():
                    sums[key] = sums.get(key, 0.0) + value
                continue
            videos.append(model.encode_video(batch["video"]))
            video_ids += batch["video_ids"]
            if cfg.eval.text_query == "mean":
                texts.append(model.encode_text(batch["text_ids"], batch["text_mask"]))
            else:
                joined = [" ".join(t) for t in batch["transcripts"]]
                tok = tokenizer(joined, max_length=min(512, settings.max_text_length * mcfg.num_transcripts),
                                truncation=True, padding="longest", return_tensors="pt")
                texts.append(model.encode_text(tok["input_ids"], tok["attention_mask"]))
    if not keys:
        raise ValueError("no evaluation samples")
    k = mcfg.num_transcripts
    result: dict[str, Any] = {"task": task, "checkpoint": str(checkpoint), "preset": info.get("preset"),
                              "weights_from": info.get("weights_from", "checkpoint"), "samples": len(keys), "samples_sha1": keys_digest(keys),
                              "seconds": round(time.perf_counter() - start, 2),
                              "skipped": loader.skip_counts(),
                              "eval_data": data_cfg.eval_shards or f"held-out videos of {data_cfg.shards} "
                                                                 f"(fraction {data_cfg.holdout_fraction})"}
    if task == "sort":
        result.update(sort_percentages(sums))
        result["sort_repeats"] = cfg.eval.sort_repeats
        result["mask_ratio"] = mcfg.video.mask_ratio
        result["sort_head"] = mcfg.sort.head
        result["chance_sort_acc"] = 100.0 / k ** k
        # The spec's 1/K^K is for K independent guesses; a sorter that always predicts a permutation is
        # right by chance 1/K! of the time (4.2% for K = 4): compare with this when permutation_rate is high.
        result["chance_sort_acc_permutation"] = 100.0 / math.factorial(k)
        result["chance_pos_acc"] = 100.0 / k
    else:
        retrieval = grouped_retrieval(torch.cat(texts), torch.cat(videos), video_ids)
        result["videos"] = int(retrieval.pop("gallery"))
        retrieval.pop("queries")
        result.update(retrieval)
        result["rank_ties"] = "optimistic"
        result["text_query"] = cfg.eval.text_query
    return result


def sort_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(label, sort key, position key) of appendix Table 6 and its controls, in the order printed."""
    mask = result.get("mask_ratio", 0.0)
    return [(f"text + video (mask {mask:.0%})", "sort_acc", "pos_acc"),
            ("text + video (no mask)", "sort_acc_unmasked", "pos_acc_unmasked"),
            ("text only (T, SortTSF)", "sort_acc_text_only", "pos_acc_text_only"),
            ("control: another video's frames", "sort_acc_other_video", "pos_acc_other_video"),
            ("random: K independent guesses", "chance_sort_acc", "chance_pos_acc"),
            ("random: a permutation (1/K!)", "chance_sort_acc_permutation", "chance_pos_acc")]


def table_lines(result: dict[str, Any]) -> list[str]:
    """The short table `print_table` prints: Table 6 side by side for sort, both directions for t2v."""
    def pct(key: str) -> str:
        return f"{result[key]:.2f}%" if key in result else "-"

    lines = [f"{result['task']} on {result['eval_data']} ({result['preset']}, {result['checkpoint']}"
             f"{'' if result.get('weights_from', 'checkpoint') == 'checkpoint' else ': ' + result['weights_from']})"]
    if result["task"] == "sort":
        rows = [(label, pct(a), pct(b)) for label, a, b in sort_rows(result) if a in result]
        width = max(len(label) for label, _, _ in rows)
        lines.append(f"  {'':<{width}}  {'sort (all K)':>12}  {'position':>9}")
        lines += [f"  {label:<{width}}  {a:>12}  {b:>9}" for label, a, b in rows]
        lines.append(f"  {result['samples']} samples x {result.get('sort_repeats', 1)} repeats; "
                     f"guesses that are orderings {pct('permutation_rate')}; head '{result.get('sort_head')}'")
    else:
        cols = ("R@1", "R@5", "R@10", "MedR", "MeanR")
        lines.append(f"  {'':<14}" + "".join(f"{c:>8}" for c in cols))
        for label, prefix in (("text -> video", ""), ("video -> text", "v2t_")):
            cells = [f"{result[prefix + c]:.2f}" if prefix + c in result else "-" for c in cols]
            lines.append(f"  {label:<14}" + "".join(f"{c:>8}" for c in cells))
        lines.append(f"  {result['samples']} queries, {result.get('videos')} videos (one gallery entry each); chance "
                     f"R@1 {pct('chance_R@1')}; ties ({result.get('rank_ties')}) {pct('tied')} of queries")
    lines.append(f"  {result['seconds']:.1f} s; samples_sha1 {result.get('samples_sha1')}")
    return lines


def print_table(result: dict[str, Any]) -> None:
    if result.get("task") == "finetune":
        from training.finetune import table_lines as finetune_lines

        print("\n".join(finetune_lines(result)))
    elif "dataset" in result:
        from training.downstream_eval import table_lines as downstream_lines

        print("\n".join(downstream_lines(result)))
    else:
        print("\n".join(table_lines(result)))


def evaluate_downstream(cfg, checkpoint: str, task: str, dataset: str, baseline: str = "") -> dict[str, Any]:
    """t2v, v2v, linear-probe or svo-probes on one dataset of the config's downstream.datasets
    (training/downstream_eval.py)."""
    from training.downstream_eval import run_task
    from training.features_cache import FeatureCache, weights_digest
    from training.model import build_tokenizer

    spec = cfg.downstream.dataset(dataset, task)
    model, info = load_model(checkpoint, baseline, cfg.seed)
    start = time.perf_counter()
    features = cfg.downstream.features
    cache = FeatureCache((features.cache_dir or Path(cfg.output.dir) / "features") if features.cache else None)
    tokenizer = build_tokenizer(model.cfg) if task in ("t2v", "svo-probes") else None
    result = run_task(task, model, tokenizer, weights_digest(model), spec, cfg, cache)
    return {**result, "checkpoint": str(checkpoint), "preset": info.get("preset"),
            "weights_from": info.get("weights_from", "checkpoint"), "seconds": round(time.perf_counter() - start, 2)}


def evaluate_finetune(cfg, checkpoint: str, dataset: str, baseline: str = "") -> dict[str, Any] | None:
    """finetune on a classification dataset (training/finetune.py); its checkpoints and metrics.jsonl go to
    the folder `finetune/` beside finetune.json. None on ranks other than 0."""
    from training.finetune import run_finetune

    spec = cfg.downstream.dataset(dataset, "finetune")
    model, info = load_model(checkpoint, baseline, cfg.seed)
    start = time.perf_counter()
    run_dir = output_path(cfg, "finetune", spec.name, baseline).with_suffix("")
    result = run_finetune(model, {**info, "checkpoint": str(checkpoint)}, spec, cfg, run_dir)
    if result is None:
        return None
    return {**result, "checkpoint": str(checkpoint), "preset": info.get("preset"),
            "weights_from": info.get("weights_from", "checkpoint"), "seconds": round(time.perf_counter() - start, 2)}


def output_path(cfg, task: str, dataset: str, baseline: str = "") -> Path:
    """<output.dir>[/<baseline>][/<dataset>]/<task>.json: the held-out results keep their place, a
    dataset's and the baselines' sit beside them without overwriting."""
    out = Path(cfg.output.dir)
    if baseline:
        out = out / baseline
    if dataset:
        out = out / dataset
    return out / f"{task}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="training output.dir, checkpoint folder or .pt file")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--dataset", default="", help="a name in the config's downstream.datasets (t2v, v2v, "
                        "linear-probe, svo-probes, finetune); t2v without it: the held-out pretraining samples")
    init = parser.add_mutually_exclusive_group()
    init.add_argument("--random-init", action="store_const", const="random-init", dest="baseline", default="",
                      help="the checkpoint's preset with random weights (seed from the config), the baseline; "
                           "results go to <output.dir>/random-init/")
    init.add_argument("--preset-init", action="store_const", const="preset-init", dest="baseline",
                      help="the preset as pretraining starts it (its video.init and pretrained text tower, the "
                           "rest random); results go to <output.dir>/preset-init/")
    add_config_args(parser)
    args = parser.parse_args(argv)
    from common.cli import one_line
    from training.config import EvalConfig

    cfg = load_from_args(EvalConfig, args, job="evaluate")
    dataset = args.dataset or (cfg.downstream.t2v.dataset if args.task == "t2v" else "")
    try:
        if args.task == "finetune":
            result = evaluate_finetune(cfg, args.checkpoint, dataset, args.baseline)
            if result is None:                   # another rank of a launcher run: rank 0 writes
                return 0
            dataset = result["dataset"]
        elif args.task in DOWNSTREAM_TASKS or dataset:
            if args.task == "sort":
                raise ValueError("--dataset: sort scores the held-out pretraining samples, not a downstream set")
            result = evaluate_downstream(cfg, args.checkpoint, args.task, dataset, args.baseline)
            dataset = result["dataset"]
        else:
            result = evaluate(cfg, args.checkpoint, args.task, args.baseline)
    except Exception as exc:  # noqa: BLE001 - one line and a non-zero exit
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    result["config"] = asdict(cfg)
    out = output_path(cfg, args.task, dataset, args.baseline)
    write_json(out, result)
    print_table(result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    code = main()
    if "torch.distributed" in sys.modules:      # finetune's process group (DeepSpeed)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    sys.exit(code)
