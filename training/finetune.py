"""The fine-tuning evaluation (`python -m training.evaluate --task finetune`; TVTS-SPEC.md, "Evaluation": AdamW
lr 1e-3, 50 epochs SSV2 / 100 others, 2 clips x 3 crops at test, 5 x 3 for K400).

    the checkpoint's video tower + Linear(Dv, classes) on [CLS] (`pool: mean`: the mean patch token),
    head init N(0, 0.02) x 0.001 (VideoMAE: the first logits are ~0, the first loss ~ln(classes))
    -> DeepSpeed engine (the recipe JSON of downstream.finetune.deepspeed; one bare `python` process is
       a one-rank job, a launcher's ranks split every epoch's videos), torch AdamW with one parameter
       group per (layer, decay or not) for layer-wise lr decay, linear warmup then cosine decay per step
    -> per step: a batch of augmented training clips (video_views.decode_train_clip: a random frame in
       each of the T bins, a random square crop, a mirror unless the classes name a direction),
       cross-entropy with label smoothing, engine.backward, engine.step
    -> every checkpoint_every steps (0: each epoch's end) and at the end: a checkpoint in
       <results folder>/finetune/checkpoints/stepNNNNNNNN, committed by complete.json as pretraining's
       (checkpoint.py); a rerun with the same settings resumes from the newest complete one (resume.py:
       unreadable ones are passed over), another setup is a one-line error
    -> rank 0: every eval-split video's clips x crops views (the linear probe's, video_views.decode_views),
       their logits averaged, top-1/top-5 next to chance.

Training is a pure function of (weights, dataset, settings, seed): the order of epoch e is a permutation
seeded by (seed, e) and the augmentation of video i in epoch e is seeded by (seed, e, i), so a resumed run
takes the same batches as one that was never stopped. metrics.jsonl (step, epoch, loss, train_top1, lr)
sits beside the checkpoints. Frames and size are the preset's (video.frames, video.image_size), as for
every other task: the spec's 16 frames are the paper's base preset.

Not done: mixup/cutmix, RandAugment, drop path, repeated augmentation, model EMA (VideoMAE has them; the
spec names only the optimizer, lr, epochs and views).
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training import checkpoint as ckpt
from training import resume as resume_from
from training.downstream_features import ViewsDataset, read_split
from training.eval_config import DatasetSpec, FinetuneSettings
from training.metrics import topk_accuracy
from training.runtime import MetricsSink, log, quiet_cpu_run, read_recipe, seed_everything, setup_distributed
from training.video_views import VideoDecodeError, ViewSpec, decode_train_clip

__all__ = ["Classifier", "param_groups", "lr_factor", "epoch_batches", "lock_run_dir", "run_finetune", "table_lines"]

NO_DECAY = ("cls_token", "pos_embed", "temporal_embed")


class Classifier(nn.Module):
    """video [B, 3, T, S, S] -> class logits [B, C]: the video tower and a linear head."""

    def __init__(self, video: nn.Module, classes: int, pool: str = "cls"):
        super().__init__()
        self.video, self.pool = video, pool
        self.head = nn.Linear(video.cfg.dim, classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        with torch.no_grad():
            self.head.weight.mul_(0.001)
        nn.init.zeros_(self.head.bias)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.video(video)                                   # [B, 1 + t*n, Dv], no masking
        feature = tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(dim=1)
        return self.head(feature)


def _layer(name: str, depth: int) -> int:
    """VideoMAE's layer ids: embeddings 0, block i i + 1, the final norm and the head depth + 1."""
    if name.startswith("video.blocks."):
        return int(name.split(".")[2]) + 1
    if name.startswith(("video.patch_embed", "video.cls_token", "video.pos_embed", "video.temporal_embed")):
        return 0
    return depth + 1


