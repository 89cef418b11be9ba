"""kill -9 of a rank at a step, then --resume: the loss curve equals the uninterrupted run's (which also
shows that held-out evaluations during training leave the training itself unchanged)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.train_helpers import PY, deepspeed_cmd, metrics, run, torchrun_cmd, write_config
from training.synthetic import write_synthetic_shards

CURVE_KEYS = ("loss", "loss_base", "loss_sort", "sort_acc", "pos_acc", "lr")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume_shards")
    # 2 shards for 2 ranks x 1 worker: the sample-level split; 14 samples -> epochs end inside the run
    write_synthetic_shards(out, shards=2, samples=14, size=(40, 40), frames=8, per_bin=2, seed=7)
    return out


@pytest.mark.slow
def test_kill_rank_then_resume_gives_the_same_curve(shards, tmp_path):
    common = dict(max_steps=7, checkpoint_every=3, log_every=1, keep_last=2,
                  deepspeed="training/presets/pretrain_cpu_zero2.json")
    # 1. the uninterrupted run (torchrun, ZeRO-2)
    ref_out = tmp_path / "ref"
    ref_cfg = write_config(tmp_path / "ref.yaml", str(shards / "shard-*.tar"), ref_out, **common)
    ref = run(torchrun_cmd(ref_cfg))
    assert ref.returncode == 0, ref.stdout[-3000:]

    # 2. the same run under the deepspeed launcher, rank 1 killed with SIGKILL right after step 5, and with
    #    held-out evaluations on rank 0 every 2 steps (the 4 samples of the 2 videos holdout_fraction 0.1 leaves out)
    out = tmp_path / "killed"
    cfg = write_config(tmp_path / "killed.yaml", str(shards / "shard-*.tar"), out, eval_every=2, **common)
    killed = run(deepspeed_cmd(cfg), timeout=240, TVTS_FAULT_KILL_STEP="5", TVTS_FAULT_KILL_RANK="1")
    assert killed.returncode != 0                               # the launcher reports it, nothing hangs
    assert "fault injection: SIGKILL at step 5" in killed.stdout
    assert (out / "checkpoints" / "step00000003" / "complete.json").is_file()
    assert not (out / "checkpoints" / "step00000006").exists()

    # 3. resume: continues from step 3 and recomputes steps 4..7
    resumed = run(deepspeed_cmd(cfg, "--resume"), timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resumed from" in resumed.stdout and "step00000003" in resumed.stdout

    want, got = metrics(ref_out), metrics(out)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 8))
    # held-out rows: one per evaluation step; step 4 (after checkpoint 3) was dropped on resume and redone
    heldout = metrics(out, "heldout.jsonl")
    assert not (ref_out / "heldout.jsonl").exists()
    assert [r["step"] for r in heldout] == [2, 4, 6, 7] and all(r["samples"] == 4 for r in heldout)
    assert len({r["samples_sha1"] for r in heldout}) == 1       # the same 4 samples every time
    assert all(0 <= r["sort_acc"] <= r["pos_acc"] <= 100 and 0 <= r["R@1"] <= 100 and r["MedR"] >= 1 for r in heldout)
    # each micro batch of 2 holds the 2 spans of one video: no other video to pair for the mismatched-video
    # control; the text-only ablation needs no partner
    assert not any("sort_acc_other_video" in r for r in heldout)
    assert all(0 <= r["sort_acc_text_only"] <= r["pos_acc_text_only"] <= 100 for r in heldout)
    for a, b in zip(want, got):
        for key in CURVE_KEYS:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key, a[key], b[key])
    assert want[-1]["epoch"] >= 1                               # the curve crossed an epoch boundary

    # 4. the same output.dir with another preset: a one-line error, no training
    other = run([PY, "-m", "training.pretrain", "--config", str(cfg), "--set", "train.preset=base",
                 "--set", "train.max_steps=9", "--set", "train.model_overrides=[]"], timeout=120)
    assert other.returncode == 2
    error = [line for line in other.stdout.splitlines() if line.startswith("error")]
    assert len(error) == 1 and "preset 'tiny'" in error[0] and "preset 'base'" in error[0], other.stdout[-2000:]


def test_compatibility_check_is_about_the_architecture(tmp_path):
    import json

    from training.checkpoint import ResumeError, check_compatible

    model = {"name": "tiny", "video": {"depth": 4, "grad_checkpointing": False}, "text": {"pretrained": True}}
    (tmp_path / "run.json").write_text(json.dumps({"preset": "tiny", "model": model, "world_size": 2,
                                                   "mode": "pretrain"}))
    same = {"preset": "tiny", "model": {**model, "video": {"depth": 4, "grad_checkpointing": True}},
            "world_size": 2, "mode": "pretrain"}
    check_compatible(tmp_path, same)                               # activation checkpointing may change
    with pytest.raises(ResumeError, match="other model settings"):
        check_compatible(tmp_path, {**same, "model": {**model, "video": {"depth": 6}}})
    with pytest.raises(ResumeError, match="written by 2 ranks, this run has 4"):
        check_compatible(tmp_path, {**same, "world_size": 4})
    check_compatible(tmp_path, {**same, "world_size": 4}, check_world=False)   # a finished run: nothing to load
    with pytest.raises(ResumeError, match="'pretrain' run, this is 'post'"):
        check_compatible(tmp_path, {**same, "mode": "post"})
