"""The training loop: DeepSpeed engine from the recipe's JSON, LR schedule, metrics, checkpoints.

One function, `train(cfg, ...)`, runs the whole job on one rank; pretrain.py (deepspeed / torchrun /
python) and raytrain.py (Ray Train) both call it. Every rank runs the same steps:

    micro batch from the rank's ShardLoader (time spent waiting = data wait) -> engine(batch) ->
    a non-finite loss on any rank: stop, or skip that batch on every rank (guards.py) ->
    engine.backward(loss) -> engine.step()   (DeepSpeed accumulates, clips, steps AdamW and the schedule)
    every log_every steps: metrics averaged over ranks -> metrics.jsonl + TensorBoard (rank 0)
    every eval_every steps and at the end (when set): rank 0 scores the same first eval_samples held-out
        samples (sort, text-only sort, t2v), the other ranks wait; one row each in heldout.jsonl; an
        error there stops every rank (heldout.on_rank0), not only rank 0
    every checkpoint_every steps and at the end: checkpoint (checkpoint.py), keep the last M

output.dir may be an fsspec URL (s3://...): each rank then writes into its local staging folder and
uploads at each checkpoint and at the end (checkpoint.RunStore; the tag's complete.json is the commit).

A resumed run restores the engine, each rank's loader position and RNG state, and the partial metric
window, so its steps and losses are those of the run it continues. An unreadable newest checkpoint is
passed over for the next older one (resume.py). The process group, seeds, recipe JSON and metrics rows are
runtime.py's, shared with the fine-tuning evaluation (their names stay importable from here).
"""
from __future__ import annotations

import json
import math
import os
import socket
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import torch

from common import storage
from common.config import ConfigError
from training import checkpoint as ckpt
from training import resume as resume_from
from training.config import PretrainConfig
from training.data import to_device  # bench/training.py imports it from here
from training.guards import NonFiniteGuard, fault_injection
from training.runtime import MetricsSink, log, read_recipe, seed_everything, setup_distributed  # noqa: F401

# DeepSpeed's ZeRO calls a torch collective that torch 2.14 flags as deprecated, once per step.
warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)

METRIC_KEYS = ("loss", "loss_base", "loss_sort", "sort_acc", "pos_acc")


# ---------------------------------------------------------------------------------------------------
# recipe pieces


def deepspeed_config(cfg: PretrainConfig, world_size: int) -> dict[str, Any]:
    """The recipe JSON with the batch geometry and optimizer numbers of the YAML config filled in."""
    ds = read_recipe(cfg.train.deepspeed, "train.deepspeed")
    t = cfg.train
    ds["train_micro_batch_size_per_gpu"] = t.micro_batch
    ds["gradient_accumulation_steps"] = t.grad_accum
    ds["train_batch_size"] = t.micro_batch * t.grad_accum * world_size
    ds.setdefault("steps_per_print", 10 ** 9)      # our own metrics; keep DeepSpeed quiet
    ds.setdefault("wall_clock_breakdown", False)
    if "optimizer" in ds:                          # DeepSpeed builds the optimizer: the recipe's numbers
        params = ds["optimizer"].setdefault("params", {})
        params.update(lr=t.lr, betas=list(t.betas), weight_decay=t.weight_decay)
    return ds


def lr_lambda(cfg: PretrainConfig) -> Callable[[int], float]:
    """Multiplier of train.lr after `step` optimizer steps."""
    t = cfg.train
    total, warmup = t.max_steps, t.warmup_steps
    milestones = [round(total * e / t.epochs) for e in t.step_epochs]   # epochs 12, 16 of 20 -> steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if t.schedule == "step":
            return t.step_gamma ** sum(step >= m for m in milestones)
        if t.schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


# ---------------------------------------------------------------------------------------------------
# metrics


class MetricWindow:
    """Sums of the step metrics since the last logged step (saved in checkpoints: part of resume)."""

    def __init__(self) -> None:
        self.sums = {k: 0.0 for k in METRIC_KEYS}
        self.micro = 0
        self.samples = 0
        self.wait_s = 0.0
        self.step_s = 0.0

    def add(self, out: dict[str, torch.Tensor], samples: int) -> None:
        for key in METRIC_KEYS:
            self.sums[key] += float(out[key].detach().float())
        self.micro += 1
        self.samples += samples

    def reduce(self, world: int) -> dict[str, float]:
        """Mean over micro batches and ranks; samples/s over the whole job; data wait as a fraction."""
        import torch.distributed as dist

        vec = torch.tensor([*self.sums.values(), self.micro, self.samples, self.wait_s, self.step_s],
                           dtype=torch.float64)
        if world > 1:
            dist.all_reduce(vec)
        n = max(1.0, vec[len(METRIC_KEYS)].item())
        row = {k: vec[i].item() / n for i, k in enumerate(METRIC_KEYS)}
        samples, wait, step_s = vec[-3].item(), vec[-2].item(), vec[-1].item()
        row["samples_per_s"] = samples / max(1e-9, step_s / world)      # step_s summed over ranks
        row["data_wait_frac"] = wait / max(1e-9, step_s)
        return row

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


