"""A NaN/Inf loss (training/guards.py): stop in one line with the step and the batch's keys, or skip that
batch on every rank and count it; unit tests of the guard, then the real entry point with a NaN batch."""
from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch

from common.config import ConfigError, load_config
from tests.training.train_helpers import PY, metrics, run, write_config
from training.config import PretrainConfig
from training.guards import NonFiniteGuard, NonFiniteLoss
from training.synthetic import write_synthetic_shards


def out_of(loss: float, base: float = 0.5, sort: float = 0.25) -> dict[str, torch.Tensor]:
    return {"loss": torch.tensor(loss), "loss_base": torch.tensor(base), "loss_sort": torch.tensor(sort),
            "sort_acc": torch.tensor(0.0)}


BATCH = {"keys": ["vid1_000003", "vid2_000001"]}


def test_stop_mode_names_the_step_the_terms_and_the_keys():
    guard = NonFiniteGuard("stop", 10, rank=0, world=1)
    assert guard.check(out_of(1.0), BATCH, step=36)
    with pytest.raises(NonFiniteLoss) as err:
        guard.check(out_of(float("nan"), sort=float("nan")), BATCH, step=37)
    text = str(err.value)
    assert "\n" not in text and err.value.code == 1
    assert text.startswith("non-finite loss (nan) at step 37 (loss=nan, loss_base=0.5, loss_sort=nan)")
    assert "batch keys: vid1_000003, vid2_000001" in text and "train.on_nonfinite_loss=skip" in text


def test_skip_mode_counts_and_stops_past_the_limit():
    lines: list[str] = []
    guard = NonFiniteGuard("skip", 2, rank=0, world=1, grad_accum=4, emit=lines.append)
    assert not guard.check(out_of(float("inf")), BATCH, step=5, micro=1)
    assert not guard.check(out_of(1.0, base=float("-inf")), BATCH, step=6)
    assert guard.skipped == 2 and guard.state_dict() == {"skipped": 2}
    assert lines[0].startswith("warning: non-finite loss (inf) at step 5 (micro batch 2 of 4)")
    assert "vid1_000003" in lines[0] and "1 of at most train.max_nonfinite_skips=2" in lines[0]
    with pytest.raises(NonFiniteLoss, match="2 such batches were skipped already"):
        guard.check(out_of(float("nan")), BATCH, step=7)
    resumed = NonFiniteGuard("skip", 2, rank=0, world=1)
    resumed.load_state_dict({"skipped": 2})                   # the count continues across a resume
    with pytest.raises(NonFiniteLoss):
        resumed.check(out_of(float("nan")), BATCH, step=8)


def test_many_keys_are_shortened_and_the_injection_fires_once_per_step(monkeypatch):
    guard = NonFiniteGuard("stop", 0, rank=0, world=1)
    keys = [f"v{i}_0" for i in range(40)]
    with pytest.raises(NonFiniteLoss, match=r"v31_0 \(\+8 more\)"):
        guard.check(out_of(float("nan")), {"keys": keys}, step=1)
    monkeypatch.setenv("TVTS_FAULT_NAN_STEP", "2,4")
    batch = {"video": torch.zeros(1, 3)}
    guard.inject(batch, 2)
    assert torch.isnan(batch["video"]).all()
    again = {"video": torch.zeros(1, 3)}
    guard.inject(again, 2)                                    # the replacement batch is left alone
    guard.inject(again, 3)
    assert not torch.isnan(again["video"]).any()


def test_config_keys(tmp_path):
    assert (PretrainConfig().train.on_nonfinite_loss, PretrainConfig().train.max_nonfinite_skips) == ("stop", 10)
    with pytest.raises(ConfigError, match="on_nonfinite_loss"):
        load_config(PretrainConfig, None, ["train.on_nonfinite_loss=ignore"], job="pretrain")
    with pytest.raises(ConfigError, match="max_nonfinite_skips"):
        load_config(PretrainConfig, None, ["train.max_nonfinite_skips=-1"], job="pretrain")


# ---------------------------------------------------------------------------------------------------
# through python -m training.pretrain


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nonfinite_shards")
    write_synthetic_shards(out, shards=1, samples=12, size=(40, 40), frames=8, seed=3)
    return out


def sample_keys(shards: Path) -> set[str]:
    keys = set()
    for tar in shards.glob("shard-*.tar"):
        with tarfile.open(tar) as handle:
            keys |= {m.name.split(".", 1)[0] for m in handle.getmembers()}
    return keys


@pytest.mark.slow
def test_skip_then_stop_through_the_entry_point(shards, tmp_path):
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", str(shards / "shard-*.tar"), out, max_steps=4, checkpoint_every=2,
                          keep_last=3, on_nonfinite_loss="skip", max_nonfinite_skips=3)
    # skip: NaN video in the first batch of steps 2 and 3; each is replaced by the next batch
    skipped = run([PY, "-m", "training.pretrain", "--config", str(config)], timeout=240, TVTS_FAULT_NAN_STEP="2,3")
    assert skipped.returncode == 0, skipped.stdout[-3000:]
    warnings = [line for line in skipped.stdout.splitlines() if "warning: non-finite loss" in line]
    assert len(warnings) == 2 and "at step 2 " in warnings[0] and "at step 3 " in warnings[1], skipped.stdout[-3000:]
    keys = sample_keys(shards)
    listed = warnings[0].split("batch keys: ")[1].split(";")[0].split(", ")
    assert len(listed) == 2 and set(listed) <= keys                  # micro batch 2: its two samples
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["nonfinite_skipped"] for r in rows] == [0, 1, 2, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert "skipped batches with a non-finite loss: 2" in skipped.stdout
    weights = torch.load(out / "model_fp32.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())

    # stop (the default): resumed to step 6, the first batch of step 6 (a checkpoint step) is NaN
    stopped = run([PY, "-m", "training.pretrain", "--config", str(config), "--set", "train.max_steps=6",
                   "--set", "train.on_nonfinite_loss=stop"], timeout=240, TVTS_FAULT_NAN_STEP="6")
    assert stopped.returncode == 1, stopped.stdout[-3000:]
    errors = [line for line in stopped.stdout.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in stopped.stdout, stopped.stdout[-3000:]
    assert "non-finite loss (nan) at step 6 (loss=nan" in errors[0] and "on_nonfinite_loss=skip" in errors[0]
    listed = errors[0].split("batch keys: ")[1].split(" (set ")[0].split(", ")
    assert len(listed) == 2 and set(listed) <= keys
    tags = sorted(p.name for p in (out / "checkpoints").glob("step*"))
    assert tags == ["step00000002", "step00000004"]                 # no checkpoint of step 6
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4, 5]
