"""`corpus.frames_per_sample`: only N evenly spaced frames of each corpus sample are embedded and searched.

The rule (dedup.corpus.frame_subset), stored and computed features picking the same frames, the config
check, the done.json fingerprint, and the leakage job on the demo corpus with N=4: the planted leaks are
still flagged and every reported corpus frame is the original one (index, time, features).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

TINY_MODEL = {"model": "ViT-S-32", "random_init": True, "image_size": 32, "batch_size": 16, "threads": 1}


def _pair_key(p: dict) -> tuple[str, str, str]:
    """A (corpus sample, downstream video) pair."""
    return (p["corpus_key"], p["downstream_dataset"], p["downstream_video_id"])


def test_frame_subset_rule():
    from dedup.corpus import frame_subset

    assert frame_subset(16, 4) == [2, 6, 10, 14]  # the centres of 0-3, 4-7, 8-11, 12-15
    assert frame_subset(16, 1) == [8]
    assert frame_subset(16, 2) == [4, 12]
    assert frame_subset(16, 3) == [2, 8, 13]
    for n in (0, 16, 20):  # 0: every frame; N >= the frame count: every frame
        assert frame_subset(16, n) == list(range(16))
    assert frame_subset(4, 3) == [0, 2, 3] and frame_subset(0, 4) == []
    for frames in range(1, 40):
        for n in range(1, frames):
            chosen = frame_subset(frames, n)
            assert len(chosen) == n and chosen == sorted(set(chosen))
            # frame c spans [c, c+1); the one picked for group i holds that group's centre (2i+1)*frames/(2n)
            assert all(2 * n * c <= (2 * i + 1) * frames < 2 * n * (c + 1) for i, c in enumerate(chosen)), chosen


def test_negative_frames_per_sample_is_a_one_line_config_error(tmp_path: Path, capsys):
    from common.config import ConfigError, load_config
    from dedup.__main__ import main
    from dedup.config import LeakageConfig, NearDupsConfig

    path = tmp_path / "cfg.yaml"
    path.write_text("model: {random_init: true}\ncorpus: {shards: x.tar, frames_per_sample: -1}\n")
    for cls in (LeakageConfig, NearDupsConfig):
        with pytest.raises(ConfigError, match=r"'corpus\.frames_per_sample' must be >= 0"):
            load_config(cls, path)
    with pytest.raises(SystemExit) as exc:
        main(["leakage", "--config", str(path)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "corpus.frames_per_sample" in err and len(err.splitlines()) == 1
    assert load_config(LeakageConfig, path, ["corpus.frames_per_sample=4"]).corpus.frames_per_sample == 4
    assert load_config(LeakageConfig, path, ["corpus.frames_per_sample=0"]).corpus.frames_per_sample == 0


def test_done_fingerprint_changes_with_frames_per_sample(demo_run: dict):
    from common.config import load_config
    from dedup.config import LeakageConfig
    from dedup.leakage import job_fingerprint

    base = job_fingerprint(load_config(LeakageConfig, demo_run["config"]))
    assert job_fingerprint(load_config(LeakageConfig, demo_run["config"])) == base
    four = job_fingerprint(load_config(LeakageConfig, demo_run["config"], ["corpus.frames_per_sample=4"]))
    assert four != base
    assert job_fingerprint(load_config(LeakageConfig, demo_run["config"], ["corpus.frames_per_sample=2"])) != four


def test_stored_and_computed_features_use_the_same_frames(demo_run: dict):
    """Demo shards' `clip.npy` (ViT-B-32) vs the same frames embedded now, through `sample_features`."""
    from dedup.corpus import expand_shards, iter_samples, sample_features

    embedder = demo_run["embedder"]
    sample = next(iter_samples(expand_shards(str(demo_run["work"] / "shards" / "shard-*.tar"))))
    assert len(sample.frames) == len(sample.clip) == 16 and sample.clip_model == embedder.fingerprint
    stored, source = sample_features(sample, embedder, True, 4)
    assert source == "stored" and sample.frame_indices == [2, 6, 10, 14]
    assert np.array_equal(stored, np.asarray(sample.clip)[[2, 6, 10, 14]])
    sample.frame_indices = None
    computed, source = sample_features(sample, embedder, False, 4)
    assert source == "computed" and sample.frame_indices == [2, 6, 10, 14] and computed.shape == stored.shape
    cos = np.einsum("nd,nd->n", computed.astype(np.float32), stored.astype(np.float32))
    assert cos.min() > 0.999, cos
    every, _ = sample_features(sample, embedder, True, 0)  # 0: every stored row, untouched
    assert every.shape[0] == 16 and sample.frame_indices == list(range(16))


