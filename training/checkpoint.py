"""Checkpoints: DeepSpeed's engine state plus what DeepSpeed does not keep, so a resumed run is the same run.

Layout under `output.dir`:

    checkpoints/step00000100/          DeepSpeed's files (model, ZeRO optimizer partitions, lr scheduler)
        rank00000.pt ...               per rank: data loader position, python/numpy/torch RNG, metric window
        run.json                       preset name, model config, world size, loader workers (rank 0)
        complete.json                  written last, after every rank saved: a tag without it is ignored;
                                       it lists every file of the tag with its size ("files")
    model_fp32.pt, model_fp32.json     the exported plain fp32 state_dict and its model config

`latest_complete(dir)` finds the newest complete tag; older ones beyond `keep_last` are deleted.

A complete tag can still be unreadable (a disk that filled up, a file cut short by a copy, a bucket object
deleted by hand). `verify_tag` compares the files with the sizes complete.json recorded (cheap: one stat or
one listing per tag, before anything is loaded); `unreadable_reason` tells a load error of a truncated or
corrupt file from other errors. Resume (training/resume.py) then falls back to the next older complete
tag, and `demote` turns the unreadable one into an incomplete tag (complete.json -> unreadable.json, with
the reason) so it no longer counts as complete for resume or `keep_last`.

output.dir may be an fsspec URL (s3://bucket/run, ...): the locations above are then objects under it, and
each rank writes into a local staging folder first (`RunStore`: `common.storage.local_state_dir(url)/rankNNNNN`,
the same layout). Saving a tag: every rank writes its DeepSpeed files and rank file locally and uploads
them (its own files: ranks on other nodes never see each other's staging folder); after a barrier rank 0
writes run.json, then complete.json, straight to the URL. An object store shows an object only once its
upload is complete, and complete.json is written after all of them, so a tag is either complete there
or ignored. Resuming downloads the tag (into a fresh folder, renamed into place) and loads it locally.
metrics.jsonl, heldout.jsonl, tensorboard/, model_fp32.* and loss_curve.png are written in the staging
folder and uploaded at each checkpoint and at the end (on resume they are first downloaded).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import storage
from common.atomic import atomic_open, write_json
from common.cli import JobError

TAG_RE = re.compile(r"^step(\d{8})$")


class ResumeError(RuntimeError):
    """A checkpoint that cannot continue this run; the message is one line."""


class CheckpointUnreadable(JobError):
    """Checkpoints that exist but cannot be read (truncated, corrupt, files missing): one line, exit 1.
    Not a ResumeError (exit 2, a wrong command or config): the run broke, the command was right."""


def tag_for(step: int) -> str:
    return f"step{step:08d}"


Location = str | Path      # a local folder (Path) or an fsspec URL (str)


def is_url(location: Location) -> bool:
    return not storage.is_local(str(location))


def child(location: Location, *parts: str) -> Location:
    return storage.join(location, *parts) if is_url(location) else Path(location).joinpath(*parts)


def show(location: Location) -> str:
    """A location as it may be printed or written (credentials in a URL stripped)."""
    return storage.redact(str(location))


def checkpoint_root(output_dir: Location) -> Location:
    return child(output_dir if is_url(output_dir) else storage.local_path(output_dir), "checkpoints")


def _tag_dirs(root: Location) -> list[str]:
    """Names of the step* folders under a checkpoint root (complete or not)."""
    if not is_url(root):
        root = Path(root)
        return sorted(c.name for c in root.iterdir() if TAG_RE.match(c.name) and c.is_dir()) if root.is_dir() else []
    fs, path = storage.filesystem(root)
    fs.invalidate_cache(path)          # another rank or node may have written since (s3fs caches listings)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    names = (e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")
    return sorted(n for n in names if TAG_RE.match(n))


def _remove_tree(location: Location) -> None:
    if not is_url(location):
        shutil.rmtree(location, ignore_errors=True)
        return
    fs, path = storage.filesystem(location)
    try:
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass


def complete_tags(root: Location) -> list[tuple[int, str]]:
    """(step, tag) of every checkpoint whose complete.json exists, oldest first."""
    return [(int(TAG_RE.match(name).group(1)), name) for name in _tag_dirs(root)
            if storage.exists(child(root, name, "complete.json"))]


def latest_complete(output_dir: Location) -> tuple[int, str] | None:
    tags = complete_tags(checkpoint_root(output_dir))
    return tags[-1] if tags else None


def resume_candidates(arg: str | None, output_dir: Location) -> tuple[Location, list[str], bool] | None:
    """--resume [DIR|TAG_DIR] -> (checkpoint root, complete tags newest first, explicit); without DIR the
    complete tags of output.dir; None when there are none. explicit: --resume named one tag folder, so
    there is nothing to fall back to. DIR and output.dir may be URLs; the root is then a URL too."""
    if arg:
        path = arg.rstrip("/") if is_url(arg) else Path(arg)
        if storage.exists(child(path, "complete.json")):         # a tag folder
            if is_url(path):
                return path.rsplit("/", 1)[0], [path.rsplit("/", 1)[1]], True
            return path.parent, [path.name], True
        for root in (child(path, "checkpoints"), path):          # a run's output.dir or its checkpoints/
            tags = complete_tags(root)
            if tags:
                return root, [t for _, t in reversed(tags)], False
        raise ResumeError(f"--resume {show(arg)}: no complete checkpoint there "
                          "(looked for checkpoints/step*/complete.json)")
    tags = complete_tags(checkpoint_root(output_dir))
    return (checkpoint_root(output_dir), [t for _, t in reversed(tags)], False) if tags else None


def resolve_resume(arg: str | None, output_dir: Location) -> tuple[Location, str] | None:
    """(checkpoint root, newest complete tag) of `resume_candidates`, or None."""
    found = resume_candidates(arg, output_dir)
    return (found[0], found[1][0]) if found else None


def clear_run(output_dir: Location) -> None:
    """Remove a previous run's checkpoints, exported weights and metrics from output.dir (--fresh)."""
    out = output_dir if is_url(output_dir) else storage.local_path(output_dir)
    _remove_tree(checkpoint_root(out))
    _remove_tree(child(out, "tensorboard"))
    for name in ("model_fp32.pt", "model_fp32.json", "metrics.jsonl", "heldout.jsonl", "loss_curve.png"):
        storage.remove(child(out, name))


