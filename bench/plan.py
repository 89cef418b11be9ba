"""The YT-Temporal-180M plan of infra/README.md: nodes, hours and cost per stage, from the inputs below.

    python bench/plan.py [--nodes 100] [--gpus 32] [--markdown]

A calculator, not a benchmark: it measures nothing and compares nothing. Every input is a measurement
of a bench/ script (the command and the run are named) or a cited public figure; change an input (or
re-measure on the real hardware and pass the new value) and the table follows. The arithmetic is printed
under the table. `tests/infra/test_plan.py` checks that infra/README.md shows this script's table.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Input:
    value: float
    unit: str
    source: str


INPUTS: dict[str, Input] = {
    "videos": Input(6_000_000, "videos", "YT-Temporal-180M: 6M public YouTube videos (MERLOT, Zellers et al., "
                                         "NeurIPS 2021)"),
    "samples_per_video": Input(4, "samples", "plan choice: segment.max_samples_per_video=4 in the pipeline "
                                            "commands; 20 epochs of one span per video = 5 passes"),
    "frames_per_sample": Input(32, "JPEGs", "configs/yt-temporal.yaml: segment.frames 16 x frames_per_bin 2"),
    "epochs": Input(20, "epochs", "configs/pretrain-yt-temporal.yaml train.epochs (TVTS recipe)"),
    "job_frames_per_core_s": Input(64.28 / 2, "frames/s/core",
                                   "bench/pipeline.py --corpus 12 --corpus-size 640x360 --corpus-minutes 2 "
                                   "--asr-fraction 0 --set segment.frames_per_bin=2 --set segment.samples_per_slot=1 "
                                   "--set segment.max_samples_per_video=4 --set decode.short_side=288 (the plan's "
                                   "samples): warm run 64.28 frames/s on 2 shared cores, load average 4-5 "
                                   "(2026-12-01)"),
    "ffmpeg_frames_per_core_s": Input(36.23 / 2, "frames/s/core", "same bench/pipeline.py run: bare ffmpeg baseline "
                                                                  "36.23 frames/s on 2 cores (job 1.77x)"),
    "download_videos_per_node_s": Input(5.0, "videos/s/node", "video2dataset dataset_examples/VideoCC.md: 5 YouTube "
                                                              "videos/s on one 16-core c6i.4xlarge"),
    "embed_frames_per_core_s": Input(3.8, "frames/s/core", "bench/leakage.py --skip-search --model ViT-B-32 "
                                                           "--threads 1: FrameEmbedder 3.8 frames/s (2026-12-01)"),
    "leakage_frames_per_sample": Input(4, "frames", "infra/k8s/rayjob-leakage.yaml corpus.frames_per_sample=4"),
    "bytes_per_frame": Input(29_788_160 / (96 * 16), "bytes", "bench/pipeline.py shards: 29,788,160 bytes for 96 "
                                                              "samples x 16 JPEGs (short side 256, q90)"),
    "cores_per_node": Input(15, "cores", "rayStartParams num-cpus of the c6i.4xlarge pods (16 vCPU, one kept)"),
    "cpu_node_price": Input(0.68, "$/h", "c6i.4xlarge, AWS on-demand list price, us-east-1, as quoted by "
                                         "video2dataset (WebVid.md, VideoCC.md)"),
    "train_gflop_per_sample": Input(292.91, "GFLOP", "bench/model.py --preset base --set text.pretrained=false "
                                                     "--batch 2: torch FlopCounterMode, forward+backward"),
    "gpu_peak_tflops": Input(312.0, "TFLOP/s", "NVIDIA A100 datasheet: bf16 dense tensor-core peak"),
    "mfu_low": Input(0.213, "", "GPT-3's MFU, PaLM paper (Chowdhery et al. 2022) Table 3"),
    "mfu_high": Input(0.462, "", "PaLM 540B's MFU, same table"),
    "gpus_per_node": Input(8, "GPUs", "p4d.24xlarge: 8 x A100 40GB"),
    "gpu_node_price": Input(32.7726, "$/h", "p4d.24xlarge, AWS on-demand list price, us-east-1, as published in "
                                            "2024 (AWS cut P4/P5 prices in June 2025: check the current one)"),
    "s3_price_gb_month": Input(0.023, "$/GB-month", "S3 Standard, us-east-1, first 50 TB, AWS list price (2024)"),
}


def v(name: str) -> float:
    return INPUTS[name].value


def plan(nodes: int, gpus: int) -> tuple[list[dict], list[str]]:
    cores = nodes * v("cores_per_node")
    stored = v("videos") * v("samples_per_video")
    frames = stored * v("frames_per_sample")
    math_lines = []

    decode_h = frames / v("job_frames_per_core_s") / cores / 3600
    ffmpeg_h = frames / v("ffmpeg_frames_per_core_s") / cores / 3600
    download_h = v("videos") / (v("download_videos_per_node_s") * nodes) / 3600
    pipe_h = max(decode_h, download_h)
    math_lines += [
        f"pipeline: {v('videos'):,.0f} videos x {v('samples_per_video'):.0f} samples x {v('frames_per_sample'):.0f} "
        f"frames = {frames:,.0f} frames; / {v('job_frames_per_core_s'):.2f} frames/s/core / {cores:,.0f} cores "
        f"= {decode_h:.1f} h (at bare ffmpeg's {v('ffmpeg_frames_per_core_s'):.2f}: {ffmpeg_h:.1f} h); download "
        f"{v('videos'):,.0f} / ({v('download_videos_per_node_s'):.0f} videos/s x {nodes} nodes) = {download_h:.1f} h"]

    embed_frames = stored * v("leakage_frames_per_sample")
    leak_h = embed_frames / v("embed_frames_per_core_s") / cores / 3600
    math_lines.append(f"leakage: {stored:,.0f} samples x {v('leakage_frames_per_sample'):.0f} frames = "
                      f"{embed_frames:,.0f} frames / {v('embed_frames_per_core_s')} frames/s/core / {cores:,.0f} cores "
                      f"= {leak_h:.1f} h")

    trained = v("videos") * v("epochs")
    flop = trained * v("train_gflop_per_sample") * 1e9
    peak = gpus * v("gpu_peak_tflops") * 1e12
    train_fast, train_slow = flop / (peak * v("mfu_high")) / 3600, flop / (peak * v("mfu_low")) / 3600
    gpu_nodes = math.ceil(gpus / v("gpus_per_node"))
    rate = trained / (train_fast * 3600)
    read_gbs = rate * v("frames_per_sample") * v("bytes_per_frame") / 1e9
    math_lines.append(f"training: {v('videos'):,.0f} x {v('epochs'):.0f} epochs = {trained:,.0f} samples x "
                      f"{v('train_gflop_per_sample')} GFLOP = {flop:.3g} FLOP / ({gpus} x {v('gpu_peak_tflops'):.0f} "
                      f"TFLOP/s x MFU {v('mfu_high')}..{v('mfu_low')}) = {train_fast:.1f}..{train_slow:.1f} h; at the "
                      f"fast end {rate:,.0f} samples/s = {read_gbs:.1f} GB/s read from S3")

    tb = stored * v("frames_per_sample") * v("bytes_per_frame") / 1e12
    math_lines.append(f"shards: {stored:,.0f} samples x {v('frames_per_sample'):.0f} x {v('bytes_per_frame'):,.0f} "
                      f"bytes = {tb:.1f} TB x ${v('s3_price_gb_month')}/GB-month")

    cpu_cost = nodes * v("cpu_node_price")
    rows = [
        {"stage": "pipeline (fetch, decode, shards)", "nodes": f"{nodes} x c6i.4xlarge", "hours": f"{pipe_h:.1f}",
         "cost": f"${pipe_h * cpu_cost:,.0f}",
         "bottleneck": pipeline_bottleneck(decode_h, ffmpeg_h, download_h)},
        {"stage": "leakage check (ViT-B/32, 4 frames/sample)", "nodes": f"{nodes} x c6i.4xlarge",
         "hours": f"{leak_h:.1f}", "cost": f"${leak_h * cpu_cost:,.0f}", "bottleneck": "CPU embedding"},
        {"stage": f"pretraining (base, {v('epochs'):.0f} epochs)", "nodes": f"{gpu_nodes} x p4d.24xlarge ({gpus} A100)",
         "hours": f"{train_fast:.1f}-{train_slow:.1f}",
         "cost": f"${train_fast * gpu_nodes * v('gpu_node_price'):,.0f}-{train_slow * gpu_nodes * v('gpu_node_price'):,.0f}",
         "bottleneck": f"GPU FLOP/s (MFU {v('mfu_low'):.0%}-{v('mfu_high'):.0%}); reads {read_gbs:.1f} GB/s"},
        {"stage": "shards on S3", "nodes": "-", "hours": "-", "cost": f"${tb * 1000 * v('s3_price_gb_month'):,.0f}/month",
         "bottleneck": f"{tb:.1f} TB"},
    ]
    return rows, math_lines


def pipeline_bottleneck(decode_h: float, ffmpeg_h: float, download_h: float) -> str:
    ratio = v("job_frames_per_core_s") / v("ffmpeg_frames_per_core_s")
    if decode_h >= download_h:
        return f"decode: {ratio:.2f}x of bare ffmpeg (at 1x: {ffmpeg_h:.1f} h); download alone {download_h:.1f} h"
    return (f"download at video2dataset's rate; decode alone {decode_h:.1f} h ({ratio:.2f}x of bare ffmpeg, "
            f"which would take {ffmpeg_h:.1f} h)")


def markdown(rows: list[dict]) -> str:
    head = "| stage | nodes | hours | cost | bottleneck |\n| --- | --- | --- | --- | --- |\n"
    return head + "".join(f"| {r['stage']} | {r['nodes']} | {r['hours']} | {r['cost']} | {r['bottleneck']} |\n"
                          for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100, help="CPU nodes of the pipeline and the leakage check")
    parser.add_argument("--gpus", type=int, default=32, help="GPUs of pretraining (global batch 1024 = 32 x 32)")
    parser.add_argument("--markdown", action="store_true", help="only the table (as in infra/README.md)")
    args = parser.parse_args()
    rows, lines = plan(args.nodes, args.gpus)
    print(markdown(rows), end="")
    if not args.markdown:
        print("\narithmetic:")
        for line in lines:
            print(f"  {line}")
        print("\ninputs:")
        for name, item in INPUTS.items():
            print(f"  {name:27s} {item.value:>14,.4g} {item.unit:14s} {item.source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
