"""Held-out evaluation during training (train.eval_every): rank 0 scores the same first eval_samples
held-out samples every time while the other ranks wait, and all of them learn whether it worked.

engine.train calls `on_rank0(lambda: held_out_pass(...))` every eval_every steps and at the end; the
scores (evaluate.held_out_scores: sort, text-only sort, mismatched-video control, t2v) become one row of
heldout.jsonl, with `samples_sha1` naming the samples scored.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from common.config import ConfigError
from training import checkpoint as ckpt
from training.data import DataError, first_samples, to_device
from training.evaluate import held_out_scores, keys_digest
from training.losses import local_only

__all__ = ["held_out_pass", "keys_digest", "on_rank0"]


def on_rank0(work: Callable[[], Any], rank: int, world: int, device) -> Any:
    """Run `work()` on rank 0 while the other ranks wait; returns its result on rank 0, None elsewhere.

    Every rank then learns whether it failed (one all_reduce, which is also the barrier), so an error on
    rank 0 stops every rank at once: rank 0 raises it, the others a ConfigError that points to rank 0's
    log. Without this the other ranks would sit at a barrier until train.dist_timeout_s."""
    import torch.distributed as dist

    result, error = None, None
    if rank == 0:
        try:
            result = work()
        except Exception as exc:  # noqa: BLE001 - shared with the other ranks below, then raised
            error = exc
    if world > 1:
        failed = torch.tensor([0.0 if error is None else 1.0], device=device)
        dist.all_reduce(failed)
        if failed.item() and error is None:
            raise ConfigError("rank 0's held-out evaluation failed (its log says why); this rank stops too")
    if error is not None:
        raise error
    return result


def held_out_pass(model, loader, samples: int, device, dtype, seed: int, sort: bool) -> dict[str, Any]:
    """Rank 0's evaluation during training: the first `samples` held-out samples, the same ones every time
    (data.first_samples restarts the loader), with shuffles and masks from their own seeded generator,
    leaving the training RNG streams untouched so that a run with evaluations trains exactly like one
    without. The result's `keys` lists the samples scored."""
    state = ckpt.rng_state()
    model.eval()
    try:
        with local_only():                 # the other ranks wait (on_rank0): no collectives in here
            batches = (to_device(batch, device, dtype) for batch in first_samples(loader, samples))
            return held_out_scores(model, batches, torch.Generator(device=device).manual_seed(seed), sort=sort)
    except DataError as exc:               # an empty held-out split: say which keys to change
        raise ConfigError(f"train.eval_every: {exc}; raise data.holdout_fraction or give data.eval_shards") from exc
    finally:
        model.train()
        ckpt.set_rng_state(state)
