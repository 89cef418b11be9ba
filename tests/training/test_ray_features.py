"""Downstream features on Ray actors (`downstream.features.ray_actors`): the same features in the same order
as in this process (bit for bit at the same torch thread count, 1 per actor here), on a private local Ray
(127.0.0.1) that the extraction starts and shuts down; the cache works as without Ray (a second run
starts no Ray and decodes nothing)."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from tests.training.eval_helpers import msvd_set
from tests.training.train_helpers import MINI_MODEL


def test_two_ray_actors_give_the_in_process_features(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    import training.downstream_features as features
    import training.ray_features as ray_features
    from training.downstream_features import read_split, video_features
    from training.eval_config import DatasetSpec, FeatureSettings
    from training.evaluate import load_model
    from training.features_cache import FeatureCache, weights_digest
    from training.model import TVTS
    from training.model_config import load_preset
    from training.video_views import ViewSpec

    cfg = load_preset("tiny", MINI_MODEL)
    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"
    torch.save(TVTS(cfg).state_dict(), ckpt)
    ckpt.with_suffix(".json").write_text(json.dumps({"preset": "tiny", "model": asdict(cfg)}))
    spec = DatasetSpec(**{**msvd_set(tmp_path / "msvd", videos=7), "name": "m"})
    broken = sorted((tmp_path / "msvd" / "YouTubeClips").iterdir())[3]
    broken.write_bytes(b"not a video")                    # a failure in the middle keeps its place
    split = read_split(spec, "")
    model, _ = load_model(ckpt)
    weights = weights_digest(model)
    views = ViewSpec(4, 32, clips=2)                       # 2 views a video, 3 a batch: groups of 2 videos

    threads = torch.get_num_threads()
    torch.set_num_threads(1)                             # as each actor of ray_cpus_per_actor 1 runs
    try:
        local = video_features(model, weights, spec, split, views, FeatureSettings(batch_size=3), FeatureCache(None))
    finally:
        torch.set_num_threads(threads)
    assert not ray.is_initialized()
    settings = FeatureSettings(batch_size=3, ray_actors=2)
    cache = FeatureCache(tmp_path / "cache")
    on_ray = video_features(model, weights, spec, split, views, settings, cache)
    assert not ray.is_initialized()                        # the private local Ray is shut down again
    assert on_ray.cls.shape == (7, 2, 64) and not on_ray.cached
    assert np.array_equal(on_ray.ok, local.ok) and on_ray.ok.sum() == 6 and not on_ray.ok[3]
    assert np.array_equal(on_ray.cls, local.cls)            # bit for bit, in the same order
    assert on_ray.failures == local.failures and on_ray.examples == local.examples
    assert not np.array_equal(on_ray.cls[0], on_ray.cls[1])  # real features, not one row repeated

    def no_ray(*args, **kwargs):
        raise AssertionError("started Ray although the features are cached")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a video although its features are cached")

    monkeypatch.setattr(ray_features, "embed_on_actors", no_ray)
    monkeypatch.setattr(features, "decode_views", no_decoding)
    again = video_features(model, weights, spec, split, views, settings, cache)
    assert again.cached and np.array_equal(again.cls, local.cls) and np.array_equal(again.ok, local.ok)


def test_groups_and_merge_keep_the_item_order():
    from collections import Counter

    from training.view_embed import Embedded, item_groups, merge

    assert item_groups(5, 2, 3) == [[0, 1], [2, 3], [4]]
    assert item_groups(3, 6, 16) == [[0, 1, 2]]                  # ceil(16 / 6) = 3 videos per batch
    assert item_groups(2, 4, 1) == [[0], [1]]
    parts = [Embedded([2, 3], np.full((2, 1, 2), 2.0, np.float32), np.array([True, False]), Counter(x=1), [(3, "b")]),
             Embedded([0, 1], np.full((2, 1, 2), 1.0, np.float32), np.array([True, True]))]
    merged = merge(parts, 4, 1, 2)
    assert merged.cls[:, 0, 0].tolist() == [1.0, 1.0, 2.0, 2.0] and merged.ok.tolist() == [True, True, True, False]
    assert merged.failures == Counter(x=1) and merged.examples == [(3, "b")]
