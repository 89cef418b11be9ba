"""Benchmark of the leakage job's two hot loops, each against a baseline measured in the same run.

1. Search: corpus frames (queries, default 1M) against downstream frames (the index, default 100k),
   random unit vectors of dim 512. Flat (exact IndexFlatIP) is the baseline: its throughput and its
   answers (recall@1 ground truth) come from the first --flat-queries queries; IVF and HNSW search all
   queries. Prints queries/s, recall@1 vs Flat and the speed ratio vs Flat.
2. Embedding: the job's FrameEmbedder (batched torch preprocessing + image tower) vs a bare open_clip
   forward (open_clip's own PIL preprocess + encode_image) on the same frames, same batch size.
3. Corpus features (`--corpus-shards`, e.g. the demo's shards): the job's batch_features (each distinct
   frame once, samples batched together) vs one sample at a time through the same embedder (the way
   before), with the demo's leakage model (`--config`): samples/s, frames through the model, the ratio.

    .venv/bin/python bench/leakage.py                      # full sizes (a few minutes on 2 cores)
    .venv/bin/python bench/leakage.py --corpus-frames 200000 --downstream-frames 20000 --frames 64
"""
from __future__ import annotations

import os
import sys

# `python bench/NAME.py` puts bench/ first on sys.path, where pipeline.py and training.py would shadow the
# installed packages of those names: drop it (the project itself is installed, see pyproject.toml).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import time

import numpy as np


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def bench_search(args: argparse.Namespace) -> None:
    from dedup.index import build_index, search

    rng = np.random.default_rng(0)
    base = unit(rng, args.downstream_frames, args.dim)
    # Queries near database points (like re-uploads) and plain random ones, half and half.
    near_idx = rng.integers(0, len(base), args.corpus_frames // 2)
    queries = np.concatenate([base[near_idx] + 0.3 * unit(rng, len(near_idx), args.dim) / np.sqrt(2),
                              unit(rng, args.corpus_frames - len(near_idx), args.dim)])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    order = rng.permutation(len(queries))
    queries = queries[order]
    has_copy = order < len(near_idx)  # queries made from an indexed vector (a re-upload): recall matters there
    print(f"search: {len(queries):,} queries x {len(base):,} indexed, dim {args.dim}, k={args.k} "
          f"(half near an indexed vector, half random)")
    results = {}
    for kind in ("flat", "ivf", "hnsw"):
        t0 = time.perf_counter()
        built = build_index(base, kind, ivf_nlist=args.ivf_nlist, ivf_nprobe=args.ivf_nprobe, hnsw_m=args.hnsw_m,
                            hnsw_ef_search=args.hnsw_ef, use_gpu=not args.cpu)
        build_s = time.perf_counter() - t0
        q = queries[: args.flat_queries] if kind == "flat" else queries
        t0 = time.perf_counter()
        _, ids = search(built, q, args.k, batch=args.batch)
        search_s = time.perf_counter() - t0
        results[kind] = (len(q) / search_s, ids[: args.flat_queries, 0], build_s, len(q))
    flat_qps, truth = results["flat"][0], results["flat"][1]
    near = has_copy[: args.flat_queries]
    print(f"{'index':<6} {'queries':>10} {'build s':>8} {'queries/s':>11} {'x Flat':>7} {'recall@1':>9} "
          f"{'recall@1 near':>14}")
    for kind, (qps, top1, build_s, n) in results.items():
        recall = float((top1 == truth).mean())
        recall_near = float((top1[near] == truth[near]).mean())
        print(f"{kind:<6} {n:>10,} {build_s:>8.1f} {qps:>11,.0f} {qps / flat_qps:>7.2f} {recall:>9.4f} {recall_near:>14.4f}")
    print("recall@1 vs Flat on the first --flat-queries queries; 'near' = queries with a planted copy in the index "
          "(random queries have no meaningful nearest neighbour)")


def bench_embed(args: argparse.Namespace) -> None:
    import open_clip
    import torch
    from PIL import Image

    from features.embed import FrameEmbedder

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(args.frames, 256, 341, 3), dtype=np.uint8)  # shard-sized frames
    job = FrameEmbedder(args.model, random_init=True, image_size=args.image_size, batch_size=args.embed_batch,
                        threads=args.threads)
    job.embed(frames[:2])
    t0 = time.perf_counter()
    job.embed(frames)
    job_fps = len(frames) / (time.perf_counter() - t0)

    kwargs = {"force_image_size": args.image_size} if args.image_size else {}
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=None, **kwargs)
    model = model.eval().to(job.device, job.dtype)  # same device and precision as the job's embedder
    pil = [Image.fromarray(f) for f in frames]
    with torch.no_grad():
        model.encode_image(torch.stack([preprocess(p) for p in pil[:2]]).to(job.device, job.dtype))
        t0 = time.perf_counter()
        for start in range(0, len(pil), args.embed_batch):
            batch = torch.stack([preprocess(p) for p in pil[start:start + args.embed_batch]])
            feats = model.encode_image(batch.to(job.device, job.dtype)).float()
            torch.nn.functional.normalize(feats, dim=-1).cpu().numpy().astype(np.float16)
        bare_fps = len(pil) / (time.perf_counter() - t0)
    print(f"embedding: {args.frames} frames 256x341 -> {args.model}@{job.image_size}, batch {args.embed_batch}, "
          f"{args.threads} threads, device {job.device}")
    print(f"  bare open_clip (PIL preprocess + encode_image): {bare_fps:8.1f} frames/s")
    print(f"  job FrameEmbedder.embed:                        {job_fps:8.1f} frames/s  ({job_fps / bare_fps:.2f}x bare)")


