"""Benchmark: TVTS forward+backward samples/s against a plain-PyTorch baseline measured in the same run.

    python bench/model.py [--preset tiny] [--batch 8] [--steps 10] [--rounds 3] [--device cpu|cuda] [--bf16]
                          [--peak-tflops 989]
    GPU recipe check:  python bench/model.py --preset base --set text.pretrained=false --device cuda --bf16 --batch 24

1. Parameter counts of the tiny, base and large presets (`python -m training describe`; the base video
   tower must be about 86M: ViT-B/16 + its projection).
2. Video tower, forward+backward, samples/s:
   - ours with the pretraining mask (75% of every temporal slice dropped before the blocks),
   - ours without masking,
   - baseline: the same widths and depth as `torch.nn.TransformerEncoder` (pre-norm, GELU, batch-first)
     over all tokens, fed by the same Conv3d tubelet embedding: what a plain-PyTorch ViT costs.
   Ratios: masked / baseline (what dropping tokens buys) and unmasked / baseline (our blocks' overhead;
   about 1 means none).
3. The whole TVTS training step (forward, both losses, backward) at the preset's geometry: samples/s and,
   with --device cuda, model FLOPs utilisation (FLOPs counted by torch.utils.flop_counter on one step,
   over --peak-tflops: 989 is the H200's dense bf16 peak).
"""
from __future__ import annotations

import os
import sys

# `python bench/NAME.py` puts bench/ first on sys.path, where pipeline.py and training.py would shadow the
# installed packages of those names: drop it (the project itself is installed, see pyproject.toml).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import json
import time

import torch
from torch import nn


def timed(steps_by_name: dict, steps: int, device: str, rounds: int = 3) -> dict[str, float]:
    """Seconds per call of each step function. The candidates take turns, round after round, and each
    keeps its best round: on a shared machine, load that comes and goes hits them alike."""
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for step in steps_by_name.values():        # warm-up
        step()
    best = {name: float("inf") for name in steps_by_name}
    for _ in range(rounds):
        for name, step in steps_by_name.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            sync()
            best[name] = min(best[name], (time.perf_counter() - t0) / steps)
    return best


class PlainVideoViT(nn.Module):
    """Baseline: tubelet Conv3d + learned positions + nn.TransformerEncoder over all tokens, final norm."""

    def __init__(self, v):
        super().__init__()
        self.embed = nn.Conv3d(3, v.dim, (v.tubelet, v.patch_size, v.patch_size),
                               stride=(v.tubelet, v.patch_size, v.patch_size))
        self.pos = nn.Parameter(torch.zeros(1, 1 + v.time_slices * v.grid ** 2, v.dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, v.dim))
        layer = nn.TransformerEncoderLayer(v.dim, v.heads, int(v.dim * v.mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True,
                                           layer_norm_eps=1e-6)
        self.blocks = nn.TransformerEncoder(layer, v.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(v.dim, eps=1e-6)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.embed(video).flatten(2).transpose(1, 2)                  # [B, t*N, Dv]
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.norm(self.blocks(x))


def make_batch(cfg, batch: int, device: str) -> dict:
    K, L = cfg.num_transcripts, cfg.text.max_length
    ids = torch.randint(1000, 30000, (batch, K, L))
    ids[..., 0] = 101
    v = cfg.video
    return {"video": torch.randn(batch, 3, v.frames, v.image_size, v.image_size, device=device),
            "text_ids": ids.to(device), "text_mask": torch.ones_like(ids).to(device)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="calls per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (each candidate keeps its best)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (the GPU recipe)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="device peak for MFU (H200 bf16 dense)")
    args = parser.parse_args()

    from training.__main__ import describe
    from training.model import TVTS, VideoEncoder
    from training.model_config import load_preset

    print("== parameter counts (describe) ==")
    counts = {name: describe(name, []) for name in ("tiny", "base", "large")}
    for name, c in counts.items():
        print(f"{name:6s} video {c['video'] / 1e6:8.2f}M  text {c['text'] / 1e6:7.2f}M  "
              f"sort {c['sort'] / 1e6:6.2f}M  total {c['total'] / 1e6:8.2f}M")

    torch.manual_seed(0)
    cfg = load_preset(args.preset, args.overrides)
    dev, B = args.device, args.batch
    autocast = torch.autocast(dev, dtype=torch.bfloat16, enabled=args.bf16)
    print(f"\n== {cfg.name}: batch {B}, {cfg.video.frames} x {cfg.video.image_size}^2, device {dev}, "
          f"bf16 {args.bf16}, threads {torch.get_num_threads()} ==")

    # ---- video tower: ours (masked / unmasked) vs nn.TransformerEncoder ----
    ours, plain = VideoEncoder(cfg).to(dev), PlainVideoViT(cfg.video).to(dev)
    video = torch.randn(B, 3, cfg.video.frames, cfg.video.image_size, cfg.video.image_size, device=dev)

    def video_step(model, **kw):
        def step():
            with autocast:
                out = model(video, **kw)
                out = out[0] if isinstance(out, tuple) else out
            out.float().mean().backward()
        return step

    times = timed({"masked": video_step(ours, mask_ratio=cfg.video.mask_ratio),
                   "full": video_step(ours, mask_ratio=0.0), "plain": video_step(plain)}, args.steps, dev, args.rounds)
    t_masked, t_full, t_plain = times["masked"], times["full"], times["plain"]
    rows = {"ours, mask %.2f" % cfg.video.mask_ratio: t_masked, "ours, no mask": t_full,
            "nn.TransformerEncoder, no mask (baseline)": t_plain}
    for name, t in rows.items():
        print(f"video fwd+bwd  {name:42s} {B / t:9.3g} samples/s")
    print(f"ratio masked / baseline     {t_plain / t_masked:5.2f}x")
    print(f"ratio unmasked / baseline   {t_plain / t_full:5.2f}x")
    del ours, plain

    # ---- the whole TVTS step ----
    model = TVTS(cfg).to(dev)
    batch = make_batch(cfg, B, dev)

    def train_step():
        with autocast:
            out = model(batch)
        out["loss"].backward()

    t_step = timed({"step": train_step}, args.steps, dev, args.rounds)["step"]
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        train_step()
    flops = counter.get_total_flops()
    result = {"preset": cfg.name, "batch": B, "device": dev, "bf16": args.bf16,
              "train_step_samples_per_s": round(B / t_step, 4),
              "video_masked_samples_per_s": round(B / t_masked, 4),
              "video_baseline_samples_per_s": round(B / t_plain, 4),
              "ratio_masked_vs_baseline": round(t_plain / t_masked, 3),
              "ratio_unmasked_vs_baseline": round(t_plain / t_full, 3),
              "train_step_gflops_per_sample": round(flops / B / 1e9, 2),
              "achieved_tflops": round(flops / t_step / 1e12, 4)}
    if dev == "cuda":
        result["mfu"] = round(flops / t_step / (args.peak_tflops * 1e12), 4)
    print(f"TVTS fwd+bwd (both losses) {B / t_step:9.3g} samples/s, {flops / B / 1e9:.2f} GFLOP/sample, "
          f"{flops / t_step / 1e12:.3f} TFLOP/s" + (f", MFU {result['mfu']:.1%}" if "mfu" in result else ""))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