def test_ray_feature_stage_carries_original_frame_indexes(demo_run: dict):
    """The Ray actor's stage (run in process here): stored and computed rows, subset alike, indexes kept."""
    import pandas as pd

    from dedup.config import ModelConfig
    from dedup.corpus import expand_shards, iter_samples
    from dedup.leakage import RayFeatures, from_npy, npy_bytes
    from features.embed import embedder_kwargs

    actor = RayFeatures(embedder_kwargs(ModelConfig(**TINY_MODEL)), use_stored=True, frames_per_sample=4)
    embedder = actor.stage.embedder
    sample = next(iter_samples(expand_shards(str(demo_run["work"] / "shards" / "shard-*.tar"))))
    every = embedder.embed(sample.frames)  # what the pipeline would store for this model
    frame = pd.DataFrame({
        "key": ["stored", "computed", "empty"], "video_id": ["v", "v", "w"],
        "frames": [sample.frames, sample.frames, []],
        "clip_npy": [npy_bytes(every), b"", b""], "clip_model": [embedder.fingerprint, "", ""],
    })
    out = actor(frame)
    assert list(out["feature_source"]) == ["stored", "computed", ""] and list(out["error"]) == ["", "", "no_features"]
    indices = [from_npy(b).tolist() if b else None for b in out["frame_indices_npy"]]
    assert indices == [[2, 6, 10, 14], [2, 6, 10, 14], None]
    stored, computed = (from_npy(b).astype(np.float32) for b in out["feats_npy"][:2])
    assert np.array_equal(stored, every[[2, 6, 10, 14]].astype(np.float32))
    assert np.einsum("nd,nd->n", stored, computed).min() > 0.999


@pytest.fixture(scope="module")
def four_frame_run(demo_run: dict, tmp_path_factory) -> dict:
    """The demo leakage run again with corpus.frames_per_sample=4 (stored features, cached downstream)."""
    from common.config import load_config
    from dedup.config import LeakageConfig
    from dedup.leakage import run

    out = tmp_path_factory.mktemp("leakage-4-frames") / "out"
    shutil.copytree(demo_run["result"].out_dir / "cache", out / "cache")  # no downstream decoding
    # The demo config's own threshold (0.935, DINOv2 features): with 4 of 16 frames the weakest planted leak
    # (top-left crop + squash) scores 0.956 (every frame: 0.964; brightness +0.12 0.963), the strongest
    # unrelated pair 0.817, so float noise (another CPU, a GPU) cannot flip a pair across it.
    cfg = load_config(LeakageConfig, demo_run["config"], [f"output.dir={out}", "corpus.frames_per_sample=4"])
    return {"result": run(cfg), "cfg": cfg}


def test_four_frames_per_sample_still_flags_every_planted_leak(demo_run: dict, four_frame_run: dict):
    result = four_frame_run["result"]
    corpus = result.summary["corpus"]
    assert corpus["frames_per_sample"] == 4 and corpus["features"] == {"stored": corpus["samples_read"]}
    assert corpus["frames_searched"] == 4 * corpus["samples_read"] > 0
    assert demo_run["result"].summary["corpus"]["frames_searched"] == 16 * corpus["samples_read"]
    pairs = json.loads((result.out_dir / "report.json").read_text())
    ids = {(p["corpus_video_id"], p["downstream_dataset"], p["downstream_video_id"]): p for p in pairs}
    for leak in demo_run["truth"]["leaks"]:
        key = (leak["corpus_video_id"], leak["dataset"], leak["downstream_video_id"])
        assert key in ids, f"planted {leak['kind']} leak not flagged with 4 frames per sample: {key}"
        assert leak["kind"] in ids[key]["kinds"]
    html = (result.out_dir / "report.html").read_text()
    assert "corpus.frames_per_sample=4" in html and f"{corpus['frames_searched']} frames" in html
    # A pair's best similarity can only drop when fewer corpus frames are looked at.
    full = {_pair_key(p): p["similarity"] for p in demo_run["result"].pairs + demo_run["result"].summary["near_misses"]
            if p["similarity"] is not None}
    compared = [p for p in pairs + result.summary["near_misses"] if p["similarity"] is not None and _pair_key(p) in full]
    assert len(compared) > 10 and all(p["similarity"] <= full[_pair_key(p)] for p in compared)