# ---------------------------------------------------------------------------------------------------
# output.dir on an fsspec URL: a local staging folder per rank, uploaded


def upload_tree(local: Path, url: str) -> int:
    """Every file under `local` to the same relative key under `url` (s3fs uploads them concurrently,
    each visible only once complete); returns how many."""
    files = sorted(p for p in local.rglob("*") if p.is_file())
    if files:
        fs, path = storage.filesystem(url)
        fs.put([str(p) for p in files], [f"{path.rstrip('/')}/{p.relative_to(local).as_posix()}" for p in files])
    return len(files)


def download_tree(url: str, local: Path, missing_only: bool = False) -> Path:
    """The objects under `url` into the folder `local`. Whole: into a fresh folder renamed into place, so an
    interrupted download leaves no half folder at `local`. missing_only: add the files `local` lacks."""
    fs, path = storage.filesystem(url)
    fs.invalidate_cache(path)
    base = path.rstrip("/") + "/"
    remote = [p for p in fs.find(path) if p.startswith(base)]
    if not remote:
        raise ResumeError(f"{show(url)}: nothing there to download")
    target = local if missing_only else local.parent / f".{local.name}.part-{uuid.uuid4().hex[:8]}"
    pairs = [(p, target / p[len(base):]) for p in remote]
    if missing_only:
        pairs = [(p, dst) for p, dst in pairs if not dst.is_file()]
    for _, dst in pairs:
        dst.parent.mkdir(parents=True, exist_ok=True)
    if pairs:
        fs.get([p for p, _ in pairs], [str(dst) for _, dst in pairs])
    if not missing_only:
        shutil.rmtree(local, ignore_errors=True)
        os.replace(target, local)
    return local


