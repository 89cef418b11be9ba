"""Held-out evaluation scores the same samples every pass (training's eval_every, evaluate's sort_repeats),
and a failure on rank 0 stops every rank instead of leaving them at a barrier."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.train_helpers import MINI_MODEL
from training.config import DataConfig, EvalConfig
from training.data import DataError, LoaderSettings, build_loader
from training.synthetic import write_synthetic_shards


@pytest.fixture(scope="module")
def ten(tmp_path_factory) -> Path:
    """One shard of 10 samples (5 videos, 2 spans each): the held-out set of these tests."""
    out = tmp_path_factory.mktemp("heldout_shards")
    write_synthetic_shards(out, shards=1, samples=10, size=(32, 32), frames=4, seed=7)
    return out


@pytest.fixture(scope="module")
def mini_model():
    from training.model import TVTS
    from training.model_config import load_preset

    torch.manual_seed(0)
    return TVTS(load_preset("tiny", MINI_MODEL)).eval()


def heldout_loader(shards: Path, tokenizer, batch_size: int = 3):
    cfg = DataConfig(shards=str(shards / "shard-*.tar"), eval_shards=str(shards / "shard-*.tar"), num_workers=0)
    settings = LoaderSettings(batch_size=batch_size, frames=4, image_size=32, num_transcripts=4, split="eval",
                              max_text_length=16)
    return build_loader(cfg, settings, tokenizer, epochs=1)


def all_keys(shards: Path, tokenizer) -> list[str]:
    return [k for b in heldout_loader(shards, tokenizer) for k in b["keys"]]


def test_every_training_evaluation_scores_the_same_first_samples(ten, mini_model, monkeypatch):
    """10 held-out samples, eval_samples=4, batches of 3: every pass scores s0-s3, never s4-s7, s8-s9, ..."""
    import training.heldout
    from training.heldout import held_out_pass
    from training.model import build_tokenizer

    tokenizer = build_tokenizer(mini_model.cfg)
    passes = []

    def record(model, batches, generator, sort=True):
        keys = [k for batch in batches for k in batch["keys"]]
        passes.append(keys)
        return {"samples": len(keys)}

    monkeypatch.setattr(training.heldout, "held_out_scores", record)
    loader = heldout_loader(ten, tokenizer)
    for _ in range(4):
        held_out_pass(mini_model, loader, 4, torch.device("cpu"), None, seed=0, sort=True)
    first4 = all_keys(ten, tokenizer)[:4]
    assert passes == [first4] * 4


def test_held_out_scores_name_the_samples_they_scored(ten, mini_model):
    from training.heldout import held_out_pass
    from training.model import build_tokenizer

    tokenizer = build_tokenizer(mini_model.cfg)
    loader = heldout_loader(ten, tokenizer)
    runs = [held_out_pass(mini_model, loader, 4, torch.device("cpu"), None, seed=0, sort=True) for _ in range(3)]
    assert [r["keys"] for r in runs] == [all_keys(ten, tokenizer)[:4]] * 3
    assert runs[0]["samples"] == 4 and runs[0] == runs[1] == runs[2]     # same samples, same seed: same scores
    assert mini_model.training                                          # left in training mode


def test_sort_repeats_score_the_same_samples_each_repeat(ten, mini_model, monkeypatch):
    import training.evaluate

    seen: list[list[str]] = []

    def record(model, batch, generator):
        seen.append(list(batch["keys"]))
        return {"samples": float(len(batch["keys"]))}

    monkeypatch.setattr(training.evaluate, "load_model", lambda checkpoint, *rest: (mini_model, {"preset": "tiny"}))
    monkeypatch.setattr(training.evaluate, "sort_batch_sums", record)
    cfg = EvalConfig()
    cfg.data.shards = cfg.data.eval_shards = str(ten / "shard-*.tar")
    cfg.eval.batch_size, cfg.eval.max_samples, cfg.eval.sort_repeats = 3, 4, 3
    result = training.evaluate.evaluate(cfg, "unused", "sort")
    from training.model import build_tokenizer

    first4 = all_keys(ten, build_tokenizer(mini_model.cfg))[:4]
    per_repeat = [k for keys in seen for k in keys]
    assert per_repeat == first4 * 3
    assert result["samples"] == 4


def test_an_empty_held_out_split_is_a_config_error(ten, mini_model):
    from common.config import ConfigError
    from training.heldout import held_out_pass
    from training.model import build_tokenizer

    cfg = DataConfig(shards=str(ten / "shard-*.tar"), holdout_fraction=1e-9, num_workers=0)   # no video held out
    settings = LoaderSettings(batch_size=3, frames=4, image_size=32, num_transcripts=4, split="eval",
                              max_text_length=16)
    loader = build_loader(cfg, settings, build_tokenizer(mini_model.cfg), epochs=1)
    with pytest.raises(ConfigError, match="data.holdout_fraction"):
        held_out_pass(mini_model, loader, 8, torch.device("cpu"), None, seed=0, sort=True)
    assert mini_model.training
    with pytest.raises(DataError):                 # the loader itself says so too
        list(loader)


def _two_ranks(rank: int, port: int, results) -> None:
    """Rank `rank` of a 2-rank gloo group: a held-out step that works, then one that fails on rank 0."""
    import datetime
    import os
    import time

    import torch.distributed as dist

    from common.config import ConfigError
    from training.heldout import on_rank0

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=20))

    def work(fail: bool):
        if fail:
            raise ConfigError("train.eval_every: no held-out samples")
        return {"R@1": 1.0}

    try:
        for fail in (False, True):
            start = time.monotonic()
            try:
                outcome = ("ok", on_rank0(lambda: work(fail), rank, 2, torch.device("cpu")))
            except Exception as exc:  # noqa: BLE001 - the test reads what each rank raised
                outcome = (type(exc).__name__, str(exc))
            results[(rank, fail)] = (*outcome, time.monotonic() - start)
    finally:
        dist.destroy_process_group()


def test_an_evaluation_error_on_rank_0_stops_every_rank():
    """Before: rank 0 raised while rank 1 waited at a barrier until train.dist_timeout_s (600 s)."""
    import torch.multiprocessing as mp

    from tests.training.train_helpers import free_port

    results = mp.Manager().dict()
    # fork: the children inherit the imported torch (a spawned child imports it again, 10 s on a busy CPU)
    mp.start_processes(_two_ranks, args=(free_port(), results), nprocs=2, join=True, start_method="fork")
    assert results[(0, False)][:2] == ("ok", {"R@1": 1.0}) and results[(1, False)][:2] == ("ok", None)
    assert results[(0, True)][:2] == ("ConfigError", "train.eval_every: no held-out samples")
    assert results[(1, True)][0] == "ConfigError" and "rank 0" in results[(1, True)][1]
    assert results[(1, True)][2] < 10                  # told at once, not after the 20 s timeout