def param_groups(model: Classifier, ft: FinetuneSettings) -> list[dict[str, Any]]:
    """AdamW groups: lr x layer_decay^(depth + 1 - layer), weight decay off for biases, norms, embeddings."""
    depth = len(model.video.blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim > 1 and not name.endswith(".bias") and name.split(".")[-1] not in NO_DECAY
        layer = _layer(name, depth)
        group = groups.setdefault((layer, decay), {
            "params": [], "lr": ft.lr * ft.layer_decay ** (depth + 1 - layer),
            "weight_decay": ft.weight_decay if decay else 0.0, "name": f"layer{layer}{'' if decay else '_no_decay'}"})
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def lr_factor(total: int, warmup: int):
    """Multiplier of each group's lr after `step` optimizer steps: linear warmup, then cosine to 0."""
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return factor


def epoch_batches(n: int, epoch: int, seed: int, batch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This rank's batches of video indices in epoch `epoch`: a permutation seeded by (seed, epoch), padded by
    wrapping to a multiple of the ranks, every world-th index from `rank`. Every rank gets as many."""
    order = np.random.default_rng([seed, epoch]).permutation(n).tolist()
    order += order[:(-len(order)) % world]
    mine = order[rank::world]
    return [mine[i:i + batch] for i in range(0, len(mine), batch)]


class _TrainClips(torch.utils.data.Dataset):
    """(video index, epoch) -> (index, clip or None, error class): decode errors are values (one broken
    file does not stop the loader) and are counted."""

    def __init__(self, videos, spec: ViewSpec, ft: FinetuneSettings, flip: bool):
        self.videos, self.spec, self.ft, self.flip = videos, spec, ft, flip

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, item: tuple[int, int]):
        i, epoch = item
        video = self.videos[i]
        if not video.path:
            return i, None, "no_video_file"
        rng = random.Random(f"{self.ft.seed}:{epoch}:{i}")
        try:
            return i, decode_train_clip(video.path, self.spec, rng, tuple(self.ft.crop_scale), self.flip), ""
        except VideoDecodeError as exc:
            return i, None, exc.error_class


def _as_list(items: list) -> list:
    return items


class _Batches:
    """The batch sampler of steps start..stop: lists of (video index, epoch), made lazily per epoch."""

    def __init__(self, n: int, per_epoch: int, start: int, stop: int, ft: FinetuneSettings, rank: int, world: int):
        self.n, self.per_epoch, self.start, self.stop, self.ft = n, per_epoch, start, stop, ft
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        step = self.start
        while step < self.stop:
            epoch = step // self.per_epoch
            batches = epoch_batches(self.n, epoch, self.ft.seed, self.ft.batch_size, self.rank, self.world)
            for batch in batches[step % self.per_epoch:]:
                if step >= self.stop:
                    return
                yield [(i, epoch) for i in batch]
                step += 1


def _identity(source: str, spec: DatasetSpec, ft: FinetuneSettings, epochs: int, flip: bool,
              names: list[str], n_train: int) -> dict[str, Any]:
    """What a checkpoint must have been trained with to be continued (not max_steps, views, logging)."""
    train = {k: v for k, v in asdict(ft).items() if k in (
        "batch_size", "lr", "weight_decay", "betas", "warmup_epochs", "layer_decay", "label_smoothing", "pool",
        "crop_scale", "seed")}
    return {"source_weights": source, "dataset": {"name": spec.name, "format": spec.format, "annotations":
            list(spec.annotations), "train_split": spec.train_split, "max_videos": spec.max_videos},
            "train": {**train, "epochs": epochs, "flip": flip}, "classes": names, "train_videos": n_train}


def _check_same_run(found, run_info: dict, run_dir: Path) -> None:
    saved = json.loads((Path(found.root) / found.tags[0] / "run.json").read_text()).get("finetune", {})
    mine = run_info["finetune"]
    diff = [f"train.{k}" for k in mine["train"] if saved.get("train", {}).get(k) != mine["train"][k]]
    diff += [k for k in mine if k != "train" and saved.get(k) != mine[k]]
    if diff:
        raise ckpt.ResumeError(f"{run_dir / 'checkpoints'} was fine-tuned with other {', '.join(diff)}: set "
                               "downstream.finetune.resume=false to start over, or another output.dir")


def _save(engine, store: ckpt.RunStore, step: int, rank: int, state: dict, run_info: dict, keep_last: int) -> None:
    """The pretraining checkpoint convention: DeepSpeed's files and each rank's state, then complete.json."""
    import torch.distributed as dist

    tag = ckpt.tag_for(step)
    if rank == 0:
        ckpt.clear_tag(store.root, tag)          # what a killed save left under this tag
    dist.barrier()
    engine.save_checkpoint(str(store.local_root), tag=tag)
    ckpt.save_rank_state(store.local_root / tag, rank, state)
    dist.barrier()
    if rank == 0:
        ckpt.mark_complete(store.root / tag, step, run_info)
        ckpt.prune(store.root, keep_last)
    dist.barrier()


def _labelled(split, names: list[str] | None = None) -> list[int]:
    return [i for i, v in enumerate(split.videos) if v.label and (names is None or v.label in names)]


def lock_run_dir(run_dir: Path):
    """rank 0 holds run_dir/lock while it runs: two runs in one folder would delete each other's tags."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / "lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ckpt.ResumeError(f"{run_dir}: another finetune run holds its lock; wait for it to end, or set "
                               "another output.dir") from None
    return handle


def run_finetune(model, info: dict, spec: DatasetSpec, cfg, run_dir: Path) -> dict[str, Any] | None:
    """Fine-tune `model`'s video tower on spec's train split, test on its eval split; rank 0's result
    (other ranks None). Checkpoints and metrics.jsonl go to run_dir."""
    quiet_cpu_run()                                # before DeepSpeed picks its accelerator
    rank, world = setup_distributed(1800)
    lock = lock_run_dir(run_dir) if rank == 0 else None
    try:
        return _finetune(model, info, spec, cfg, run_dir, rank, world)
    finally:
        if lock is not None:
            lock.close()


def _finetune(model, info: dict, spec: DatasetSpec, cfg, run_dir: Path, rank: int, world: int) -> dict | None:
    import deepspeed
    import torch.distributed as dist

    from training.features_cache import weights_digest

    ft = cfg.downstream.finetune
    train_split, eval_split = read_split(spec, spec.train_split), read_split(spec, spec.eval_split)
    if train_split.name == eval_split.name:
        raise ValueError(f"dataset {spec.name}: train_split and eval_split are both {train_split.name!r}")
    t_idx = _labelled(train_split)
    names = sorted({train_split.videos[i].label for i in t_idx})
    if len(names) < 2:
        raise ValueError(f"dataset {spec.name}: the {train_split.name} split has {len(names)} labelled class(es); "
                         "fine-tuning needs at least 2")
    index = {n: k for k, n in enumerate(names)}
    train_videos = [train_split.videos[i] for i in t_idx]
    labels = torch.tensor([index[v.label] for v in train_videos])
    epochs = ft.epochs or (50 if spec.format == "ssv2" else 100)
    flip = ft.flip if ft.flip is not None else spec.format != "ssv2"
    per_epoch = len(epoch_batches(len(train_videos), 0, ft.seed, ft.batch_size, rank, world))
    total = epochs * per_epoch
    stop = min(total, ft.max_steps) if ft.max_steps else total
    every = ft.checkpoint_every or per_epoch

    identity = _identity(weights_digest(model.video), spec, ft, epochs, flip, names, len(train_videos))
    run_info = {"preset": info.get("preset"), "model": json.loads(json.dumps(asdict(model.cfg))),
                "world_size": world, "mode": "finetune", "finetune": identity,
                "checkpoint": info.get("checkpoint", ""), "weights_from": info.get("weights_from", "checkpoint")}
    store = ckpt.RunStore(run_dir, rank)
    if not ft.resume:
        if rank == 0:
            shutil.rmtree(store.root, ignore_errors=True)
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        dist.barrier()
    found = resume_from.choose(None, store, run_info, total, rank, world, log)
    if found is not None:
        _check_same_run(found, run_info, run_dir)

    seed_everything(ft.seed, 0)                    # the same head on every rank
    classifier = Classifier(model.video, len(names), ft.pool)
    seed_everything(ft.seed, rank)
    ds = read_recipe(ft.deepspeed, "downstream.finetune.deepspeed")
    ds = {k: v for k, v in ds.items() if k not in ("optimizer", "scheduler")}
    if ds.get("zero_optimization", {}).get("stage", 0) > 2:
        raise ValueError("downstream.finetune.deepspeed: ZeRO stage 3 is not supported (rank 0 tests the whole "
                         "model alone); use a stage 0-2 recipe")
    ds.update(train_micro_batch_size_per_gpu=ft.batch_size, gradient_accumulation_steps=1,
              train_batch_size=ft.batch_size * world, steps_per_print=10 ** 9, wall_clock_breakdown=False)
    groups = param_groups(classifier, ft)
    optimizer = torch.optim.AdamW(groups, lr=ft.lr, betas=tuple(ft.betas))
    factor = lr_factor(total, round(ft.warmup_epochs * per_epoch))
    engine, _, _, scheduler = deepspeed.initialize(
        model=classifier, optimizer=optimizer, config=ds,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor))
    dtype = torch.bfloat16 if engine.bfloat16_enabled() else (torch.float16 if engine.fp16_enabled() else None)

    step, window, failures = 0, {"loss": 0.0, "right": 0.0, "n": 0.0, "seconds": 0.0}, Counter()
    if found is not None:
        tag, state = resume_from.load(engine, store, found, rank, world, log)
        step = found.step(tag)
        window, failures = state["window"], Counter(state["failures"])
        ckpt.set_rng_state(state["rng"])
        if engine.global_steps != step:
            raise ckpt.ResumeError(f"DeepSpeed restored step {engine.global_steps}, expected {step}")
        if rank == 0:
            log(f"finetune: resumed from {store.root / tag} at step {step}")
    start, stop = step, max(stop, step)          # max_steps below the checkpoint's step: train nothing
    sink = MetricsSink(run_dir, start if found is not None else None, tensorboard=False) if rank == 0 else None
    views = ViewSpec(frames=model.cfg.video.frames, image_size=model.cfg.video.image_size,
                     resize_short=cfg.data.resize_short)
    loader = torch.utils.data.DataLoader(
        _TrainClips(train_videos, views, ft, flip), batch_sampler=_Batches(len(train_videos), per_epoch, step, stop,
                                                                            ft, rank, world),
        collate_fn=_as_list, num_workers=ft.num_workers)
    if rank == 0:
        log(f"finetune {spec.name}: {len(names)} classes, {len(train_videos)} train videos, {epochs} epochs x "
            f"{per_epoch} steps (batch {ft.batch_size} x {world} rank(s)); steps {step} -> {stop} of {total}; "
            f"{run_dir}")
    train_start = time.perf_counter()
    engine.train()
    for items in loader:
        began = time.perf_counter()
        ok = [(i, clip) for i, clip, _ in items if clip is not None]
        failures.update(error for _, clip, error in items if clip is None)
        if ok:
            video = torch.stack([clip for _, clip in ok]).to(engine.device, dtype=dtype or torch.float32)
            target = labels[[i for i, _ in ok]].to(engine.device)
            logits = engine(video).float()
            loss = nn.functional.cross_entropy(logits, target, label_smoothing=ft.label_smoothing)
            window["loss"] += loss.item() * len(ok)
            window["right"] += float((logits.argmax(dim=1) == target).sum())
            window["n"] += len(ok)
        else:                                   # every clip failed: a zero gradient keeps the ranks in step
            loss = sum(p.sum() for p in engine.module.parameters()) * 0.0
        engine.backward(loss)
        engine.step()
        step += 1
        window["seconds"] += time.perf_counter() - began
        if step % ft.log_every == 0 or step == stop:
            sums = torch.tensor([window["loss"], window["right"], window["n"], window["seconds"]], dtype=torch.float64)
            if world > 1:
                dist.all_reduce(sums)
            if sink is not None:
                n = max(1.0, sums[2].item())
                sink.write({"step": step, "epoch": (step - 1) // per_epoch, "loss": sums[0].item() / n,
                            "train_top1": 100.0 * sums[1].item() / n, "lr": max(scheduler.get_last_lr()),
                            "samples_per_s": sums[2].item() / max(1e-9, sums[3].item() / world)})
            window = {"loss": 0.0, "right": 0.0, "n": 0.0, "seconds": 0.0}
        if step % every == 0 or step == stop:
            _save(engine, store, step, rank, {"window": window, "failures": dict(failures), "rng": ckpt.rng_state(),
                                              "step": step}, run_info, ft.keep_last)
    train_seconds = time.perf_counter() - train_start
    if sink is not None:
        sink.close()
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, dict(failures))
        failures = sum((Counter(g) for g in gathered), Counter())
    if rank != 0:
        return None
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()] \
        if (run_dir / "metrics.jsonl").is_file() else []
    test = _test(engine.module, eval_split, names, ViewSpec(views.frames, views.image_size,
                 spec.clips or ft.clips, spec.crops or ft.crops, cfg.data.resize_short), ft, engine.device, dtype)
    return {"task": "finetune", "dataset": spec.name, "format": spec.format, "split": eval_split.name,
            "train_split": train_split.name, "views": f"{test.pop('clips')} x {test.pop('crops')} views (clips x crops)",
            "frames": views.frames, "image_size": views.image_size, "classes": len(names),
            "train_videos": len(train_videos), **test,
            "epochs": epochs, "steps": step, "total_steps": total, "finished": step >= total,
            "resumed_from": start if found is not None else None, "trained_steps": step - start,
            "batch_size": ft.batch_size, "world_size": world, "lr": ft.lr, "weight_decay": ft.weight_decay,
            "layer_decay": ft.layer_decay, "warmup_epochs": ft.warmup_epochs, "label_smoothing": ft.label_smoothing,
            "pool": ft.pool, "flip": flip, "seed": ft.seed, "deepspeed": ft.deepspeed,
            "first_loss": rows[0]["loss"] if rows else None, "final_loss": rows[-1]["loss"] if rows else None,
            "final_train_top1": rows[-1]["train_top1"] if rows else None,
            "train_failures": dict(failures), "train_seconds": round(train_seconds, 2),
            "checkpoints": str(store.root), "metrics": str(run_dir / "metrics.jsonl")}


