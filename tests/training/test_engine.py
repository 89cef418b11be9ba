"""The DeepSpeed engine: recipe pieces, a 2-rank ZeRO-1 run with gradient accumulation, post-pretrain mode."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from common.config import load_config
from tests.training.train_helpers import PY, ROOT, deepspeed_cmd, metrics, run, write_config
from training.config import PretrainConfig
from training.engine import deepspeed_config, lr_lambda
from training.synthetic import write_synthetic_shards

PRESETS = ROOT / "training" / "presets"
DESIGN_KEYS = {"step", "loss", "loss_base", "loss_sort", "sort_acc", "lr", "samples_per_s", "data_wait_frac"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("engine_shards")
    write_synthetic_shards(out, shards=4, samples=10, size=(40, 40), frames=8, seed=5)
    return out


def cfg_with(**train) -> PretrainConfig:
    cfg = PretrainConfig()
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


def test_step_schedule_decays_at_epochs_12_and_16_scaled_to_steps():
    f = lr_lambda(cfg_with(schedule="step", max_steps=100, epochs=20))
    assert [f(s) for s in (0, 59, 60, 79, 80, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_schedule_with_warmup():
    f = lr_lambda(cfg_with(schedule="cosine", max_steps=110, warmup_steps=10, min_lr_ratio=0.1))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 110))


def test_deepspeed_config_takes_batch_and_optimizer_numbers_from_yaml():
    cfg = cfg_with(deepspeed=str(PRESETS / "pretrain_zero2_bf16.json"), micro_batch=24, grad_accum=2, lr=3e-4)
    ds = deepspeed_config(cfg, world_size=32)
    assert ds["train_batch_size"] == 24 * 2 * 32 and ds["train_micro_batch_size_per_gpu"] == 24
    assert ds["optimizer"]["params"]["lr"] == 3e-4 and ds["optimizer"]["params"]["betas"] == [0.9, 0.999]
    assert ds["optimizer"]["params"]["weight_decay"] == 0.0
    assert ds["zero_optimization"]["stage"] == 2 and ds["bf16"]["enabled"] is True
    assert not any(k.startswith("_") for k in ds)


def test_every_recipe_json_is_valid():
    names = {p.name for p in PRESETS.glob("*.json")}
    assert {"pretrain_cpu_zero1.json", "pretrain_zero2_bf16.json", "post_pretrain.json"} <= names
    for path in PRESETS.glob("*.json"):
        ds = json.loads(path.read_text())
        assert "zero_optimization" in ds and "gradient_clipping" in ds, path.name


def test_mismatched_video_control_pairs_each_sample_with_another_video():
    from training.evaluate import other_video_partner

    ids = ["a", "a", "a", "b", "b", "c"]          # overlapping spans of one video sit side by side
    partner = other_video_partner(ids).tolist()
    assert partner == [3, 3, 3, 5, 5, 0]
    assert all(ids[j] != ids[i] for i, j in enumerate(partner))
    assert other_video_partner(["a", "a"]) is None   # one video: nothing to ablate against


def test_post_pretrain_config_loads():
    cfg = load_config(PretrainConfig, ROOT / "configs" / "post-pretrain.yaml", job="pretrain")
    assert cfg.train.mode == "post" and cfg.train.post_frames == [1, 4]


@pytest.mark.slow
def test_two_ranks_zero1_with_accumulation(shards, tmp_path):
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", str(shards / "shard-*.tar"), out, max_steps=3, grad_accum=2,
                          checkpoint_every=1, keep_last=2, schedule="cosine", plot=True, tensorboard=True,
                          on_nonfinite_loss="skip")
    # a NaN batch on rank 1 only, first micro batch of step 2: both ranks skip it together (no hang in
    # DeepSpeed's gradient reduction) and the accumulation still takes 2 finite micro batches
    result = run(deepspeed_cmd(config), TVTS_FAULT_NAN_STEP="2", TVTS_FAULT_NAN_RANK="1")
    assert result.returncode == 0, result.stdout[-3000:]
    warning = [line for line in result.stdout.splitlines() if "warning: non-finite loss" in line]
    assert len(warning) == 1 and "at step 2 (micro batch 1 of 2)" in warning[0] and "rank 1: " in warning[0]
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["nonfinite_skipped"] for r in rows] == [0, 1, 1]
    assert DESIGN_KEYS <= set(rows[0])
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert all(r["loss"] == pytest.approx(r["loss_base"] + 2 * r["loss_sort"], rel=1e-5) for r in rows)
    assert rows[0]["lr"] > rows[-1]["lr"]                     # cosine decays
    assert 0 <= rows[-1]["data_wait_frac"] < 1 and rows[-1]["samples_per_s"] > 0
    # keep_last=2 of the checkpoints at steps 1, 2, 3
    tags = sorted(p.name for p in (out / "checkpoints").glob("step*"))
    assert tags == ["step00000002", "step00000003"]
    assert len(list((out / "checkpoints" / "step00000003").glob("rank*.pt"))) == 2
    assert (out / "loss_curve.png").stat().st_size > 1000 and list((out / "tensorboard").iterdir())
    # the exported plain fp32 state_dict loads into the model, and evaluation runs on it
    from training.evaluate import load_model

    model, info = load_model(out)
    assert info["preset"] == "tiny" and all(p.dtype == torch.float32 for p in model.parameters())
    from training.config import EvalConfig
    from training.evaluate import evaluate

    eval_cfg = EvalConfig()
    eval_cfg.data.shards = eval_cfg.data.eval_shards = str(shards / "shard-*.tar")
    eval_cfg.eval.sort_repeats = 2
    sort = evaluate(eval_cfg, str(out), "sort")
    assert sort["samples"] == 40 and 0 <= sort["sort_acc"] <= sort["pos_acc"] <= 100
    assert 0 <= sort["permutation_rate"] <= 100
    assert 0 <= sort["sort_acc_text_only"] <= sort["pos_acc_text_only"] <= 100
    assert 0 <= sort["sort_acc_other_video"] <= sort["pos_acc_other_video"] <= 100
    assert (sort["chance_sort_acc"], sort["chance_sort_acc_permutation"]) == pytest.approx((100 / 256, 100 / 24))
    t2v = evaluate(eval_cfg, str(out), "t2v")
    assert t2v["samples"] == 40 and 0 <= t2v["R@1"] <= t2v["R@5"] <= t2v["R@10"] <= 100
    assert "checkpoints" in result.stdout and "metrics.jsonl" in result.stdout
    # a rerun of a finished run does nothing
    again = run([PY, "-m", "training.pretrain", "--config", str(config)], timeout=120)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout[-2000:]
    assert [r["step"] for r in metrics(out)] == [1, 2, 3]


@pytest.mark.slow
def test_post_pretrain_mode_single_process(shards, tmp_path):
    out = tmp_path / "post"
    config = write_config(tmp_path / "p.yaml", str(shards / "shard-*.tar"), out, max_steps=2, mode="post",
                          post_frames=[1, 4], checkpoint_every=5)
    result = run([PY, "-m", "training.pretrain", "--config", str(config)], timeout=180)
    assert result.returncode == 0, result.stdout[-3000:]
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["loss_sort"] == 0 and r["loss"] == pytest.approx(r["loss_base"]) for r in rows)