class RunStore:
    """output.dir as one rank writes it. Local output.dir: `local` is output.dir itself, every method a
    no-op. URL: `local` is this rank's staging folder (see the module docstring); `root` is where complete
    tags live (checkpoints/ under the URL; for a local output.dir the same folder as `local_root`)."""

    def __init__(self, output_dir: Location, rank: int, state_root: str | None = None):
        self.url, self.rank, self.remote = str(output_dir), rank, is_url(output_dir)
        self.local = (storage.local_state_dir(self.url, state_root) / f"rank{rank:05d}" if self.remote
                      else storage.local_path(self.url))
        self.local_root = self.local / "checkpoints"
        self.root = checkpoint_root(self.url) if self.remote else self.local_root

    def where(self, name: str = "") -> str:
        """A file of the run as it may be printed: its URL (redacted) or local path."""
        return show(child(self.url if self.remote else self.local, name) if name else self.url)

    def upload_tag(self, tag: str) -> None:
        if self.remote:
            upload_tree(self.local_root / tag, storage.join(self.root, tag))

    def fetch_tag(self, root: Location, tag: str, missing_only: bool = False) -> Path:
        """The local checkpoint root holding `tag` (downloaded when `root` is a URL)."""
        if not is_url(root):
            return Path(root)
        self.local_root.mkdir(parents=True, exist_ok=True)
        download_tree(storage.join(root, tag), self.local_root / tag, missing_only=missing_only)
        return self.local_root

    def prune_stage(self, keep: str) -> None:
        """Staging only: drop the local copies of other tags (the URL keeps the last keep_last)."""
        if self.remote:
            for name in _tag_dirs(self.local_root):
                if name != keep:
                    shutil.rmtree(self.local_root / name, ignore_errors=True)

    def publish(self, *names: str) -> None:
        """Upload these files/folders of the staging folder (those that exist) to the URL."""
        if not self.remote:
            return
        for name in names:
            path = self.local / name
            if path.is_dir():
                upload_tree(path, storage.join(self.url, name))
            elif path.is_file():
                fs, key = storage.filesystem(storage.join(self.url, name))
                fs.put_file(str(path), key)

    def pull(self, *names: str) -> None:
        """Replace these local files by the URL's copies (or remove them when the URL has none)."""
        if not self.remote:
            return
        self.local.mkdir(parents=True, exist_ok=True)
        for name in names:
            url = storage.join(self.url, name)
            if storage.exists(url):
                storage.write_bytes(self.local / name, storage.read_bytes(url))
            else:
                (self.local / name).unlink(missing_ok=True)


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


def check_compatible(tag_dir: Location, run_info: dict[str, Any], check_world: bool = True) -> None:
    """Refuse a checkpoint of another model or another world size, in one line."""
    path = child(tag_dir, "run.json")
    if not storage.exists(path):
        raise ResumeError(f"checkpoint {show(tag_dir)} has no run.json: not written by training.pretrain")
    saved = storage.read_json(path)
    tag_dir = show(tag_dir)
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


MARKERS = ("complete.json", "unreadable.json")      # a tag's own bookkeeping, not in its file list


def tag_files(tag_dir: Location) -> dict[str, int]:
    """Every file under a tag folder (relative POSIX name -> bytes), without complete.json/unreadable.json."""
    if not is_url(tag_dir):
        root = Path(tag_dir)
        found = {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}
    else:
        fs, path = storage.filesystem(tag_dir)
        fs.invalidate_cache(path)
        base = path.rstrip("/") + "/"
        try:
            entries = fs.find(path, detail=True)
        except FileNotFoundError:
            entries = {}
        found = {name[len(base):]: int(info.get("size") or 0) for name, info in entries.items()
                 if name.startswith(base) and info.get("type") != "directory"}
    return {name: size for name, size in sorted(found.items()) if name not in MARKERS}