@torch.no_grad()
def _test(model: Classifier, split, names: list[str], views: ViewSpec, ft: FinetuneSettings, device, dtype) -> dict:
    """top-K (%) on the eval split: every video's views through the model, their logits averaged."""
    began = time.perf_counter()
    model.eval()
    index = {n: k for k, n in enumerate(names)}
    labelled = _labelled(split)
    known = [i for i in labelled if split.videos[i].label in index]
    videos = [split.videos[i] for i in known]
    loader = torch.utils.data.DataLoader(ViewsDataset(videos, views), batch_size=None, shuffle=False,
                                         num_workers=ft.num_workers)
    logits, targets, failures = [], [], Counter()
    for i, v, error_class, _ in loader:
        if v is None:
            failures[error_class] += 1
            continue
        chunks = v.to(device, dtype=dtype or torch.float32).split(ft.batch_size)
        logits.append(torch.cat([model(c).float() for c in chunks]).mean(dim=0).cpu())     # views averaged
        targets.append(index[videos[i].label])
    if not logits:
        from training.data import DataError

        raise DataError(f"dataset {split.videos[0].dataset if split.videos else '?'}: none of the {len(videos)} "
                        f"{split.name} videos could be decoded ({dict(failures)})")
    scores, target = torch.stack(logits), torch.tensor(targets)
    ks = [k for k in ft.ks if k <= len(names)] or [1]
    out: dict[str, Any] = {**topk_accuracy(scores, target, ks), "eval_videos": len(targets),
                           "eval_unknown_class": len(labelled) - len(known), "eval_failures": dict(failures),
                           "clips": views.clips, "crops": views.crops}
    for k in ks:
        out[f"chance_top{k}"] = 100.0 * k / len(names)
    out["majority_top1"] = 100.0 * float(torch.bincount(target, minlength=len(names)).max()) / len(targets)
    out["test_seconds"] = round(time.perf_counter() - began, 2)
    return out