# ---------------------------------------------------------------------------------------------------
# the job


def train(cfg: PretrainConfig, resume: str | None = None, fresh: bool = False,
          on_log: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run (or continue) the training job on this rank; returns a summary dict (rank 0's view)."""
    import deepspeed
    import torch.distributed as dist

    from training import heldout as heldout_eval
    from training.data import LoaderSettings, build_loader, expand_shards, load_blocklist
    from training.model import TVTS, build_tokenizer
    from training.model_config import load_preset

    rank, world = setup_distributed(cfg.train.dist_timeout_s)
    expand_shards(cfg.data.shards)            # bad paths fail here, in one line, before any model is built
    load_blocklist(cfg.data.blocklist)
    store = ckpt.RunStore(cfg.output.dir, rank)
    if store.remote:                          # a missing bucket or bad credentials: one line, before training
        storage.check_location(store.url, "output.dir", writable=True)
    out_dir = store.local                     # where this rank writes: output.dir, or its staging folder
    t = cfg.train

    overrides = list(t.model_overrides)
    if t.activation_checkpointing:
        overrides.append("video.grad_checkpointing=true")
    model_cfg = load_preset(t.preset, overrides)
    run_info = {"preset": t.preset, "model": asdict(model_cfg), "world_size": world, "mode": t.mode,
                "num_workers": cfg.data.num_workers, "seed": cfg.seed, "config": asdict(cfg)}
    # Keys that identify the model: a checkpoint of another preset must not load into this one.
    run_info["model"] = json.loads(json.dumps(run_info["model"]))
    # Where each rank ran (host; the Ray node under Ray Train), kept in every checkpoint's run.json.
    ranks = [None] * world
    dist.all_gather_object(ranks, {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(),
                                   "node": os.environ.get("TVTS_NODE_ID", "")})
    run_info["ranks"] = ranks

    if fresh:
        if rank == 0:                              # start over: older checkpoints must not be resumed later
            ckpt.clear_run(store.url)
        if store.remote:
            ckpt.clear_run(out_dir)                # and every rank its own staging folder
        dist.barrier()
    # The readable complete tags (checked against this run's model and world size), the same on every rank.
    found = None if fresh else resume_from.choose(resume, store, run_info, t.max_steps, rank, world, log)
    start_step = 0
    if found is not None:
        ck_root, tag = found.root, found.tags[0]
        start_step = found.step(tag)
    if start_step >= t.max_steps:
        if rank == 0:
            store.pull(*MetricsSink.FILES.values())    # finish_exports plots and re-uploads them
            log(f"{store.where()}: already at step {start_step} of train.max_steps={t.max_steps}; nothing to do "
                f"(checkpoint {ckpt.show(ckpt.child(ck_root, tag))}; raise train.max_steps to train further)")
        finish_exports(cfg, model_cfg, run_info, rank, engine=None, tag=tag, ck_root=ck_root, store=store)
        return {"step": start_step, "resumed_from": start_step, "trained_steps": 0}

    seed_everything(cfg.seed, 0)                 # identical initial weights on every rank
    model = TVTS(model_cfg)
    if t.init_from and found is None:
        state = torch.load(t.init_from, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if rank == 0:
            log(f"initialised from {t.init_from} (missing {len(missing)}, unexpected {len(unexpected)} tensors)")
    seed_everything(cfg.seed, rank)              # per-rank masks, shuffles and augmentation
    ds_config = deepspeed_config(cfg, world)
    trainable = [p for p in model.parameters() if p.requires_grad]   # a locked text tower is left out
    client_optimizer = None
    if "optimizer" not in ds_config:
        client_optimizer = torch.optim.AdamW(trainable, lr=t.lr, betas=tuple(t.betas),
                                             weight_decay=t.weight_decay)
    factor = lr_lambda(cfg)
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=trainable,
        optimizer=client_optimizer, config=ds_config,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor))
    dtype = torch.bfloat16 if engine.bfloat16_enabled() else (torch.float16 if engine.fp16_enabled() else None)
    zero_stage = engine.zero_optimization_stage()

    tokenizer = build_tokenizer(model_cfg)
    settings = LoaderSettings(batch_size=t.micro_batch, frames=model_cfg.video.frames,
                              image_size=model_cfg.video.image_size, num_transcripts=model_cfg.num_transcripts,
                              split="train", rank=rank, world_size=world, seed=cfg.seed,
                              post_frames=list(t.post_frames) if t.mode == "post" else [],
                              max_text_length=cfg.data.max_text_length or model_cfg.text.max_length)
    loader = build_loader(cfg.data, settings, tokenizer)
    progress = None                           # rank 0's bar, once training starts (guard warnings go through it)
    window = MetricWindow()
    guard = NonFiniteGuard(t.on_nonfinite_loss, t.max_nonfinite_skips, rank, world, t.grad_accum,
                           emit=lambda line: (progress.write if progress is not None else log)(line))
    heldout = None
    if t.eval_every:
        if zero_stage == 3:
            raise ConfigError("train.eval_every needs ZeRO stage 0-2 (rank 0 evaluates alone); with ZeRO-3 set it "
                              "to 0 and run python -m training.evaluate on the exported model")
        if not cfg.data.eval_shards and cfg.data.holdout_fraction <= 0:
            raise ConfigError("train.eval_every needs held-out samples: set data.holdout_fraction > 0 or data.eval_shards")
        if rank == 0:
            # The held-out videos of the same split training leaves out; the training blocklist is a
            # downstream-leak list, and training.evaluate does not apply it either.
            heldout = build_loader(replace(cfg.data, blocklist=[], num_workers=0),
                                   replace(settings, split="eval", rank=0, world_size=1, post_frames=[]),
                                   tokenizer, epochs=1)

    if found is not None:
        tag, state = resume_from.load(engine, store, found, rank, world, log)   # newest readable tag
        start_step = found.step(tag)
        loader.load_state_dict(state["loader"])
        window.load_state_dict(state["window"])
        guard.load_state_dict(state.get("guard"))
        ckpt.set_rng_state(state["rng"])
        if rank == 0:
            log(f"resumed from {ckpt.show(ckpt.child(ck_root, tag))} at step {start_step}")
    step = start_step
    if engine.global_steps != step:
        raise ckpt.ResumeError(f"DeepSpeed restored step {engine.global_steps}, expected {step}")

    sink = None
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        if found is not None:
            store.pull(*MetricsSink.FILES.values())    # a URL's metrics continue from the checkpoint's rows
        sink = MetricsSink(out_dir, start_step if found else None, t.tensorboard)
        log(f"training preset '{t.preset}' ({t.mode}) on {world} rank(s), ZeRO stage {zero_stage}, "
            f"{'bf16' if dtype == torch.bfloat16 else 'fp16' if dtype == torch.float16 else 'fp32'}, "
            f"micro batch {t.micro_batch} x accum {t.grad_accum} x {world} ranks; "
            f"steps {start_step} -> {t.max_steps}; output {store.where()}")
    if rank == 0:
        from tqdm import tqdm

        progress = tqdm(total=t.max_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    last_saved = start_step if found else None
    batches = iter(loader)
    engine.train()
    try:
        while step < t.max_steps:
            step_start = time.perf_counter()
            for micro in range(t.grad_accum):
                out = None
                while out is None:                     # a skipped (non-finite) batch: the next one instead
                    wait_start = time.perf_counter()
                    batch = next(batches)
                    window.wait_s += time.perf_counter() - wait_start
                    batch = to_device(batch, engine.device, dtype)
                    guard.inject(batch, step + 1)      # tests only (TVTS_FAULT_NAN_STEP)
                    out = engine(batch, mode=t.mode)
                    if not guard.check(out, batch, step + 1, micro):
                        out = None
                engine.backward(out["loss"])
                engine.step()
                window.add(out, samples=batch["video"].shape[0])
            window.step_s += time.perf_counter() - step_start
            step += 1
            fault_injection(step, rank)
            if progress is not None:
                progress.update(1)
            if step % t.log_every == 0 or step == t.max_steps:
                row = {"step": step, **window.reduce(world), "lr": scheduler.get_last_lr()[0],
                       "epoch": loader.epoch, "nonfinite_skipped": guard.skipped}
                if rank == 0:
                    row["skipped"] = loader.skip_counts()
                    sink.write(row)
                    progress.set_postfix(loss=f"{row['loss']:.3f}", sort=f"{row['sort_acc']:.2f}",
                                         wait=f"{row['data_wait_frac']:.0%}")
                    if on_log is not None:
                        on_log(row)
                window = MetricWindow()
            if t.eval_every and (step % t.eval_every == 0 or step == t.max_steps):
                # Before the checkpoint: a run killed in between redoes this evaluation on resume.
                scores = heldout_eval.on_rank0(
                    lambda: heldout_eval.held_out_pass(engine.module, heldout, t.eval_samples, engine.device, dtype,
                                                       cfg.seed, sort=t.mode == "pretrain"), rank, world, engine.device)
                if rank == 0:
                    keys = scores.pop("keys")
                    sink.write({"step": step, **scores, "samples_sha1": heldout_eval.keys_digest(keys)}, group="heldout")
                    sort_text = ""
                    if "sort_acc" in scores:
                        sort_text = (f"sort {scores['sort_acc']:.1f}% (text only {scores['sort_acc_text_only']:.1f}%), "
                                     f"position {scores['pos_acc']:.1f}%, ")
                    progress.write(f"step {step}: held-out {sort_text}t2v R@1 {scores['R@1']:.1f}% "
                                   f"of {scores['samples']} samples")
            if step % t.checkpoint_every == 0 or step == t.max_steps:
                save(engine, store, step, rank, loader, window, run_info, t.keep_last, guard)
                last_saved = step
    finally:
        if progress is not None:
            progress.close()
        if sink is not None:
            sink.close()
    finish_exports(cfg, model_cfg, run_info, rank, engine=engine, tag=ckpt.tag_for(last_saved), ck_root=store.root,
                   zero_stage=zero_stage, store=store)
    dist.barrier()
    return {"step": step, "resumed_from": start_step if found else None, "trained_steps": step - start_step,
            "checkpoint": ckpt.show(ckpt.child(store.root, ckpt.tag_for(step))),
            "metrics": store.where("metrics.jsonl"),
            "skipped": loader.skip_counts(), "nonfinite_skipped": guard.skipped}




def save(engine, store: ckpt.RunStore, step: int, rank: int, loader, window: MetricWindow,
         run_info: dict, keep_last: int, guard: NonFiniteGuard) -> None:
    """DeepSpeed files, then every rank's own state (for a URL output.dir: each rank uploads its own files),
    then (after a barrier) complete.json, listing every file and its size, and pruning."""
    import shutil

    import torch.distributed as dist

    tag = ckpt.tag_for(step)
    root = store.local_root
    if rank == 0:                              # leftovers of a killed save or of a demoted unreadable tag
        ckpt.clear_tag(store.root, tag)
    dist.barrier()
    if store.remote:                           # a staging folder holds only this rank's files of this save
        shutil.rmtree(root / tag, ignore_errors=True)
        (root / tag).mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(root), tag=tag)
    ckpt.save_rank_state(root / tag, rank, {"loader": loader.state_dict(), "window": window.state_dict(),
                                            "rng": ckpt.rng_state(), "step": step, "guard": guard.state_dict()})
    store.upload_tag(tag)
    dist.barrier()
    if rank == 0:
        ckpt.mark_complete(ckpt.child(store.root, tag), step, run_info)
        ckpt.prune(store.root, keep_last)
        store.publish(*MetricsSink.FILES.values(), "tensorboard")
    store.prune_stage(keep=tag)
    dist.barrier()


def finish_exports(cfg: PretrainConfig, model_cfg, run_info: dict, rank: int, engine, tag: str, ck_root,
                   store: ckpt.RunStore, zero_stage: int | None = None) -> None:
    """At the end (rank 0): the fp32 state_dict for evaluation and the loss-curve PNG, if missing; for a
    URL output.dir these and the metrics files are uploaded."""
    if rank != 0:
        return
    out_dir = store.local
    export = out_dir / "model_fp32.pt"
    done_for = out_dir / "model_fp32.json"
    store.pull("model_fp32.json")              # what the URL holds, not a stale staging copy
    current = json.loads(done_for.read_text()).get("tag") if done_for.is_file() else None
    zero_stage = zero_stage if zero_stage is not None else int(
        json.loads(Path(cfg.train.deepspeed).read_text()).get("zero_optimization", {}).get("stage", 0))
    exported = storage.exists(storage.join(store.url, "model_fp32.pt")) if store.remote else export.is_file()
    if cfg.train.export_fp32 and (current != tag or not exported) and (engine is not None or zero_stage > 0):
        info = {"tag": tag, "preset": run_info["preset"], "model": run_info["model"],
                "checkpoint": ckpt.show(ckpt.child(ck_root, tag)), "holdout_fraction": cfg.data.holdout_fraction,
                "seed": cfg.seed, "shards": cfg.data.shards, "mode": run_info["mode"]}
        # ZeRO partitions of every rank, in one local folder (rank 0's staging copy lacks the others')
        local_root = store.fetch_tag(ck_root, tag, missing_only=True) if zero_stage > 0 else ck_root
        ckpt.export_fp32(local_root, tag, zero_stage, engine.module if engine else None, export, info)
        store.publish("model_fp32.pt", "model_fp32.json")
        log(f"exported fp32 weights -> {store.where('model_fp32.pt')}")
    if cfg.train.plot:
        from training.plots import plot_metrics

        png = plot_metrics(out_dir / "metrics.jsonl", out_dir / "loss_curve.png")
        if png is not None:
            log(f"loss curve -> {store.where('loss_curve.png')}")
    store.publish(*MetricsSink.FILES.values(), "loss_curve.png", "tensorboard")
