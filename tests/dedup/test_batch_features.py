"""Corpus features in batches: each distinct frame (the same JPEG bytes, as overlapping samples of a video
store it) goes through the model once, samples share model batches, and a frame that does not decode fails
only its own sample; the features equal those of one sample at a time."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

TINY_MODEL = {"model": "ViT-S-32", "random_init": True, "image_size": 32, "batch_size": 16, "threads": 1}


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


class CountingEmbedder:
    """The real embedder, counting the frames it is asked to embed and the calls."""

    def __init__(self, inner):
        self.inner, self.frames, self.calls = inner, 0, 0
        self.fingerprint, self.dim = inner.fingerprint, inner.dim

    def embed(self, frames):
        self.calls += 1
        self.frames += len(frames)
        return self.inner.embed(frames)


def test_distinct_frames_are_embedded_once_in_shared_batches():
    from dedup.corpus import CorpusSample, FrameCache, batch_features, sample_features
    from features.embed import FrameEmbedder

    jpegs = [_jpeg(i) for i in range(10)]
    # three overlapping samples of one video: frames 0-5, 2-7, 4-9 (10 distinct of 18)
    samples = [CorpusSample(key=f"v_{s}", video_id="v", shard="", frames=jpegs[s:s + 6], frame_times=[], meta={})
               for s in (0, 2, 4)]
    embedder = CountingEmbedder(FrameEmbedder(**TINY_MODEL))
    cache = FrameCache()
    results = batch_features(samples, embedder, frames_per_sample=0, cache=cache)
    assert embedder.frames == 10 and embedder.calls == 1
    assert [s.embedded for s in samples] == [6, 2, 2]
    alone = CountingEmbedder(embedder.inner)
    for sample, (feats, source) in zip(samples, results):
        assert source == "computed" and feats.shape == (6, embedder.dim) and feats.dtype == np.float16
        fresh = CorpusSample(key=sample.key, video_id="v", shard="", frames=sample.frames, frame_times=[], meta={})
        single, _ = sample_features(fresh, alone)
        np.testing.assert_allclose(feats.astype(np.float32), single.astype(np.float32), atol=2e-3)
    np.testing.assert_array_equal(results[0][0][2], results[1][0][0])   # the same frame, the same row
    again = batch_features([CorpusSample(key="v_0b", video_id="v", shard="", frames=jpegs[:4], frame_times=[],
                                         meta={})], embedder, cache=cache)
    assert embedder.frames == 10 and again[0][1] == "computed"           # all four came from the cache


def test_a_broken_frame_fails_only_its_sample():
    from dedup.corpus import CorpusSample, batch_features
    from features.embed import FrameEmbedder

    good = [_jpeg(i) for i in range(4)]
    samples = [CorpusSample(key="a", video_id="a", shard="", frames=good, frame_times=[], meta={}),
               CorpusSample(key="b", video_id="b", shard="", frames=[good[0], b"not a jpeg"], frame_times=[], meta={}),
               CorpusSample(key="c", video_id="c", shard="", frames=[], frame_times=[], meta={})]
    results = batch_features(samples, FrameEmbedder(**TINY_MODEL))
    assert results[0][1] == "computed" and results[0][0].shape[0] == 4
    assert results[1] == (None, "bad_frames") and samples[1].errors
    assert results[2] == (None, "no_features")


def test_a_cache_smaller_than_the_batch_still_gives_every_row():
    from dedup.corpus import CorpusSample, FrameCache, batch_features
    from features.embed import FrameEmbedder

    jpegs = [_jpeg(i) for i in range(6)]
    sample = CorpusSample(key="s", video_id="s", shard="", frames=jpegs, frame_times=[], meta={})
    feats, source = batch_features([sample], FrameEmbedder(**TINY_MODEL), cache=FrameCache(max_items=2))[0]
    assert source == "computed" and feats.shape[0] == 6