def table_lines(result: dict[str, Any]) -> list[str]:
    def num(key: str) -> str:
        return f"{result[key]:.2f}" if isinstance(result.get(key), (int, float)) else "-"

    ks = [k[3:] for k in result if k.startswith("top") and k[3:].isdigit()]
    lines = [f"finetune on {result['dataset']} ({result['format']}, {result['split']} split, {result['views']}, "
             f"{result['frames']} frames at {result['image_size']}px; {result.get('preset')}, "
             f"{result.get('weights_from')})",
             f"  {'':<12}" + "".join(f"{'top-' + k:>10}" for k in ks),
             f"  {'fine-tuned':<12}" + "".join(f"{num('top' + k):>10}" for k in ks),
             f"  {'chance':<12}" + "".join(f"{num('chance_top' + k):>10}" for k in ks),
             f"  {result['classes']} classes, {result['train_videos']} train / {result['eval_videos']} eval videos; "
             f"commonest class {num('majority_top1')}%",
             f"  step {result['steps']} of {result['total_steps']} ({result['epochs']} epochs, batch "
             f"{result['batch_size']} x {result['world_size']} rank(s), AdamW lr {result['lr']:g}, layer decay "
             f"{result['layer_decay']:g}); train loss {num('first_loss')} -> {num('final_loss')}"]
    if result.get("resumed_from") is not None:
        lines.append(f"  resumed from step {result['resumed_from']}; {result['trained_steps']} steps this run")
    if not result.get("finished", True):
        lines.append("  not finished (downstream.finetune.max_steps): rerun without it to continue")
    lines.append(f"  {result.get('train_seconds', 0):.1f} s training, {result.get('test_seconds', 0):.1f} s test; "
                 f"{result.get('seconds', 0):.1f} s in all")
    return lines
