"""FrameEmbedder (seeded random init, fingerprint, Ray-style __call__) and the FAISS index kinds."""
from __future__ import annotations

import io

import numpy as np
import pytest

from dedup.index import build_index, choose_kind, search
from features.embed import FrameEmbedder

TINY = dict(model="ViT-S-32", random_init=True, image_size=32, batch_size=8, threads=1)


@pytest.fixture(scope="module")
def embedder() -> FrameEmbedder:
    return FrameEmbedder(seed=0, **TINY)


def _frames(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=(n, 48, 64, 3), dtype=np.uint8)


def test_seeded_random_init_is_reproducible(embedder: FrameEmbedder):
    again = FrameEmbedder(seed=0, **TINY)
    other = FrameEmbedder(seed=1, **TINY)
    assert again.fingerprint == embedder.fingerprint
    assert other.fingerprint != embedder.fingerprint
    assert "random-init-seed0" in embedder.fingerprint and embedder.fingerprint.startswith("ViT-S-32@32")
    frames = _frames(3)
    np.testing.assert_array_equal(embedder.embed(frames), again.embed(frames))


def test_features_are_fp16_unit_vectors_and_jpeg_input_matches(embedder: FrameEmbedder):
    from PIL import Image

    frames = _frames(5)
    feats = embedder.embed(frames)
    assert feats.dtype == np.float16 and feats.shape == (5, embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(feats.astype(np.float32), axis=1), 1.0, atol=2e-3)
    jpegs = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="PNG")  # lossless: same pixels as the array
        jpegs.append(buf.getvalue())
    np.testing.assert_allclose(embedder.embed(jpegs).astype(np.float32), feats.astype(np.float32), atol=2e-3)


def test_call_adds_a_clip_column_per_row(embedder: FrameEmbedder):
    batch = {"frames": [_frames(2, 1), _frames(3, 2)], "key": ["a", "b"]}
    out = embedder(batch)
    assert [c.shape for c in out["clip"]] == [(2, embedder.dim), (3, embedder.dim)]


def test_explicit_random_init_is_required():
    with pytest.raises(ValueError, match="random_init=True explicitly"):
        FrameEmbedder(model="ViT-S-32", image_size=32)


def test_index_kinds_agree_with_flat():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2000, 32)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = base[:200] + 0.05 * rng.standard_normal((200, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    flat = build_index(base, "flat")
    _, truth = search(flat, queries, 1)
    assert (truth[:, 0] == np.arange(200)).mean() > 0.99
    for kind in ("ivf", "hnsw"):
        built = build_index(base, kind, ivf_nlist=16, ivf_nprobe=8)
        assert built.kind == kind and built.size == 2000
        _, got = search(built, queries, 1, batch=64)
        assert (got[:, 0] == truth[:, 0]).mean() >= 0.9
    assert choose_kind(10, "auto", flat_max=100) == "flat" and choose_kind(1000, "auto", flat_max=100) == "hnsw"
    empty = build_index(np.zeros((0, 32), np.float32), "flat")
    sims, ids = search(empty, queries[:3], 5)
    assert (ids == -1).all()
