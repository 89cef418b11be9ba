"""Unreadable checkpoints (training/checkpoint.py, training/resume.py): complete.json records every file's
size; resume passes over a truncated, corrupt or incomplete newest tag to the next older one, saying so;
none readable, or an unreadable tag named by --resume, is one line and exit 1, never a silent fresh start."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import torch

from tests.training.train_helpers import PY, metrics, run, write_config
from training import checkpoint as ckpt
from training import resume
from training.synthetic import write_synthetic_shards

INFO = {"preset": "tiny", "model": {}, "world_size": 1, "mode": "pretrain"}
FILES = {"mp_rank_00_model_states.pt": b"m" * 400, "rank00000.pt": b"r" * 100, "sub/part.bin": b"p" * 10}


def write_tag(root: ckpt.Location, step: int, files: dict[str, bytes] = FILES) -> ckpt.Location:
    tag_dir = ckpt.child(root, ckpt.tag_for(step))
    for name, data in files.items():
        if ckpt.is_url(tag_dir):
            from common import storage

            storage.write_bytes(ckpt.child(tag_dir, name), data)
        else:
            (Path(tag_dir) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(tag_dir) / name).write_bytes(data)
    ckpt.mark_complete(tag_dir, step, INFO)
    return tag_dir


def choose(store: ckpt.RunStore, lines: list[str], arg: str | None = None, max_steps: int = 100):
    return resume.choose(arg, store, INFO, max_steps, rank=0, world=1, log=lines.append)


@pytest.mark.parametrize("where", ["local", "url"])
def test_sizes_in_complete_json_catch_truncated_and_missing_files(tmp_path, where):
    out = str(tmp_path / "run") if where == "local" else f"memory://tvts-{uuid.uuid4().hex[:8]}/run"
    store = ckpt.RunStore(out, 0, state_root=str(tmp_path / "stage"))
    for step in (2, 4, 6):
        write_tag(store.root, step)
    done = json.loads(ckpt.storage.read_bytes(ckpt.child(store.root, "step00000006", "complete.json")))
    assert done["files"] == {"mp_rank_00_model_states.pt": 400, "rank00000.pt": 100, "run.json": done["files"]["run.json"],
                             "sub/part.bin": 10}
    assert all(ckpt.verify_tag(ckpt.child(store.root, ckpt.tag_for(s))) is None for s in (2, 4, 6))

    # step 6: the model file cut to half; step 4: a rank file gone
    ckpt.storage.write_bytes(ckpt.child(store.root, "step00000006", "mp_rank_00_model_states.pt"), b"m" * 200)
    ckpt.storage.remove(ckpt.child(store.root, "step00000004", "rank00000.pt"))
    assert ckpt.verify_tag(ckpt.child(store.root, "step00000006")) == "mp_rank_00_model_states.pt has 200 of its 400 bytes"
    assert ckpt.verify_tag(ckpt.child(store.root, "step00000004")) == "rank00000.pt is missing"

    lines: list[str] = []
    choice = choose(store, lines)
    assert choice.tags == ["step00000002"] and choice.own and not choice.explicit
    assert [t for t, _ in choice.unreadable] == ["step00000006", "step00000004"]
    assert len(lines) == 2 and lines[0].startswith("warning: checkpoint ") and "step00000006 is unreadable (mp_rank_00" in lines[0]
    assert lines[0].endswith("; resuming from step00000002") and lines[1].endswith("; resuming from step00000002")
    # an unreadable tag older than the one resumed from is reported as such
    ckpt.storage.write_bytes(ckpt.child(store.root, "step00000004", "rank00000.pt"), b"r" * 100)
    ckpt.storage.remove(ckpt.child(store.root, "step00000002", "rank00000.pt"))
    lines = []
    assert choose(store, lines).tags == ["step00000004"]
    assert lines[1].endswith("step00000002 is unreadable (rank00000.pt is missing); older than step00000004, "
                             "which this run resumes from")
    ckpt.storage.write_bytes(ckpt.child(store.root, "step00000002", "rank00000.pt"), b"r" * 100)
    ckpt.storage.remove(ckpt.child(store.root, "step00000004", "rank00000.pt"))

    # named explicitly: no fallback, one line, exit code 1
    with pytest.raises(ckpt.CheckpointUnreadable, match=r"step00000006: the checkpoint is unreadable \(mp_rank") as err:
        choose(store, [], arg=str(ckpt.child(store.root, "step00000006")))
    assert err.value.code == 1

    # demoted (what load() does once step 2 has loaded): no longer complete, the reason kept beside it
    ckpt.demote(ckpt.child(store.root, "step00000006"), "cut short")
    assert [t for _, t in ckpt.complete_tags(store.root)] == ["step00000002", "step00000004"]
    note = json.loads(ckpt.storage.read_bytes(ckpt.child(store.root, "step00000006", "unreadable.json")))
    assert note["reason"] == "cut short" and note["complete"]["step"] == 6
    ckpt.clear_tag(store.root, "step00000006")                 # what save() does before writing step 6 again
    assert not ckpt.storage.exists(ckpt.child(store.root, "step00000006"))

    # none readable: an error, not a fresh start (which --fresh asks for)
    ckpt.storage.remove(ckpt.child(store.root, "step00000002", "sub/part.bin"))
    with pytest.raises(ckpt.CheckpointUnreadable, match=r"no readable checkpoint in .*step00000004 \(rank00000.pt "
                                                        r"is missing\); step00000002 \(sub/part.bin is missing\).*--fresh"):
        choose(store, [])


def test_old_tags_without_sizes_and_damaged_markers(tmp_path):
    store = ckpt.RunStore(str(tmp_path / "run"), 0)
    old = write_tag(store.root, 2)
    (Path(old) / "complete.json").write_text(json.dumps({"step": 2}))     # written before sizes were recorded
    assert ckpt.verify_tag(old) is None
    bad = write_tag(store.root, 4)
    (Path(bad) / "complete.json").write_text('{"step": 4, "fi')           # the marker itself cut short
    assert ckpt.verify_tag(bad) == "complete.json is unreadable: JSONDecodeError"
    lines: list[str] = []
    assert choose(store, lines).tags == ["step00000002"] and "step00000004 is unreadable" in lines[0]
    # a finished run of 2 ranks rerun with 1: the newest tag is the end, older ones are not looked at
    other = ckpt.RunStore(str(tmp_path / "other"), 0)
    for step in (2, 3):
        ckpt.mark_complete(write_tag(other.root, step), step, {**INFO, "world_size": 2})
    assert choose(other, [], max_steps=3).tags == ["step00000003"]
    with pytest.raises(ckpt.ResumeError, match="written by 2 ranks"):
        choose(other, [], max_steps=4)
    # another preset in run.json is no fallback: that is a wrong config (ResumeError, exit 2)
    json.dump({**INFO, "preset": "base"}, open(Path(old) / "run.json", "w"))
    with pytest.raises(ckpt.ResumeError, match="preset 'base'"):
        choose(store, [])


def test_load_errors_of_bad_files_are_told_from_other_errors(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(Exception) as err:
        torch.load(path, weights_only=False)
    assert ckpt.unreadable_reason(err.value).startswith("RuntimeError: PytorchStreamReader failed reading zip archive")
    path.write_bytes(b"")
    with pytest.raises(Exception) as err:
        torch.load(path, weights_only=False)
    assert ckpt.unreadable_reason(err.value) is not None
    assert ckpt.unreadable_reason(FileNotFoundError("gone")) == "FileNotFoundError: gone"
    assert ckpt.unreadable_reason(RuntimeError("Error(s) in loading state_dict for TVTS")) is None
    assert ckpt.unreadable_reason(ValueError("a bug")) is None


# ---------------------------------------------------------------------------------------------------
# through python -m training.pretrain


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fallback_shards")
    write_synthetic_shards(out, shards=1, samples=12, size=(40, 40), frames=8, seed=4)
    return out


@pytest.mark.slow
def test_resume_falls_back_past_truncated_and_corrupt_checkpoints(shards, tmp_path):
    out = tmp_path / "run"
    # a constant lr: the step schedule's milestones scale with max_steps, which the resume raises
    config = write_config(tmp_path / "c.yaml", str(shards / "shard-*.tar"), out, max_steps=6, checkpoint_every=2,
                          keep_last=3, schedule="constant")
    first = run([PY, "-m", "training.pretrain", "--config", str(config)], timeout=240)
    assert first.returncode == 0, first.stdout[-3000:]
    reference = metrics(out)
    ck = out / "checkpoints"
    # step 6: its model file cut to half (the sizes in complete.json tell); step 4: the zip directory at
    # the end of its optimizer file zeroed in place, same size (only loading tells, after the model states
    # of step 4 have loaded: the fallback must replace all of them)
    model6 = ck / "step00000006" / "mp_rank_00_model_states.pt"
    os.truncate(model6, model6.stat().st_size // 2)
    optim4 = next((ck / "step00000004").glob("*optim_states.pt"))
    data = bytearray(optim4.read_bytes())
    data[-4096:] = bytes(4096)
    optim4.write_bytes(bytes(data))

    # --resume of the truncated tag itself: one line, exit 1, nothing changed
    named = run([PY, "-m", "training.pretrain", "--config", str(config), "--resume", str(ck / "step00000006"),
                 "--set", "train.max_steps=8"], timeout=240)
    assert named.returncode == 1, named.stdout[-3000:]
    errors = [line for line in named.stdout.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in named.stdout, named.stdout[-3000:]
    assert "step00000006: the checkpoint is unreadable (mp_rank_00_model_states.pt has" in errors[0]
    assert (ck / "step00000006" / "complete.json").is_file()

    # the run's own resume: 6 (sizes) -> 4 (load error) -> 2, then steps 3..8 as the first run made them
    resumed = run([PY, "-m", "training.pretrain", "--config", str(config), "--set", "train.max_steps=8"], timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    warnings = [line for line in resumed.stdout.splitlines() if "warning: checkpoint" in line]
    assert len(warnings) == 2, resumed.stdout[-3000:]
    assert "step00000006 is unreadable (mp_rank_00_model_states.pt has" in warnings[0]
    assert warnings[0].endswith("resuming from step00000004")
    assert "step00000004 is unreadable (RuntimeError: PytorchStreamReader" in warnings[1]
    assert warnings[1].endswith("resuming from step00000002")
    assert "resumed from" in resumed.stdout and "at step 2" in resumed.stdout
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 9))
    for a, b in zip(reference, rows):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6), (a["step"], a["loss"], b["loss"])
    # rewritten tags are complete and readable again; no trace of the damaged copies is left in them
    assert [t for _, t in ckpt.complete_tags(ck)] == ["step00000004", "step00000006", "step00000008"]
    assert all(ckpt.verify_tag(ck / t) is None for t in ("step00000004", "step00000006", "step00000008"))
    assert not list(ck.glob("*/unreadable.json"))

