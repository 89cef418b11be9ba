"""FAISS inner-product index over L2-normalised features (inner product = cosine similarity).

`build_index(feats, kind="auto")`: exact `IndexFlatIP` up to `flat_max` vectors; beyond it HNSW (no
training, good recall) unless `ivf` is asked for. On a machine with GPU faiss and a visible GPU, Flat and
IVF indexes are moved to the GPU (HNSW stays on the CPU: faiss has no GPU HNSW).
`search(index, queries, k, batch)` searches in batches so a caller can stream any number of queries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.deps import require


@dataclass
class BuiltIndex:
    index: Any
    kind: str  # flat | ivf | hnsw
    on_gpu: bool
    size: int
    dim: int


def choose_kind(n: int, kind: str = "auto", flat_max: int = 2_000_000) -> str:
    if kind != "auto":
        return kind
    return "flat" if n <= flat_max else "hnsw"


def _gpu_available(faiss: Any) -> bool:
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001 - a CPU build may lack the symbol entirely
        return False


def build_index(feats: np.ndarray, kind: str = "auto", flat_max: int = 2_000_000, ivf_nlist: int = 0,
                ivf_nprobe: int = 16, hnsw_m: int = 32, hnsw_ef_search: int = 128, use_gpu: bool = True,
                seed: int = 0) -> BuiltIndex:
    """Index the rows of `feats` (float [n, D], L2-normalised) for inner-product search."""
    faiss = require("faiss", "faiss-cpu", "similarity search")
    x = np.ascontiguousarray(feats, dtype=np.float32)
    n, dim = x.shape
    kind = choose_kind(n, kind, flat_max)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(40, 2 * hnsw_m)
        index.hnsw.efSearch = hnsw_ef_search
    elif kind == "ivf":
        nlist = ivf_nlist or max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        train = x
        if n > nlist * 256:  # faiss samples at most 256 points per centroid anyway
            rng = np.random.default_rng(seed)
            train = x[rng.choice(n, nlist * 256, replace=False)]
        index.train(train)
        index.nprobe = min(ivf_nprobe, nlist)
    else:
        raise ValueError(f"unknown index kind {kind!r}: use auto, flat, ivf or hnsw")
    on_gpu = False
    if use_gpu and kind in ("flat", "ivf") and _gpu_available(faiss):
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
        index._gpu_resources = resources  # keep them alive as long as the index
        on_gpu = True
    if n:
        index.add(x)
    return BuiltIndex(index=index, kind=kind, on_gpu=on_gpu, size=n, dim=dim)


def search(built: BuiltIndex, queries: np.ndarray, k: int, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (similarities float32 [q, k], ids int64 [q, k]; id -1 where fewer than k exist)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    k = max(1, min(k, built.size)) if built.size else 1
    sims = np.full((len(q), k), -np.inf, dtype=np.float32)
    ids = np.full((len(q), k), -1, dtype=np.int64)
    if not built.size or not len(q):
        return sims, ids
    for start in range(0, len(q), batch):
        s, i = built.index.search(q[start:start + batch], k)
        sims[start:start + len(s)], ids[start:start + len(i)] = s, i
    return sims, ids