def mark_complete(tag_dir: Location, step: int, run_info: dict[str, Any]) -> None:
    """run.json, then complete.json: the commit of a tag (local: renamed into place; URL: one PUT each).
    Called after every rank saved (and uploaded): complete.json records each file's size, which is what
    resume checks before loading (verify_tag)."""
    if is_url(tag_dir):
        storage.write_json(child(tag_dir, "run.json"), run_info)
        storage.write_json(child(tag_dir, "complete.json"), {"step": step, "files": tag_files(tag_dir)})
        return
    write_json(Path(tag_dir) / "run.json", run_info)
    write_json(Path(tag_dir) / "complete.json", {"step": step, "files": tag_files(tag_dir)})


def verify_tag(tag_dir: Location) -> str | None:
    """Why a complete tag cannot be loaded (a file missing or of another size than complete.json recorded),
    or None. Tags written before complete.json listed files pass; loading them tells (unreadable_reason)."""
    try:
        done = storage.read_json(child(tag_dir, "complete.json"))
    except (OSError, ValueError) as exc:
        return f"complete.json is unreadable: {type(exc).__name__}"
    files = done.get("files") if isinstance(done, dict) else None
    if not isinstance(files, dict) or not files:
        return None
    have = tag_files(tag_dir)
    wrong = [f"{name} is missing" if name not in have else f"{name} has {have[name]} of its {size} bytes"
             for name, size in files.items() if have.get(name) != size]
    if not wrong:
        return None
    return wrong[0] + (f" (and {len(wrong) - 1} more file(s))" if len(wrong) > 1 else "")


# torch.load's words for a truncated or damaged zip checkpoint (torch.serialization / its miniz reader)
_CORRUPT = re.compile(r"PytorchStreamReader|zip archive|corrupt|unexpected EOF|failed finding central directory",
                      re.IGNORECASE)


def unreadable_reason(exc: BaseException) -> str | None:
    """A short reason when `exc` (raised while loading a tag) means its files are truncated, corrupt or
    missing; None for any other error, which must not be mistaken for a bad file (a model that does not
    fit, a bug) and is raised as it is."""
    import pickle
    import zipfile

    if isinstance(exc, RuntimeError) and not _CORRUPT.search(str(exc)):
        return None
    if not isinstance(exc, (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, FileNotFoundError)):
        return None
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = text.split(". ")[0][:160]                       # torch appends several sentences of advice
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def demote(tag_dir: Location, reason: str) -> None:
    """An unreadable complete tag -> an incomplete one: unreadable.json (the reason, what complete.json said),
    then complete.json removed. Resume and prune then treat it like a save that never finished."""
    try:
        done = storage.read_json(child(tag_dir, "complete.json"))
    except (OSError, ValueError):
        done = None
    note = {"reason": reason, "complete": done}
    if is_url(tag_dir):
        storage.write_json(child(tag_dir, "unreadable.json"), note)
    else:
        write_json(Path(tag_dir) / "unreadable.json", note)
    storage.remove(child(tag_dir, "complete.json"))


def clear_tag(root: Location, tag: str) -> None:
    """Before a save: remove what an earlier attempt left under this tag (a killed save, a demoted tag), so
    the new one holds only its own files (rank 0, before the barrier that lets the ranks write)."""
    where = child(root, tag)
    if storage.exists(where):
        _remove_tree(where)


def prune(root: Location, keep_last: int) -> list[str]:
    """Delete all but the newest `keep_last` complete checkpoints, and incomplete ones older than them."""
    tags = complete_tags(root)
    removed = []
    keep = {t for _, t in tags[-keep_last:]}
    complete = {t for _, t in tags}
    newest_kept = tags[-keep_last][0] if len(tags) >= keep_last else (tags[0][0] if tags else -1)
    for name in _tag_dirs(root):
        if name in keep:
            continue
        if name in complete or int(TAG_RE.match(name).group(1)) < newest_kept:
            _remove_tree(child(root, name))
            removed.append(name)
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
