"""Training throughput: the DeepSpeed engine vs a plain PyTorch loop on the same model and data, same run.

    .venv/bin/python bench/training.py [--preset tiny] [--steps 12] [--micro-batch 8] [--workers 1]
                                       [--shards 'DIR/shard-*.tar'] [--deepspeed training/presets/pretrain_cpu_zero1.json]

Both loops train the same TVTS preset from the same initial weights on the same shard loader (generated
synthetic shards unless --shards is given), in one process. Printed: samples/s of each loop and their
ratio (DeepSpeed / plain), the fraction of step time spent waiting for data in each, and the loader's
own rate (decode + tokenize, no model) for reference. The first 2 steps of each loop are warm-up.
"""
from __future__ import annotations

import os
import sys

# `python bench/NAME.py` puts bench/ first on sys.path, where pipeline.py and training.py would shadow the
# installed packages of those names: drop it (the project itself is installed, see pyproject.toml).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import tempfile
import time
from pathlib import Path


def make_loader(args, model_cfg, tokenizer, shards: str):
    from training.config import DataConfig
    from training.data import LoaderSettings, build_loader

    data = DataConfig(shards=shards, num_workers=args.workers, holdout_fraction=0.0, shuffle_buffer=64)
    settings = LoaderSettings(batch_size=args.micro_batch, frames=model_cfg.video.frames,
                              image_size=model_cfg.video.image_size, num_transcripts=model_cfg.num_transcripts,
                              seed=0, max_text_length=model_cfg.text.max_length)
    return build_loader(data, settings, tokenizer)


def timed_loop(name: str, loader, step_fn, steps: int, warmup: int = 2) -> dict:
    """Run `steps` steps; samples/s and data-wait fraction over the steps after warm-up."""
    batches = iter(loader)
    wait = total = 0.0
    samples = 0
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        step_fn(batch)
        t2 = time.perf_counter()
        if i >= warmup:
            wait += t1 - t0
            total += t2 - t0
            samples += batch["video"].shape[0]
    result = {"name": name, "samples_per_s": samples / total, "data_wait_frac": wait / total,
              "step_s": total / steps}
    print(f"  {name:<22} {result['samples_per_s']:8.2f} samples/s   step {result['step_s']:.3f} s   "
          f"data wait {result['data_wait_frac']:.1%}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="model_overrides", action="append", default=[],
                        help="model preset override, e.g. video.depth=2")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--shards", default="")
    parser.add_argument("--deepspeed", default="training/presets/pretrain_cpu_zero1.json")
    args = parser.parse_args()
    os.chdir(Path(__file__).resolve().parent.parent)

    import torch

    from training.config import PretrainConfig
    from training.engine import deepspeed_config, lr_lambda, setup_distributed, to_device
    from training.model import TVTS, build_tokenizer
    from training.model_config import load_preset
    from training.synthetic import write_synthetic_shards

    setup_distributed(600)
    model_cfg = load_preset(args.preset, args.model_overrides)
    tokenizer = build_tokenizer(model_cfg)
    tmp = tempfile.TemporaryDirectory(prefix="bench-training-")
    shards = args.shards
    if not shards:
        size = max(64, int(model_cfg.video.image_size * 268 / 224))
        write_synthetic_shards(tmp.name, shards=4, samples=64, size=(size, size), frames=16, seed=1)
        shards = f"{tmp.name}/shard-*.tar"
    print(f"preset {args.preset}, micro batch {args.micro_batch}, {args.steps} timed steps, "
          f"{args.workers} loader worker(s), {torch.get_num_threads()} torch threads, shards {shards}")

    # the loader alone
    loader = make_loader(args, model_cfg, tokenizer, shards)
    loader_only = timed_loop("loader only", loader, lambda batch: None, args.steps)

    # plain PyTorch: forward, backward, clip, AdamW, LambdaLR
    torch.manual_seed(0)
    model = TVTS(model_cfg)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = PretrainConfig()
    cfg.train.max_steps = args.steps + 2
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas),
                            weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    model.train()

    def plain_step(batch):
        out = model(batch, mode="pretrain")
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()

    plain = timed_loop("plain PyTorch loop", make_loader(args, model_cfg, tokenizer, shards), plain_step, args.steps)

    # DeepSpeed engine, same initial weights and data
    import deepspeed

    model = TVTS(model_cfg)
    model.load_state_dict(initial)
    cfg.train.deepspeed = args.deepspeed
    cfg.train.micro_batch = args.micro_batch
    ds_config = deepspeed_config(cfg, world_size=1)
    client = None if "optimizer" in ds_config else torch.optim.AdamW(
        model.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas), weight_decay=cfg.train.weight_decay)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()), optimizer=client,
                                           config=ds_config,
                                           lr_scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lr_lambda(cfg)))
    dtype = torch.bfloat16 if engine.bfloat16_enabled() else None

    def ds_step(batch):
        batch = to_device(batch, engine.device, dtype)
        out = engine(batch, mode="pretrain")
        engine.backward(out["loss"])
        engine.step()

    ds = timed_loop(f"DeepSpeed ZeRO-{engine.zero_optimization_stage()}",
                    make_loader(args, model_cfg, tokenizer, shards), ds_step, args.steps)

    print(f"\nDeepSpeed / plain PyTorch samples/s: {ds['samples_per_s'] / plain['samples_per_s']:.2f}x")
    print(f"data-wait fraction: DeepSpeed {ds['data_wait_frac']:.1%}, plain {plain['data_wait_frac']:.1%} "
          f"(target < 5%); loader alone {loader_only['samples_per_s']:.1f} samples/s = "
          f"{loader_only['samples_per_s'] / ds['samples_per_s']:.1f}x what the engine consumes")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
