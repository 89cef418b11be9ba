"""Evaluate a pretrained TVTS model on held-out samples:
`python -m training.evaluate --checkpoint DIR --task sort|t2v [--config FILE] [--set ...]`.

DIR is a training output.dir (its model_fp32.pt, or else its newest DeepSpeed checkpoint), a checkpoint
folder, or a .pt state_dict. Samples: data.eval_shards when given, else the videos of data.shards that
the run held out (the same video-id hash split the training loader used, so train and eval never share a
video). Evaluation transforms: bin-centre frames, centre crop.

Tasks
- sort: transcript sorting accuracy (a sample counts when all K transcripts are put in the right place,
  each transcript at the argmax of its K position scores; chance (1/K)^K = 1/256 for K = 4), with the
  pretraining mask ratio and without masking, plus the per-transcript position accuracy (chance 1/K).
  Beside it, as in the paper's appendix Table 6: text only (`*_text_only`: the sorter given the
  transcripts alone, no video tokens; row "T, SortTSF") and random guessing (`chance_*`); and a control,
  mismatched video (`*_other_video`: each sample's transcripts sorted against the frames of a sample of
  another video).
- t2v: text-to-video retrieval among the held-out samples: R@1/5/10 (%) and median rank. The query of a
  sample is the mean of its K projected transcript embeddings (what L_base trains; eval.text_query "mean")
  or its K transcripts joined into one text ("concat", like DiDeMo's paragraph-to-video).
Prints a table and writes <task>.json into output.dir (demo: data/demo-run/eval).
"""
from __future__ import annotations

import argparse
import dataclasses
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

TASKS = ("sort", "t2v")


def model_config_from_dict(data: dict):
    from training.model_config import ModelConfig, SortConfig, TextConfig, VideoConfig

    data = dict(data)
    return ModelConfig(**{**data, "video": VideoConfig(**data["video"]), "text": TextConfig(**data["text"]),
                          "sort": SortConfig(**data["sort"])})


