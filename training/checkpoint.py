"""Checkpoints: DeepSpeed's engine state plus what DeepSpeed does not keep, so a resumed run is the same run.

Layout under `output.dir`:

    checkpoints/step00000100/          DeepSpeed's files (model, ZeRO optimizer partitions, lr scheduler)
        rank00000.pt ...               per rank: data loader position, python/numpy/torch RNG, metric window
        run.json                       preset name, model config, world size, loader workers (rank 0)
        complete.json                  written last, after every rank saved: a tag without it is ignored
    model_fp32.pt, model_fp32.json     the exported plain fp32 state_dict and its model config

`latest_complete(dir)` finds the newest complete tag; older ones beyond `keep_last` are deleted.
"""
from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.atomic import atomic_open, write_json

TAG_RE = re.compile(r"^step(\d{8})$")


class ResumeError(RuntimeError):
    """A checkpoint that cannot continue this run; the message is one line."""


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_tags(root: Path) -> list[tuple[int, str]]:
    """(step, tag) of every checkpoint whose complete.json exists, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = TAG_RE.match(child.name)
        if match and (child / "complete.json").is_file():
            found.append((int(match.group(1)), child.name))
    return sorted(found)


def latest_complete(output_dir: str | Path) -> tuple[int, str] | None:
    tags = complete_tags(checkpoint_root(output_dir))
    return tags[-1] if tags else None


def resolve_resume(arg: str | None, output_dir: str | Path) -> tuple[Path, str] | None:
    """--resume [DIR|TAG_DIR] -> (checkpoint root, tag), or the newest complete checkpoint in output.dir."""
    if arg:
        path = Path(arg)
        if (path / "complete.json").is_file():                 # a tag folder
            return path.parent, path.name
        for root in (path / "checkpoints", path):               # a run's output.dir or its checkpoints/
            tags = complete_tags(root)
            if tags:
                return root, tags[-1][1]
        raise ResumeError(f"--resume {arg}: no complete checkpoint there (looked for checkpoints/step*/complete.json)")
    found = latest_complete(output_dir)
    return (checkpoint_root(output_dir), found[1]) if found else None


def clear_run(output_dir: str | Path) -> None:
    """Remove a previous run's checkpoints, exported weights and metrics from output.dir (--fresh)."""
    out = Path(output_dir)
    shutil.rmtree(checkpoint_root(out), ignore_errors=True)
    shutil.rmtree(out / "tensorboard", ignore_errors=True)
    for name in ("model_fp32.pt", "model_fp32.json", "metrics.jsonl", "heldout.jsonl", "loss_curve.png"):
        (out / name).unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_rank_state(tag_dir: Path, rank: int, state: dict[str, Any]) -> None:
    tag_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(tag_dir / f"rank{rank:05d}.pt", "wb") as handle:
        torch.save(state, handle)


def load_rank_state(tag_dir: Path, rank: int) -> dict[str, Any]:
    path = tag_dir / f"rank{rank:05d}.pt"
    if not path.is_file():
        raise ResumeError(f"checkpoint {tag_dir} has no state for rank {rank}: resume with the same number of ranks")
    return torch.load(path, map_location="cpu", weights_only=False)


def architecture(model: dict | None) -> dict | None:
    """The model config without the settings that do not change the weights' shapes or meaning
    (activation checkpointing, where the initial weights came from)."""
    if model is None:
        return None
    model = json.loads(json.dumps(model))
    model.get("video", {}).pop("grad_checkpointing", None)
    model.get("video", {}).pop("init", None)
    model.get("text", {}).pop("pretrained", None)
    return model


def check_compatible(tag_dir: Path, run_info: dict[str, Any], check_world: bool = True) -> None:
    """Refuse a checkpoint of another model or another world size, in one line."""
    path = tag_dir / "run.json"
    if not path.is_file():
        raise ResumeError(f"checkpoint {tag_dir} has no run.json: not written by training.pretrain")
    saved = json.loads(path.read_text())
    if saved.get("preset") != run_info["preset"] or architecture(saved.get("model")) != architecture(run_info["model"]):
        what = (f"preset '{saved.get('preset')}'" if saved.get("preset") != run_info["preset"]
                else "the same preset name with other model settings")
        raise ResumeError(f"checkpoint {tag_dir} is of {what}, this run is preset '{run_info['preset']}': "
                          f"use another output.dir, or --set train.preset={saved.get('preset')}")
    if check_world and saved.get("world_size") != run_info["world_size"]:
        raise ResumeError(f"checkpoint {tag_dir} was written by {saved.get('world_size')} ranks, this run has "
                          f"{run_info['world_size']}: resume with the same number of ranks")
    if saved.get("mode") != run_info["mode"]:
        raise ResumeError(f"checkpoint {tag_dir} is a '{saved.get('mode')}' run, this is '{run_info['mode']}': "
                          "use another output.dir")


def mark_complete(tag_dir: Path, step: int, run_info: dict[str, Any]) -> None:
    write_json(tag_dir / "run.json", run_info)
    write_json(tag_dir / "complete.json", {"step": step})


def prune(root: Path, keep_last: int) -> list[str]:
    """Delete all but the newest `keep_last` complete checkpoints, and incomplete ones older than them."""
    tags = complete_tags(root)
    removed = []
    keep = {t for _, t in tags[-keep_last:]}
    newest_kept = tags[-keep_last][0] if len(tags) >= keep_last else (tags[0][0] if tags else -1)
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        match = TAG_RE.match(child.name)
        if not match or child.name in keep:
            continue
        if (child / "complete.json").is_file() or int(match.group(1)) < newest_kept:
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
    return removed


def export_fp32(root: Path, tag: str, zero_stage: int, module: torch.nn.Module | None, out_path: Path,
                model_info: dict[str, Any]) -> Path:
    """A plain fp32 state_dict of the model at `tag` (ZeRO partitions gathered by DeepSpeed's zero_to_fp32)."""
    if zero_stage > 0:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)
        # zero_to_fp32 skips non-parameter buffers the model registers as non-persistent; take the rest
        # of the module's own state for keys it did not return.
        for key, value in (module.state_dict() if module is not None else {}).items():
            state.setdefault(key, value.detach().float().cpu() if value.is_floating_point() else value.cpu())
    else:
        state = {k: (v.detach().float().cpu() if v.is_floating_point() else v.cpu())
                 for k, v in module.state_dict().items()}
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    with atomic_open(out_path, "wb") as handle:
        torch.save(state, handle)
    write_json(out_path.with_suffix(".json") if out_path.suffix != ".json" else out_path, model_info)
    return out_path