def bench_corpus(args: argparse.Namespace) -> None:
    from pathlib import Path

    from common.config import load_config
    from dedup.config import LeakageConfig
    from dedup.corpus import CorpusSample, FrameCache, batch_features, expand_shards, iter_samples
    from dedup.leakage import samples_per_batch
    from features.embed import FrameEmbedder, embedder_kwargs

    cfg = load_config(LeakageConfig, Path(args.config), [], job="leakage")
    shards = expand_shards(args.corpus_shards)
    samples = list(iter_samples(shards, max_samples=args.corpus_samples))
    if not samples:
        print(f"corpus features: no samples in {args.corpus_shards} (run the demo first); skipped")
        return
    embedder = FrameEmbedder(**embedder_kwargs(cfg.model))
    fps = cfg.corpus.frames_per_sample

    def fresh() -> list:
        return [CorpusSample(key=s.key, video_id=s.video_id, shard=s.shard, frames=s.frames, frame_times=[],
                             meta={}) for s in samples]

    embedder.embed(samples[0].frames[:2])   # warm-up
    t0 = time.perf_counter()
    one_by_one = fresh()
    for sample in one_by_one:
        batch_features([sample], embedder, False, fps, FrameCache(max_items=0))
    alone_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched, cache, group = fresh(), FrameCache(), samples_per_batch(cfg)
    for start in range(0, len(batched), group):
        batch_features(batched[start:start + group], embedder, False, fps, cache)
    job_s = time.perf_counter() - t0
    searched = sum(len(s.frame_indices or []) for s in batched)
    embedded = sum(s.embedded for s in batched)
    print(f"corpus features: {len(samples)} samples of {len(shards)} shards, {embedder.backend} "
          f"{embedder.fingerprint}, frames_per_sample {fps}, batch {cfg.model.batch_size}")
    print(f"  one sample at a time (baseline): {len(samples) / alone_s:8.1f} samples/s, {searched} frames through the model")
    print(f"  job (distinct frames, batched):  {len(samples) / job_s:8.1f} samples/s, {embedded} frames through the "
          f"model ({embedded / max(1, searched):.1%})  ratio {alone_s / job_s:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus-frames", type=int, default=1_000_000)
    p.add_argument("--downstream-frames", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--flat-queries", type=int, default=20_000, help="queries for Flat (baseline and recall truth)")
    p.add_argument("--batch", type=int, default=8192)
    p.add_argument("--ivf-nlist", type=int, default=0)
    p.add_argument("--ivf-nprobe", type=int, default=16)
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--hnsw-ef", type=int, default=64)
    p.add_argument("--cpu", action="store_true", help="never use GPU faiss")
    p.add_argument("--frames", type=int, default=128, help="frames for the embedding benchmark")
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--image-size", type=int, default=0)
    p.add_argument("--embed-batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-search", action="store_true")
    p.add_argument("--skip-embed", action="store_true")
    p.add_argument("--corpus-shards", default="data/demo-run/pipeline/shards/shard-*.tar")
    p.add_argument("--corpus-samples", type=int, default=400)
    p.add_argument("--config", default="configs/demo.yaml", help="its leakage section's model and corpus keys")
    p.add_argument("--skip-corpus", action="store_true")
    args = p.parse_args()
    if not args.skip_search:
        bench_search(args)
    if not args.skip_embed:
        bench_embed(args)
    if not args.skip_corpus:
        bench_corpus(args)


if __name__ == "__main__":
    main()
