"""`python -m training.evaluate --task t2v|v2v|linear-probe --dataset NAME` end to end on a very small model
and tiny generated clips in the official formats; the features cache; the readers' side on the real
annotation files of shared/data/downstream_annotations."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from tests.training.eval_helpers import didemo_set, msrvtt_videos_for, msvd_set, ssv2_set, ucf_set
from tests.training.train_helpers import MINI_MODEL


@pytest.fixture(scope="module")
def sets(tmp_path_factory, shared_data) -> dict:
    """(checkpoint .pt with its .json, config YAML, output folder) over five tiny datasets."""
    from training.model import TVTS
    from training.model_config import load_preset

    root = tmp_path_factory.mktemp("downstream_eval")
    cfg = load_preset("tiny", MINI_MODEL)
    torch.manual_seed(0)
    ckpt = root / "model.pt"
    torch.save(TVTS(cfg).state_dict(), ckpt)
    ckpt.with_suffix(".json").write_text(json.dumps({"preset": "tiny", "model": asdict(cfg)}))
    jsfusion = shared_data / "downstream_annotations" / "msrvtt" / "MSRVTT_JSFUSION_test.csv"
    msrvtt_videos_for(jsfusion, root / "msrvtt", 5)
    datasets = [
        {"name": "colours", **ucf_set(root / "ucf")},
        {"name": "captions", **msvd_set(root / "msvd")},
        {"name": "paragraphs", **didemo_set(root / "didemo")},
        {"name": "ssv2", **ssv2_set(root / "ssv2")},
        # The real 1k-A csv; videos for its first 5 rows only, and max_videos keeps those.
        {"name": "msrvtt", "format": "msrvtt", "annotations": [str(jsfusion)], "video_root": str(root / "msrvtt"),
         "max_videos": 5},
    ]
    config = root / "eval.yaml"
    config.write_text(yaml.safe_dump({"seed": 0, "evaluate": {
        "data": {"shards": "unused", "num_workers": 0}, "output": {"dir": str(root / "out")},
        "downstream": {"datasets": datasets, "features": {"batch_size": 8},
                       "linear_probe": {"dataset": "colours", "epochs": 30, "seeds": 2}}}}))
    return {"ckpt": str(ckpt), "config": str(config), "out": root / "out"}


def run(sets, *args: str) -> int:
    from training.evaluate import main

    return main(["--checkpoint", sets["ckpt"], "--config", sets["config"], *args])


def test_linear_probe_separates_the_classes_and_the_second_run_reads_the_cache(sets, capsys, monkeypatch):
    assert run(sets, "--task", "linear-probe") == 0
    result = json.loads((sets["out"] / "colours" / "linear-probe.json").read_text())
    assert (result["classes"], result["train_videos"], result["eval_videos"]) == (3, 18, 9)
    assert result["views"] == "2 x 3 views (clips x crops)" and result["seeds"] == 2
    assert result["chance_top1"] == pytest.approx(100 / 3)
    # Three solid colours under noise: even random [CLS] features separate them. Chance is 33%.
    assert result["top1"] >= 88.0, result
    assert len(result["top1_per_seed"]) == 2 and "top1_std" in result
    assert result["features"]["train"]["cached"] is False and result["features"]["eval"]["decoded"] == 9
    assert "linear probe" in capsys.readouterr().out

    import training.downstream_features as features

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a video although its features are cached")

    monkeypatch.setattr(features, "decode_views", no_decoding)
    assert run(sets, "--task", "linear-probe") == 0
    again = json.loads((sets["out"] / "colours" / "linear-probe.json").read_text())
    assert again["features"]["train"]["cached"] and again["features"]["eval"]["cached"]
    assert again["top1_per_seed"] == result["top1_per_seed"]          # same features, same seeds
    assert "features from the cache" in capsys.readouterr().out


def test_preset_init_is_the_model_pretraining_starts_from(sets):
    assert run(sets, "--task", "v2v", "--dataset", "colours", "--preset-init", "--set", "seed=2") == 0
    result = json.loads((sets["out"] / "preset-init" / "colours" / "v2v.json").read_text())
    assert result["weights_from"].startswith("preset init (random video tower") and "seed 2" in result["weights_from"]


def test_random_init_is_another_model_with_its_own_cache_and_folder(sets):
    # The checkpoint itself is a seed-0 random init of this preset: seed 1 is another model.
    assert run(sets, "--task", "linear-probe", "--random-init", "--set", "seed=1",
               "--set", "downstream.linear_probe.seeds=1") == 0
    result = json.loads((sets["out"] / "random-init" / "colours" / "linear-probe.json").read_text())
    assert result["weights_from"] == "random init (seed 1)" and result["features"]["train"]["cached"] is False


def test_t2v_several_captions_per_video_msvd(sets, capsys):
    assert run(sets, "--task", "t2v", "--dataset", "captions") == 0
    result = json.loads((sets["out"] / "captions" / "t2v.json").read_text())
    assert (result["videos"], result["queries"], result["query"]) == (4, 12, "caption")
    assert result["chance_R@1"] == 25.0 and result["v2t_chance_R@1"] == pytest.approx(100 / 12)
    assert {"R@1", "R@5", "R@10", "MedR", "MeanR", "v2t_R@1", "v2t_MedR", "tied"} <= set(result)
    assert result["R@5"] == 100.0                        # 4 videos: every caption's video is in the top 5
    table = capsys.readouterr().out
    assert "text -> video" in table and "12 caption queries, 4 videos" in table


def test_t2v_paragraphs_for_didemo(sets):
    # Decoding in a DataLoader worker process too.
    assert run(sets, "--task", "t2v", "--dataset", "paragraphs", "--set", "downstream.features.num_workers=1") == 0
    result = json.loads((sets["out"] / "paragraphs" / "t2v.json").read_text())
    assert (result["videos"], result["queries"], result["query"]) == (3, 3, "paragraph")
    assert result["max_text_length"] == 4 * 16                       # MINI_MODEL's text.max_length x 4


def test_t2v_on_the_real_msrvtt_1k_a_csv(sets):
    assert run(sets, "--task", "t2v", "--dataset", "msrvtt") == 0
    result = json.loads((sets["out"] / "msrvtt" / "t2v.json").read_text())
    assert (result["split"], result["videos"], result["queries"]) == ("test", 5, 5)


def test_v2v_leaves_the_query_out_when_there_is_no_train_split(sets, capsys):
    assert run(sets, "--task", "v2v", "--dataset", "ssv2") == 0
    result = json.loads((sets["out"] / "ssv2" / "v2v.json").read_text())
    assert result["split"] == "val" and result["gallery_split"] == "val (query left out)"
    assert (result["queries"], result["gallery"], result["classes"]) == (6, 6, 2)
    # 5 candidates per query, 2 of its class: a random top-1 hits 2/5 of the time.
    assert result["chance_R@1"] == pytest.approx(40.0) and result["chance_R@5"] == pytest.approx(100.0)
    assert result["R@1"] == 100.0                     # two colours: the nearest other clip is of the same one
    assert "chance" in capsys.readouterr().out


def test_v2v_test_clips_query_the_train_clips(sets):
    assert run(sets, "--task", "v2v", "--dataset", "colours") == 0
    result = json.loads((sets["out"] / "colours" / "v2v.json").read_text())
    assert result["gallery_split"] == "train" and (result["queries"], result["gallery"]) == (9, 18)
    assert result["R@1"] > result["chance_R@1"] + 30


@pytest.mark.parametrize("args, message", [
    (["--task", "v2v", "--dataset", "nope"], "not in the config's downstream.datasets"),
    (["--task", "v2v", "--dataset", "captions"], "has no class labels"),
    (["--task", "t2v", "--dataset", "colours"], "has no captions"),
    (["--task", "v2v"], "pass --dataset NAME"),
    (["--task", "sort", "--dataset", "colours"], "sort scores the held-out"),
])
def test_a_wrong_dataset_is_one_line(sets, capsys, args, message):
    assert run(sets, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_a_missing_video_is_counted_not_fatal(sets, tmp_path):
    from training.downstream_features import read_split, video_features
    from training.eval_config import DatasetSpec, FeatureSettings
    from training.evaluate import load_model
    from training.features_cache import FeatureCache, weights_digest
    from training.video_views import ViewSpec

    spec = DatasetSpec(**{**msvd_set(tmp_path / "msvd", videos=3), "name": "m"})
    (Path(spec.video_root) / next(Path(spec.video_root).iterdir()).name).write_bytes(b"not a video")
    model, _ = load_model(sets["ckpt"])
    split = read_split(spec, "")
    feats = video_features(model, weights_digest(model), spec, split, ViewSpec(4, 32), FeatureSettings(),
                           FeatureCache(None))
    assert feats.ok.sum() == 2 and sum(feats.failures.values()) == 1
    assert feats.failures.get("decode_failed") == 1 or feats.failures.get("decode_no_frames") == 1


# ---- the readers' side on the real annotation files ------------------------------------------------------
def test_splits_and_queries_on_the_real_annotation_files(shared_data):
    from training.downstream_eval import t2v_queries
    from training.downstream_features import read_split
    from training.eval_config import DatasetSpec

    ann = shared_data / "downstream_annotations"
    msvd = DatasetSpec(name="msvd", format="msvd", annotations=[str(p) for p in sorted((ann / "msvd").iterdir())])
    test = read_split(msvd, msvd.eval_split)
    assert (test.name, len(test.videos)) == ("test", 670)                 # MSVD's official test split
    didemo = DatasetSpec(name="didemo", format="didemo", annotations=[str(ann / "didemo" / "test_data.first300.json")])
    assert didemo.paragraphs
    videos = read_split(didemo, didemo.eval_split).videos
    texts, owner = t2v_queries(videos, didemo.paragraphs)
    assert len(texts) == len(videos) < 300                # 300 sentences, several per video: one paragraph each
    several = next(i for i, v in enumerate(videos) if len(v.captions) > 1)
    assert texts[several] == " ".join(c.strip() for c in videos[several].captions)
    ssv2 = DatasetSpec(name="ssv2", format="ssv2", annotations=[
        str(ann / "ssv2" / "something-something-v2-labels.json"),
        str(ann / "ssv2" / "something-something-v2-validation.first1000.json")])
    val = read_split(ssv2, ssv2.eval_split)               # SSV2 publishes labelled val, no test labels
    assert val.name == "val" and len(val.videos) == 1000 and all(v.label for v in val.videos)
    k400 = DatasetSpec(name="k400", format="kinetics", annotations=[str(ann / "kinetics400" / "kinetics-400_val.3perclass.csv")],
                       clips=5)
    assert read_split(k400, k400.eval_split).name == "val" and k400.clips == 5


def test_summary_puts_the_model_beside_random_init_and_chance(tmp_path):
    from training.eval_summary import summary_lines

    (tmp_path / "random-init" / "acts").mkdir(parents=True)
    (tmp_path / "acts").mkdir()
    probe = {"task": "linear-probe", "dataset": "acts", "preset": "tiny", "chance_top1": 16.67}
    (tmp_path / "acts" / "linear-probe.json").write_text(json.dumps({**probe, "top1": 43.33}))
    (tmp_path / "random-init" / "acts" / "linear-probe.json").write_text(json.dumps({**probe, "top1": 30.0}))
    (tmp_path / "sort.json").write_text(json.dumps({"task": "sort", "sort_acc": 16.2, "chance_sort_acc": 0.39,
                                                    "pos_acc": 66.1, "chance_pos_acc": 25.0}))
    lines = summary_lines(tmp_path)
    row = next(line for line in lines if "linear probe top-1" in line)
    assert row.split()[-3:] == ["43.33%", "30.00%", "16.67%"]
    sort_row = next(line for line in lines if "position accuracy" in line)
    assert sort_row.split()[-3:] == ["66.10%", "-", "25.00%"]          # no random-init sort result: "-"
    # The held-out results of a baseline sit directly in its folder (random-init/sort.json).
    (tmp_path / "random-init" / "sort.json").write_text(json.dumps({"task": "sort", "sort_acc": 0.0, "pos_acc": 24.6,
                                                                    "chance_pos_acc": 25.0}))
    sort_row = next(line for line in summary_lines(tmp_path) if "position accuracy" in line)
    assert sort_row.split()[-3:] == ["66.10%", "24.60%", "25.00%"]
    assert "preset init" not in lines[0]                               # no --preset-init results: no column
    (tmp_path / "preset-init" / "acts").mkdir(parents=True)
    (tmp_path / "preset-init" / "acts" / "linear-probe.json").write_text(json.dumps({**probe, "top1": 40.0}))
    lines = summary_lines(tmp_path)
    assert "preset init" in lines[0]
    row = next(line for line in lines if "linear probe top-1" in line)
    assert row.split()[-4:] == ["43.33%", "30.00%", "40.00%", "16.67%"]