def load_model(checkpoint: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(TVTS in eval mode with the checkpoint's fp32 weights, the run's info dict)."""
    from training import checkpoint as ckpt
    from training.model import TVTS

    path = Path(checkpoint)
    info_path, state = None, None
    if path.is_file():
        info_path = path.with_suffix(".json")
        state = torch.load(path, map_location="cpu", weights_only=True)
    elif (path / "model_fp32.pt").is_file():
        info_path = path / "model_fp32.json"
        state = torch.load(path / "model_fp32.pt", map_location="cpu", weights_only=True)
    else:
        found = ckpt.resolve_resume(str(path), path)     # newest complete DeepSpeed checkpoint
        root, tag = found
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)
        info_path = root / tag / "run.json"
    if info_path is None or not info_path.is_file():
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no model_fp32.json/run.json beside the weights "
                                "(give a training output.dir)")
    info = json.loads(info_path.read_text())
    if "config" in info and "holdout_fraction" not in info:      # run.json of a DeepSpeed checkpoint
        info["holdout_fraction"] = info["config"]["data"]["holdout_fraction"]
    cfg = model_config_from_dict(info["model"])
    # The checkpoint holds every video weight: building from video.init (an ImageMAE file, the DINOv2 ONNX
    # graph) would read that file only to overwrite it, and fail where it is not present.
    model = TVTS(dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, init=None)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"--checkpoint {checkpoint}: weights do not fit preset '{info.get('preset')}' "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), info


def retrieval_metrics(text_emb: torch.Tensor, video_emb: torch.Tensor) -> dict[str, float]:
    """Query i's true video is video i. Ranks are 1-based; ties count against the query."""
    sim = text_emb @ video_emb.t()                                  # [N, N]
    true = sim.diagonal().unsqueeze(1)                              # [N, 1]
    ranks = (sim > true).sum(dim=1) + 1                             # [N]
    out = {f"R@{k}": 100.0 * (ranks <= k).float().mean().item() for k in (1, 5, 10)}
    out["MedR"] = float(ranks.float().median().item())
    out["chance_R@1"] = 100.0 / len(ranks)
    return out


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
    guess = out["sort_logits"].argmax(dim=-1).sort(dim=-1).values                # [B, K]
    sums = {"samples": float(b),
            "sort_acc": out["sort_acc"].item() * b, "pos_acc": out["pos_acc"].item() * b,
            "sort_acc_unmasked": plain["sort_acc"].item() * b, "pos_acc_unmasked": plain["pos_acc"].item() * b,
            "sort_acc_text_only": text_only["sort_acc"].item() * b, "pos_acc_text_only": text_only["pos_acc"].item() * b,
            "permutation_rate": float((guess.diff(dim=-1) != 0).all(dim=-1).sum().item())}
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


@torch.no_grad()
def held_out_scores(model, batches, generator: torch.Generator, sort: bool = True) -> dict[str, float]:
    """What training logs every train.eval_every steps: the sort scores (%) of one pass over `batches`
    (unless `sort` is off: post-pretraining has no sort loss) and text-to-video retrieval among the
    same samples (mean-of-transcripts queries)."""
    sums: dict[str, float] = {"samples": 0.0}
    videos, texts = [], []
    for batch in batches:
        if sort:
            for key, value in sort_batch_sums(model, batch, generator).items():
                sums[key] = sums.get(key, 0.0) + value
        else:
            sums["samples"] += batch["video"].shape[0]
        videos.append(model.encode_video(batch["video"]))
        texts.append(model.encode_text(batch["text_ids"], batch["text_mask"]))
    if not videos:
        raise ValueError("no held-out samples to evaluate")
    retrieval = retrieval_metrics(torch.cat(texts).float(), torch.cat(videos).float())
    return {"samples": int(sums["samples"]), **sort_percentages(sums),
            "R@1": retrieval["R@1"], "R@5": retrieval["R@5"], "MedR": retrieval["MedR"]}


@torch.no_grad()
def evaluate(cfg, checkpoint: str, task: str) -> dict[str, Any]:
    from training.data import LoaderSettings, build_loader
    from training.model import build_tokenizer

    model, info = load_model(checkpoint)
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
    n = 0
    sums: dict[str, float] = {}
    videos, texts = [], []
    for repeat in range(cfg.eval.sort_repeats if task == "sort" else 1):
        loader.epoch, loader.epochs = 0, 1
        for batch in loader:
            b = batch["video"].shape[0]
            if task == "sort":
                for key, value in sort_batch_sums(model, batch, generator).items():
                    sums[key] = sums.get(key, 0.0) + value
            else:
                videos.append(model.encode_video(batch["video"]))
                if cfg.eval.text_query == "mean":
                    texts.append(model.encode_text(batch["text_ids"], batch["text_mask"]))
                else:
                    joined = [" ".join(t) for t in batch["transcripts"]]
                    tok = tokenizer(joined, max_length=min(512, settings.max_text_length * mcfg.num_transcripts),
                                    truncation=True, padding="longest", return_tensors="pt")
                    texts.append(model.encode_text(tok["input_ids"], tok["attention_mask"]))
            n += b
            if cfg.eval.max_samples and n >= cfg.eval.max_samples * (repeat + 1):
                break
    if n == 0:
        raise ValueError("no evaluation samples")
    k = mcfg.num_transcripts
    result: dict[str, Any] = {"task": task, "checkpoint": str(checkpoint), "preset": info.get("preset"),
                              "samples": n // (cfg.eval.sort_repeats if task == "sort" else 1),
                              "seconds": round(time.perf_counter() - start, 2),
                              "skipped": loader.skip_counts(),
                              "eval_data": data_cfg.eval_shards or f"held-out videos of {data_cfg.shards} "
                                                                 f"(fraction {data_cfg.holdout_fraction})"}
    if task == "sort":
        result.update(sort_percentages(sums))
        result["mask_ratio"] = mcfg.video.mask_ratio
        result["sort_head"] = mcfg.sort.head
        result["chance_sort_acc"] = 100.0 / k ** k
        # The spec's 1/K^K is for K independent guesses; a sorter that always predicts a permutation is
        # right by chance 1/K! of the time (4.2% for K = 4): compare with this when permutation_rate is high.
        result["chance_sort_acc_permutation"] = 100.0 / math.factorial(k)
        result["chance_pos_acc"] = 100.0 / k
    else:
        result.update(retrieval_metrics(torch.cat(texts), torch.cat(videos)))
        result["text_query"] = cfg.eval.text_query
    return result


def print_table(result: dict[str, Any]) -> None:
    rows = [(k, v) for k, v in result.items() if isinstance(v, (int, float))]
    width = max(len(k) for k, _ in rows)
    print(f"{result['task']} on {result['eval_data']} ({result['preset']}, {result['checkpoint']})")
    for key, value in rows:
        print(f"  {key:<{width}}  {value:.2f}" if isinstance(value, float) else f"  {key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="training output.dir, checkpoint folder or .pt file")
    parser.add_argument("--task", required=True, choices=TASKS)
    add_config_args(parser)
    args = parser.parse_args(argv)
    from common.cli import one_line
    from training.config import EvalConfig

    cfg = load_from_args(EvalConfig, args, job="evaluate")
    try:
        result = evaluate(cfg, args.checkpoint, args.task)
    except Exception as exc:  # noqa: BLE001 - one line and a non-zero exit
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    result["config"] = asdict(cfg)
    out = Path(cfg.output.dir) / f"{args.task}.json"
    write_json(out, result)
    print_table(result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
