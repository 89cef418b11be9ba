"""Within-corpus near-duplicates, SemDeDup-style: cluster, compare within clusters, keep one per group.

    python -m dedup near-dups --config configs/demo.yaml [--set threshold=0.97 ...]

1. Stream the corpus shards; each sample becomes one vector: the mean of its L2-normalised frame
   features (stored `clip.npy` or computed; with corpus.frames_per_sample only N evenly spaced frames,
   dedup.corpus.frame_subset), normalised again. Vectors go to a float16 memmap on disk
   (output.dir/sample_features.f16), so memory does not grow with the corpus.
2. faiss k-means over the vectors (or a sample of them) -> every sample assigned to its nearest centroid.
3. Within each cluster, all pairs above `threshold` (cosine) are linked (union-find); with
   `ignore_same_video` spans of one video are never linked to each other.
4. Per group, keep the sample least similar to its cluster centroid (SemDeDup's rule: the most atypical
   copy carries the most information), block the others.
Outputs (output.dir: a folder or an fsspec URL, each file atomic): near_dups.json (groups with
similarities), blocklist.txt (sample keys), summary.json; for a URL output.dir the memmap of step 1
lives in a local state folder (common.storage.local_state_dir).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from common import storage
from common.cli import JobError, progress
from common.config import add_config_args, load_from_args
from dedup.config import NearDupsConfig
from dedup.locations import check_locations, state_dir


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def sample_vectors(cfg: NearDupsConfig, work_dir: Path) -> tuple[np.memmap | np.ndarray, list[dict], Counter]:
    """One normalised mean frame feature per sample, in a disk-backed float16 array in `work_dir` (local)."""
    from dedup.corpus import expand_shards, iter_features, iter_samples, samples_per_batch
    from features.embed import FrameEmbedder, embedder_kwargs

    shards = expand_shards(cfg.corpus.shards)
    if not shards:
        raise JobError(f"corpus.shards={storage.redact(cfg.corpus.shards)!r} matches no shard files: run the pipeline first")
    embedder = FrameEmbedder(**embedder_kwargs(cfg.model))
    counts: Counter = Counter()
    rows: list[dict] = []
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "sample_features.f16"
    capacity = 1024
    store = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(capacity, embedder.dim))
    samples = progress(iter_samples(shards, counts, cfg.corpus.max_samples), desc="corpus", unit="sample")
    group = samples_per_batch(cfg.model.batch_size, cfg.corpus.frames_per_sample)
    for sample, feats, source in iter_features(samples, embedder, cfg.corpus.use_stored_features,
                                               cfg.corpus.frames_per_sample, group):
        if feats is None:
            counts[f"failed:{source}"] += 1
            continue
        counts[f"features:{source}"] += 1
        mean = feats.astype(np.float32).mean(0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        if len(rows) == capacity:  # grow the memmap by doubling (rare, amortised)
            store.flush()
            capacity *= 2
            old = np.load(path, mmap_mode="r")
            grown = np.lib.format.open_memmap(str(path) + ".tmp", mode="w+", dtype=np.float16,
                                              shape=(capacity, embedder.dim))
            grown[: len(rows)] = old[: len(rows)]
            grown.flush()
            del old, store
            Path(str(path) + ".tmp").replace(path)
            store = np.load(path, mmap_mode="r+")
        store[len(rows)] = mean.astype(np.float16)
        rows.append({"key": sample.key, "video_id": sample.video_id, "shard": sample.shard})
    store.flush()
    counts["samples"] = len(rows)
    return store[: len(rows)], rows, counts


def find_groups(vectors: np.ndarray, rows: list[dict], cfg: NearDupsConfig) -> list[dict]:
    """Near-duplicate groups (>= 2 samples each) with the kept sample first."""
    from common.deps import require

    faiss = require("faiss", "faiss-cpu", "k-means clustering")
    n = len(rows)
    if n < 2:
        return []
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    k = cfg.n_clusters or max(1, int(np.sqrt(n / 4)))
    k = min(k, n)
    if k > 1:
        kmeans = faiss.Kmeans(x.shape[1], k, niter=cfg.kmeans_iters, seed=cfg.seed, spherical=True,
                              min_points_per_centroid=1, verbose=False)
        kmeans.train(x)
        centroids = kmeans.centroids
        _, assign = kmeans.index.search(x, 1)
        assign = assign[:, 0]
    else:
        centroids = x.mean(0, keepdims=True)
        centroids /= max(float(np.linalg.norm(centroids)), 1e-12)
        assign = np.zeros(n, np.int64)
    uf = _UnionFind(n)
    best_sim: dict[int, float] = {}
    for cluster in np.unique(assign):
        members = np.flatnonzero(assign == cluster)
        if len(members) < 2:
            continue
        sims = x[members] @ x[members].T  # [m, m]
        iu, ju = np.nonzero(np.triu(sims >= cfg.threshold, k=1))
        for a, b in zip(members[iu], members[ju]):
            if cfg.ignore_same_video and rows[a]["video_id"] == rows[b]["video_id"]:
                continue
            uf.union(int(a), int(b))
            s = float(x[a] @ x[b])
            best_sim[int(a)] = max(best_sim.get(int(a), -1.0), s)
            best_sim[int(b)] = max(best_sim.get(int(b), -1.0), s)
    groups: dict[int, list[int]] = {}
    for i in best_sim:
        groups.setdefault(uf.find(i), []).append(i)
    centroid_sim = np.einsum("nd,nd->n", x, centroids[assign])
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        # SemDeDup: keep the member least similar to its centroid; ties by key for a stable choice.
        members.sort(key=lambda i: (float(centroid_sim[i]), rows[i]["key"]))
        out.append({
            "kept": rows[members[0]]["key"],
            "removed": [rows[i]["key"] for i in members[1:]],
            "members": [{"key": rows[i]["key"], "video_id": rows[i]["video_id"], "cluster": int(assign[i]),
                         "max_similarity": round(best_sim[i], 5)} for i in members],
        })
    out.sort(key=lambda g: g["kept"])
    return out


def run(cfg: NearDupsConfig) -> dict:
    from dedup.blocklist import rewrite_shards, write_blocklist
    from dedup.corpus import expand_shards

    started = time.time()
    out_dir = cfg.output.dir
    storage.check_location(out_dir, "output.dir", writable=True)  # local: mkdir; URL: the bucket
    # The memmap of sample vectors is working state: beside the outputs when local, else in a stable local
    # folder for that URL (a memmap cannot live in an object store).
    vectors, rows, counts = sample_vectors(cfg, state_dir(out_dir))
    groups = find_groups(vectors, rows, cfg)
    entries = {key: f"near-duplicate of {g['kept']}" for g in groups for key in g["removed"]}
    storage.write_json(storage.join(out_dir, "near_dups.json"), groups)
    write_blocklist(storage.join(out_dir, "blocklist.txt"), entries,
                    [f"near-duplicates: {len(groups)} groups, threshold {cfg.threshold}; one sample kept per group"])
    summary = {"samples": len(rows), "groups": len(groups), "blocked": len(entries), "threshold": cfg.threshold,
               "random_init": cfg.model.random_init, "frames_per_sample": cfg.corpus.frames_per_sample,
               "features": {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("features:")},
               "failures": {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("failed:")},
               "bad_shards": counts["bad_shard"], "seconds": round(time.time() - started, 2)}
    if cfg.output.rewrite_shards:
        summary["rewrite"] = rewrite_shards(expand_shards(cfg.corpus.shards), set(entries),
                                            storage.join(out_dir, "clean_shards"))
    storage.write_json(storage.join(out_dir, "summary.json"), summary)
    return summary


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(prog="python -m dedup near-dups", description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    args = parser.parse_args(argv)
    cfg = load_from_args(NearDupsConfig, args, job="near_dups")
    try:
        check_locations(cfg.output.dir, cfg.corpus.shards)  # before any work
        summary = run(cfg)
    except storage.StorageError as exc:  # a location that cannot be used: like a bad config key
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    print(f"near-duplicates: {summary['samples']} samples, {summary['groups']} groups, {summary['blocked']} blocked "
          f"(features {summary['features']}, failures {summary['failures'] or 0}); {summary['seconds']:.1f}s")
    print(f"blocklist: {storage.redact(storage.join(cfg.output.dir, 'blocklist.txt'))}")
    return 0
