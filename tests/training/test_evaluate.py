"""`python -m training.evaluate --checkpoint CKPT --task TASK [--config FILE]` on a very small model: the
JSON keys the README promises and appendix Table 6 side by side in the printed table."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from tests.training.train_helpers import MINI_MODEL
from training.synthetic import write_synthetic_shards


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(checkpoint .pt with its .json, config YAML, output folder): 10 samples of 5 videos."""
    from training.model import TVTS
    from training.model_config import load_preset

    root = tmp_path_factory.mktemp("evaluate_cli")
    write_synthetic_shards(root / "shards", shards=1, samples=10, size=(32, 32), frames=4, seed=9)
    cfg = load_preset("tiny", MINI_MODEL)
    torch.manual_seed(0)
    ckpt = root / "model.pt"
    torch.save(TVTS(cfg).state_dict(), ckpt)
    ckpt.with_suffix(".json").write_text(json.dumps({"preset": "tiny", "model": asdict(cfg)}))
    shards = str(root / "shards" / "shard-*.tar")
    config = root / "eval.yaml"
    config.write_text(yaml.safe_dump({"seed": 0, "evaluate": {
        "data": {"shards": shards, "eval_shards": shards, "num_workers": 0},
        "eval": {"batch_size": 4, "sort_repeats": 2}, "output": {"dir": str(root / "out")}}}))
    return ckpt, config, root / "out"


def test_sort_writes_table_6_side_by_side(setup, capsys):
    from training.evaluate import main

    ckpt, config, out = setup
    assert main(["--checkpoint", str(ckpt), "--task", "sort", "--config", str(config)]) == 0
    result = json.loads((out / "sort.json").read_text())
    assert result["samples"] == 10 and result["sort_repeats"] == 2
    for key in ("sort_acc", "pos_acc", "sort_acc_unmasked", "sort_acc_text_only", "pos_acc_text_only",
                "sort_acc_other_video", "pos_acc_other_video", "permutation_rate"):
        assert key in result, key
    assert (result["chance_sort_acc"], result["chance_sort_acc_permutation"], result["chance_pos_acc"]) == \
        pytest.approx((100 / 256, 100 / 24, 25.0))
    table = capsys.readouterr().out
    for label in ("text + video (mask 75%)", "text only (T, SortTSF)", "control: another video's frames",
                  "random: K independent guesses", "random: a permutation (1/K!)"):
        assert label in table, table
    assert "0.39%" in table and "4.17%" in table and "25.00%" in table


def test_t2v_ranks_videos_in_both_directions(setup, capsys):
    from training.evaluate import main

    ckpt, config, out = setup
    assert main(["--checkpoint", str(ckpt), "--task", "t2v", "--config", str(config)]) == 0
    result = json.loads((out / "t2v.json").read_text())
    assert result["samples"] == 10 and result["videos"] == 5 and result["chance_R@1"] == 20.0
    assert result["rank_ties"] == "optimistic"
    assert {"R@1", "R@5", "R@10", "MedR", "MeanR", "v2t_R@1", "v2t_MedR", "v2t_MeanR", "tied"} <= set(result)
    assert result["R@5"] == 100.0                     # 5 videos: every query's video is in the top 5
    table = capsys.readouterr().out
    assert "text -> video" in table and "video -> text" in table and "5 videos" in table


def test_a_missing_checkpoint_is_one_line(setup, capsys, tmp_path):
    from training.evaluate import main

    _, config, _ = setup
    assert main(["--checkpoint", str(tmp_path / "nope.pt"), "--task", "sort", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_random_init_scores_the_same_samples_into_its_own_folder(setup):
    from training.evaluate import main

    ckpt, config, out = setup
    assert main(["--checkpoint", str(ckpt), "--task", "t2v", "--config", str(config), "--random-init",
                 "--set", "seed=3"]) == 0
    result = json.loads((out / "random-init" / "t2v.json").read_text())
    assert result["weights_from"] == "random init (seed 3)" and result["samples"] == 10
