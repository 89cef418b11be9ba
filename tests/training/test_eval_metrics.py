"""Class retrieval (v2v) and top-k accuracy (linear probe) on hand-made matrices; the features cache key."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.metrics import class_retrieval, topk_accuracy


def test_class_retrieval_hits_and_chance():
    # 2 queries, gallery of 4: classes [0, 0, 1, 1]
    sim = torch.tensor([[0.1, 0.9, 0.5, 0.2],      # query class 0: nearest is item 1 (class 0): hit at 1
                        [0.9, 0.8, 0.1, 0.7]])     # query class 1: items 0, 1 (class 0) first, then 3: hit at 3
    out = class_retrieval(sim, torch.tensor([0, 1]), torch.tensor([0, 0, 1, 1]), ks=(1, 2, 3))
    assert (out["R@1"], out["R@2"], out["R@3"]) == (50.0, 50.0, 100.0)
    # m = 2 of G = 4 share the class: P(hit in top 1) = 1/2, top 2: 1 - C(2,2)/C(4,2) = 5/6, top 3: 1
    assert out["chance_R@1"] == pytest.approx(50.0)
    assert out["chance_R@2"] == pytest.approx(100 * 5 / 6) and out["chance_R@3"] == pytest.approx(100.0)


def test_class_retrieval_leaves_the_query_out():
    feats = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=-1)
    labels = torch.tensor([0, 0, 1, 1])
    out = class_retrieval(feats @ feats.t(), labels, labels, ks=(1,), exclude=torch.eye(4, dtype=torch.bool))
    assert out["R@1"] == 100.0                         # without leaving out, each query would find itself
    assert out["chance_R@1"] == pytest.approx(100 / 3)  # 1 same-class item among the 3 others


def test_topk_accuracy():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    out = topk_accuracy(scores, torch.tensor([1, 1, 0]), ks=(1, 2, 5))
    assert out["top1"] == pytest.approx(100 / 3) and out["top2"] == pytest.approx(200 / 3) and out["top5"] == 100.0
    with pytest.raises(ValueError):
        topk_accuracy(scores, torch.tensor([1, 1]))


def test_linear_probe_learns_a_separable_problem_and_is_seeded():
    from training.eval_config import LinearProbeSettings
    from training.linear_probe import probe_scores

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 3
    labels = torch.arange(4).repeat_interleave(10)
    train = centres[labels][:, None] + torch.randn(40, 2, 16, generator=g)       # 2 views per video
    test = centres[labels][:, None] + torch.randn(40, 2, 16, generator=g)
    cfg = LinearProbeSettings(epochs=10, batch_size=32)
    out = probe_scores(train, labels, test, labels, 4, cfg, seed=0)
    assert out["top1"] >= 90.0 and out["final_loss"] < out["first_loss"]
    assert probe_scores(train, labels, test, labels, 4, cfg, seed=0) == out
    shuffled = probe_scores(train, labels[torch.randperm(40, generator=g)], test, labels, 4, cfg, seed=0)
    assert shuffled["top1"] < 60.0                      # labels that say nothing: far from the real fit


def test_weights_digest_follows_the_weights_not_the_file(tmp_path):
    from training.features_cache import FeatureCache, weights_digest

    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.bias += 1e-6
    assert weights_digest(a) != weights_digest(b)
    cache = FeatureCache(tmp_path)
    key = {"weights": weights_digest(a), "views": [1, 1]}
    assert cache.load("video", key) is None
    cache.save("video", key, {"cls": np.ones((2, 1, 3), np.float32)}, {"failures": {}})
    arrays, info = cache.load("video", key)
    assert arrays["cls"].shape == (2, 1, 3) and info == {"failures": {}}
    assert cache.load("video", {**key, "views": [2, 3]}) is None and not math.isnan(arrays["cls"].sum())
