"""Which checkpoint a run continues from, and loading it, falling back past unreadable ones.

    choose()  rank 0 lists the complete tags (--resume DIR, or output.dir), newest first, and checks each
              cheaply: its files against the sizes complete.json recorded (checkpoint.verify_tag), its
              run.json against this run (checkpoint.check_compatible: another preset or world size in the
              tag the run would continue from is a ResumeError, never a fallback). It stops at the first
              readable tag of a finished run (nothing is loaded) and broadcasts the readable tags, so
              every rank loads the same.
    load()    every rank loads the newest readable tag; a load error that means a truncated or corrupt file
              (checkpoint.unreadable_reason; sizes cannot catch a file damaged in place) is gathered from
              all ranks, and all move on to the next older tag together.

An unreadable tag is one warning line (`warning: checkpoint .../step00000040 is unreadable (<reason>);
resuming from step00000020`). Once an older tag has loaded, rank 0 demotes the unreadable newer ones of
this run's own output.dir (checkpoint.demote), so they stop counting as complete. Checkpoints that exist
but none of which can be read are a CheckpointUnreadable error (exit 1), not a silent start from step 0
(`--fresh` starts over on purpose). A tag folder named by `--resume PATH/TAG` is not fallen back from:
unreadable, it is the error.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from training import checkpoint as ckpt


@dataclass
class Choice:
    root: ckpt.Location                 # the checkpoint root the tags are in (a folder or a URL)
    tags: list[str]                     # readable as far as the cheap checks tell, newest first
    explicit: bool = False              # --resume named this one tag folder
    own: bool = True                    # root is this run's output.dir/checkpoints (demote there only)
    unreadable: list[tuple[str, str]] = field(default_factory=list)   # (tag, reason), newest first

    def step(self, tag: str) -> int:
        return int(ckpt.TAG_RE.match(tag).group(1))


def _broadcast(value: Any, rank: int, world: int) -> Any:
    """Rank 0's value on every rank (an exception included: every rank raises the same one)."""
    if world == 1:
        return value
    import torch.distributed as dist

    if isinstance(value, BaseException):
        try:
            pickle.dumps(value)
        except Exception:  # noqa: BLE001 - an exception that does not pickle still ends every rank
            value = RuntimeError(str(value))
    box = [value if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _same(a: ckpt.Location, b: ckpt.Location) -> bool:
    if ckpt.is_url(a) or ckpt.is_url(b):
        return ckpt.show(a).rstrip("/") == ckpt.show(b).rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


def _unreadable_error(root: ckpt.Location, failed: list[tuple[str, str]]) -> ckpt.CheckpointUnreadable:
    listed = "; ".join(f"{tag} ({why})" for tag, why in failed)
    return ckpt.CheckpointUnreadable(
        f"no readable checkpoint in {ckpt.show(root)}: {listed}; move them away, or pass --fresh to delete "
        "them and start over at step 0")


def _choose(resume: str | None, store: ckpt.RunStore, run_info: dict, max_steps: int,
            log: Callable[[str], None]) -> Choice | None:
    found = ckpt.resume_candidates(resume, store.url)
    if found is None:
        return None
    root, tags, explicit = found
    choice = Choice(root, [], explicit, own=_same(root, store.root))
    for tag in tags:
        tag_dir = ckpt.child(root, tag)
        reason = ckpt.verify_tag(tag_dir)
        if reason is None:
            try:
                ckpt.check_compatible(tag_dir, run_info, check_world=choice.step(tag) < max_steps)
            except (OSError, ValueError) as exc:        # run.json cut short or damaged
                reason = f"run.json is unreadable: {type(exc).__name__}"
            except ckpt.ResumeError:
                if not choice.tags:                     # the tag this run would continue from: a wrong config
                    raise
                break                                   # older tags of another setup: no fallback past here
        if reason is None:
            choice.tags.append(tag)
            if choice.step(tag) >= max_steps:           # a finished run loads nothing: no fallback needed
                break
        elif explicit:
            raise ckpt.CheckpointUnreadable(f"--resume {ckpt.show(tag_dir)}: the checkpoint is unreadable ({reason})")
        else:
            choice.unreadable.append((tag, reason))
    if not choice.tags:
        raise _unreadable_error(root, choice.unreadable)
    newest = choice.tags[0]
    for tag, reason in choice.unreadable:
        then = (f"resuming from {newest}" if choice.step(tag) > choice.step(newest)
                else f"older than {newest}, which this run resumes from")
        log(f"warning: checkpoint {ckpt.show(ckpt.child(root, tag))} is unreadable ({reason}); {then}")
    return choice


def choose(resume: str | None, store: ckpt.RunStore, run_info: dict, max_steps: int, rank: int, world: int,
           log: Callable[[str], None]) -> Choice | None:
    """The checkpoint root and readable tags to resume from (the same on every rank), or None: start fresh."""
    value: Any = None
    if rank == 0:
        try:
            value = _choose(resume, store, run_info, max_steps, log)
        except Exception as exc:  # noqa: BLE001 - handed to the other ranks, then raised everywhere
            _broadcast(exc, rank, world)
            raise
    value = _broadcast(value, rank, world)
    if isinstance(value, BaseException):
        raise value
    return value


def _try_load(engine, store: ckpt.RunStore, root: ckpt.Location, tag: str, rank: int) -> tuple[str | None, Any]:
    """(None, this rank's state) when the tag loaded into the engine, else (why not, None)."""
    try:
        load_root = store.fetch_tag(root, tag)          # a URL's tag: downloaded into the staging folder
        if not any((load_root / tag).glob("*model_states.pt")):   # DeepSpeed would fail a bare assert
            return "no DeepSpeed model states file", None
        path, _ = engine.load_checkpoint(str(load_root), tag=tag, load_optimizer_states=True,
                                         load_lr_scheduler_states=True)
        if path is None:
            return "DeepSpeed found nothing to load", None
        return None, ckpt.load_rank_state(load_root / tag, rank)
    except ckpt.ResumeError as exc:                     # a rank file or the whole tag missing
        return str(exc), None
    except Exception as exc:  # noqa: BLE001 - sorted: bad files fall back, anything else is raised
        reason = ckpt.unreadable_reason(exc)
        if reason is None:
            raise
        return reason, None


def load(engine, store: ckpt.RunStore, choice: Choice, rank: int, world: int,
         log: Callable[[str], None]) -> tuple[str, dict]:
    """Load the newest tag of `choice` that every rank can read; returns (tag, this rank's state)."""
    import torch.distributed as dist

    failed = list(choice.unreadable)
    for i, tag in enumerate(choice.tags):
        reason, state = _try_load(engine, store, choice.root, tag, rank)
        reasons = [reason]
        if world > 1:
            reasons = [None] * world
            dist.all_gather_object(reasons, reason)
        bad = [(r, why) for r, why in enumerate(reasons) if why]
        if not bad:
            if rank == 0 and choice.own:
                for old, why in failed:
                    ckpt.demote(ckpt.child(choice.root, old), why)
            return tag, state
        why = bad[0][1] + (f" on rank {bad[0][0]}" if world > 1 else "")
        where = ckpt.show(ckpt.child(choice.root, tag))
        if choice.explicit:
            raise ckpt.CheckpointUnreadable(f"--resume {where}: the checkpoint is unreadable ({why})")
        failed.append((tag, why))
        if rank == 0 and i + 1 < len(choice.tags):
            log(f"warning: checkpoint {where} is unreadable ({why}); resuming from {choice.tags[i + 1]}")
    raise _unreadable_error(choice.root, failed)