def test_four_frame_pairs_point_at_original_corpus_frames(demo_run: dict, four_frame_run: dict):
    """Index, time and features of each reported corpus frame are those of the stored frame it names."""
    from dedup.corpus import expand_shards, iter_samples
    from dedup.downstream_features import load_downstream

    result = four_frame_run["result"]
    samples = {s.key: s for s in iter_samples(expand_shards(str(demo_run["work"] / "shards" / "shard-*.tar")))}
    downstream = {}
    for spec in four_frame_run["cfg"].downstream:
        ds = load_downstream(spec, demo_run["embedder"], result.out_dir / "cache")
        assert ds.cached
        for row, (v, f) in enumerate(zip(ds.frame_video, ds.frame_index)):
            downstream[(spec.name, ds.videos[v].video_id, int(f))] = ds.feats[row].astype(np.float32)
    visual = [p for p in result.pairs + result.summary["near_misses"] if p["similarity"] is not None]
    assert len(visual) > 10
    for p in visual:
        sample = samples[p["corpus_key"]]
        index = p["corpus_frame_index"]
        assert index in (2, 6, 10, 14) and p["corpus_frames"] == 4, p
        assert p["corpus_time"] == pytest.approx(sample.frame_times[index]), p
        corpus_feat = np.asarray(sample.clip)[index].astype(np.float32)
        down_feat = downstream[(p["downstream_dataset"], p["downstream_video_id"], p["downstream_frame_index"])]
        assert float(corpus_feat @ down_feat) == pytest.approx(p["similarity"], abs=2e-4), p
    # Where the every-frame run found a pair's best corpus frame among the 4 searched ones, the 4-frame run
    # must report that very frame (index, time, downstream frame) with the same similarity.
    full = {_pair_key(p): p for p in demo_run["result"].pairs + demo_run["result"].summary["near_misses"]
            if p["similarity"] is not None}
    fields = ("corpus_frame_index", "corpus_time", "downstream_frame_index")
    same = [p for p in visual if _pair_key(p) in full and full[_pair_key(p)]["corpus_frame_index"] in (2, 6, 10, 14)]
    assert len(same) >= 5 and any(p["corpus_frame_index"] >= 4 for p in same)
    for p in same:
        other = full[_pair_key(p)]
        if p["downstream_frame_index"] != other["downstream_frame_index"]:
            # A tie: two downstream frames with the same features (a still stretch of the clip decodes to
            # the same picture), and which one the search returns depends on the batch it searched.
            ours = downstream[(p["downstream_dataset"], p["downstream_video_id"], p["downstream_frame_index"])]
            theirs = downstream[(p["downstream_dataset"], p["downstream_video_id"], other["downstream_frame_index"])]
            assert np.allclose(ours, theirs, atol=1e-3), (p, other)
            other = dict(other, downstream_frame_index=p["downstream_frame_index"])
        assert [p[f] for f in fields] == [other[f] for f in fields], (p, other)
        # The same two stored vectors; faiss's flat inner product differs in the last float bits with the
        # number of queries searched at once (measured: up to 6e-5 on unnormalised 768-d fp16 data, 432 vs 108
        # queries), so the similarity rounded to 5 decimals may differ by one unit.
        assert p["similarity"] == pytest.approx(other["similarity"], abs=1.5e-5), (p, other)

def test_frames_per_sample_at_least_the_frame_count_is_every_frame(demo_run: dict, tmp_path: Path):
    """N >= 16 searches every frame: report.json is byte-identical to the default (0) run's."""
    from common.config import load_config
    from dedup.config import LeakageConfig
    from dedup.leakage import run

    shutil.copytree(demo_run["result"].out_dir / "cache", tmp_path / "out" / "cache")
    cfg = load_config(LeakageConfig, demo_run["config"],
                      [f"output.dir={tmp_path / 'out'}", "corpus.frames_per_sample=16", "output.top_pairs=1"])
    result = run(cfg)
    assert result.summary["corpus"]["frames_searched"] == demo_run["result"].summary["corpus"]["frames_searched"]
    assert (tmp_path / "out" / "report.json").read_bytes() == (demo_run["result"].out_dir / "report.json").read_bytes()
