"""Non-finite losses: a NaN/Inf loss is caught after the forward and before backward, on every rank together.

`train.on_nonfinite_loss` says what happens (training/config.py):

    stop   NonFiniteLoss: the run ends with one line naming the step, the loss terms and the batch's sample
           keys (`__key__`, kept by the loader in batch["keys"]). Nothing was stepped with it, and the
           checkpoint of that step is never written: the newest checkpoint holds finite weights.
    skip   the micro batch is dropped on every rank (no backward, no optimizer step; the caller draws the
           next batch in its place), a warning line names it, and `skipped` counts it (saved in
           checkpoints, written to metrics.jsonl as `nonfinite_skipped`). The
           (train.max_nonfinite_skips + 1)-th such batch of the run stops it as above.

Every rank must take the same branch: a rank that ran backward while another skipped would wait in
DeepSpeed's gradient reduction until the timeout. So each rank's "my loss is not finite" flag is
all-reduced with MAX (one scalar per micro batch), and only when it is set do the ranks gather their
loss terms and keys (rare; the message then lists every affected rank's samples).

Test hooks (fault injection; rank R defaults to 0):
    TVTS_FAULT_NAN_STEP=3[,5] [TVTS_FAULT_NAN_RANK=R]    the video of the first micro batch drawn for those
                                                         optimizer steps is NaN (NonFiniteGuard.inject)
    TVTS_FAULT_KILL_STEP=N [TVTS_FAULT_KILL_RANK=R]      kill -9 of that rank right after step N
"""
from __future__ import annotations

import math
import os
from typing import Callable

import torch

from common.cli import JobError

LOSS_TERMS = ("loss", "loss_base", "loss_sort")
SHOWN_KEYS = 32          # keys printed in one line; the rest as a count


class NonFiniteLoss(JobError):
    """A NaN/Inf loss that ends the run (exit 1): one line with the step and the batch's sample keys."""


def _fmt(value: float) -> str:
    return str(value) if not math.isfinite(value) else f"{value:.4g}"


class NonFiniteGuard:
    """One per rank: `check(out, batch, step)` after every training forward, before backward."""

    def __init__(self, mode: str, max_skips: int, rank: int, world: int, grad_accum: int = 1,
                 emit: Callable[[str], None] = print) -> None:
        self.mode, self.max_skips, self.rank, self.world = mode, max_skips, rank, world
        self.grad_accum, self.emit = grad_accum, emit
        self.skipped = 0                       # micro batches skipped in the whole run (also before a resume)
        self._injected: set[int] = set()

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict | None) -> None:
        self.skipped = int((state or {}).get("skipped", 0))

    def inject(self, batch: dict, step: int) -> None:
        """The test hook of the module docstring (a no-op unless TVTS_FAULT_NAN_STEP is set)."""
        at = os.environ.get("TVTS_FAULT_NAN_STEP")
        if (not at or step in self._injected or step not in {int(s) for s in at.split(",") if s.strip()}
                or int(os.environ.get("TVTS_FAULT_NAN_RANK", "0")) != self.rank):
            return
        self._injected.add(step)
        batch["video"] = torch.full_like(batch["video"], float("nan"))

    def check(self, out: dict[str, torch.Tensor], batch: dict, step: int, micro: int = 0) -> bool:
        """True: the loss is finite on every rank, go on with backward. False (skip mode): drop this micro
        batch on every rank. Raises NonFiniteLoss in stop mode or past train.max_nonfinite_skips."""
        import torch.distributed as dist

        terms = {k: out[k].detach().float().reshape(()) for k in LOSS_TERMS if k in out}
        bad = (~torch.isfinite(torch.stack(list(terms.values())))).any().float().reshape(1)
        distributed = self.world > 1 and dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if not bad.item():
            return True
        mine = {"rank": self.rank, "terms": {k: float(v) for k, v in terms.items()},
                "keys": list(batch.get("keys", []))}
        ranks = [mine]
        if distributed:
            ranks = [None] * self.world
            dist.all_gather_object(ranks, mine)
        where = self.describe(ranks, step, micro)
        if self.mode == "skip" and self.skipped < self.max_skips:
            self.skipped += 1
            if self.rank == 0:
                self.emit(f"warning: {where}; skipped this batch ({self.skipped} of at most "
                          f"train.max_nonfinite_skips={self.max_skips})")
            return False
        if self.mode == "skip":
            raise NonFiniteLoss(f"{where}; {self.skipped} such batches were skipped already, the most "
                                f"train.max_nonfinite_skips={self.max_skips} allows (the loss keeps diverging: "
                                "lower train.lr, or check the data)")
        raise NonFiniteLoss(f"{where} (set train.on_nonfinite_loss=skip to skip such batches)")

    def describe(self, ranks: list[dict], step: int, micro: int) -> str:
        """'non-finite loss (nan) at step 37 (loss=nan, loss_base=0.52, ...); batch keys: a, b, ...'"""
        bad = [r for r in ranks if not all(math.isfinite(v) for v in r["terms"].values())] or ranks
        values = [v for r in bad for v in r["terms"].values() if not math.isfinite(v)]
        kind = "nan" if not values or any(math.isnan(v) for v in values) else ("inf" if any(v > 0 for v in values) else "-inf")
        first = bad[0]
        terms = ", ".join(f"{k}={_fmt(v)}" for k, v in first["terms"].items())
        at = f"step {step}" + (f" (micro batch {micro + 1} of {self.grad_accum})" if self.grad_accum > 1 else "")
        if self.world > 1:
            terms += f" on rank {first['rank']}"
        groups, room, hidden = [], SHOWN_KEYS, 0
        for r in bad:
            keys = r["keys"][:room]
            room, hidden = room - len(keys), hidden + len(r["keys"]) - len(keys)
            if keys:
                groups.append((f"rank {r['rank']}: " if self.world > 1 else "") + ", ".join(keys))
        shown = "; ".join(groups) + (f" (+{hidden} more)" if hidden else "")
        return f"non-finite loss ({kind}) at {at} ({terms}); batch keys: {shown or '(none)'}"


def fault_injection(step: int, rank: int) -> None:
    """Tests' kill -9 at an exact step: TVTS_FAULT_KILL_STEP=N [TVTS_FAULT_KILL_RANK=R] (default rank 0)."""
    at = os.environ.get("TVTS_FAULT_KILL_STEP")
    if at and int(at) == step and int(os.environ.get("TVTS_FAULT_KILL_RANK", "0")) == rank:
        import signal

        print(f"[rank {rank}] fault injection: SIGKILL at step {step}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
