"""`python -m training.evaluate --task finetune`: the video tower + a linear head trained end to end through
DeepSpeed in this one process (no launcher), on a very small model and tiny UCF-101-layout clips; stopped by
max_steps and resumed from its checkpoint; the pieces (lr groups, schedule, epoch order, training clips)."""
from __future__ import annotations

import json
import os
import random
from dataclasses import asdict

import pytest
import torch
import yaml

from tests.training.eval_helpers import ucf_set
from tests.training.train_helpers import MINI_MODEL

# 3 classes x 6 train clips, batch 6: 3 steps an epoch; 4 epochs = 12 steps, warmup 1 epoch.
FINETUNE = {"dataset": "colours", "epochs": 4, "batch_size": 6, "lr": 3.0e-3, "warmup_epochs": 1,
            "log_every": 1, "clips": 2, "crops": 3}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """(checkpoint .pt with its .json, config YAML, output folder); the process group DeepSpeed makes in
    this process is taken down afterwards, with the variables it set (forked tests start their own)."""
    from training.model import TVTS
    from training.model_config import load_preset

    root = tmp_path_factory.mktemp("finetune")
    cfg = load_preset("tiny", MINI_MODEL)
    torch.manual_seed(0)
    ckpt = root / "model.pt"
    torch.save(TVTS(cfg).state_dict(), ckpt)
    ckpt.with_suffix(".json").write_text(json.dumps({"preset": "tiny", "model": asdict(cfg)}))
    config = root / "eval.yaml"
    config.write_text(yaml.safe_dump({"seed": 0, "evaluate": {
        "data": {"shards": "unused", "num_workers": 0}, "output": {"dir": str(root / "out")},
        "downstream": {"datasets": [{"name": "colours", **ucf_set(root / "ucf")}], "finetune": FINETUNE}}}))
    saved = dict(os.environ)
    yield {"ckpt": str(ckpt), "config": str(config), "out": root / "out"}
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved)


def run(sets, *args: str) -> int:
    from training.evaluate import main

    return main(["--checkpoint", sets["ckpt"], "--config", sets["config"], "--task", "finetune", *args])


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_stopped_run_resumes_and_the_model_learns(sets, capsys):
    out = sets["out"] / "colours"
    run_dir = out / "finetune"
    # Stopped after 5 of 12 steps: checkpoints at the end of epoch 1 (step 3) and at the stop (step 5).
    assert run(sets, "--set", "downstream.finetune.max_steps=5") == 0
    first = json.loads((out / "finetune.json").read_text())
    assert (first["steps"], first["total_steps"], first["finished"], first["trained_steps"]) == (5, 12, False, 5)
    tags = sorted(p.name for p in (run_dir / "checkpoints").glob("step*") if (p / "complete.json").is_file())
    assert tags == ["step00000003", "step00000005"]
    assert "not finished" in capsys.readouterr().out

    # The same arguments without max_steps: continues at step 6 (not from 0), to the end of the schedule.
    assert run(sets) == 0
    result = json.loads((out / "finetune.json").read_text())
    assert (result["resumed_from"], result["trained_steps"], result["steps"], result["finished"]) == (5, 7, 12, True)
    assert "resumed from step 5" in capsys.readouterr().out
    steps = [r["step"] for r in rows(run_dir / "metrics.jsonl")]
    assert steps == list(range(1, 13))                      # one row per step, none repeated or missing
    assert [r["epoch"] for r in rows(run_dir / "metrics.jsonl")] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    lrs = [r["lr"] for r in rows(run_dir / "metrics.jsonl")]
    assert lrs[2] == pytest.approx(3e-3) and lrs[-1] < lrs[3]        # warmup to lr, then cosine decay

    # A random tiny tower learns three colours end to end; untrained (head ~0) it is at chance.
    assert (result["classes"], result["train_videos"], result["eval_videos"]) == (3, 18, 9)
    assert result["views"] == "2 x 3 views (clips x crops)" and result["chance_top1"] == pytest.approx(100 / 3)
    assert result["final_loss"] < result["first_loss"] - 0.2, result
    assert result["top1"] >= 77.0, result                   # 7 of 9 (chance: 3 of 9)
    assert result["train_failures"] == {} and result["eval_failures"] == {}
    assert result["flip"] is True and result["layer_decay"] == 0.75 and result["weights_from"] == "checkpoint"

    # The run it continues is the one it would have been: an uninterrupted run ends with the same loss.
    assert run(sets, "--set", f"output.dir={sets['out'] / 'straight'}") == 0
    straight = rows(sets["out"] / "straight" / "colours" / "finetune" / "metrics.jsonl")
    assert [r["step"] for r in straight] == steps
    assert [r["loss"] for r in straight] == pytest.approx([r["loss"] for r in rows(run_dir / "metrics.jsonl")],
                                                          rel=1e-4, abs=1e-5)

    # Finished: a rerun trains nothing and tests the same weights again.
    assert run(sets) == 0
    again = json.loads((out / "finetune.json").read_text())
    assert again["trained_steps"] == 0 and again["top1"] == result["top1"]


def test_other_settings_do_not_resume_a_run(sets, capsys):
    if not (sets["out"] / "colours" / "finetune" / "checkpoints").is_dir():
        assert run(sets, "--set", "downstream.finetune.max_steps=1") == 0
    capsys.readouterr()
    assert run(sets, "--set", "downstream.finetune.lr=0.01") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "fine-tuned with other train.lr" in err and "\n" not in err

    from training.finetune import lock_run_dir

    held = lock_run_dir(sets["out"] / "colours" / "finetune")          # as a second run in the same folder sees it
    try:
        assert run(sets) == 2
        assert "another finetune run holds its lock" in capsys.readouterr().err
    finally:
        held.close()


def test_summary_lists_finetune_beside_random_init(tmp_path):
    from training.eval_summary import summary_lines

    result = {"task": "finetune", "dataset": "acts", "preset": "tiny", "chance_top1": 16.67}
    for folder, top1 in ((tmp_path / "acts", 90.0), (tmp_path / "random-init" / "acts", 40.0)):
        folder.mkdir(parents=True)
        (folder / "finetune.json").write_text(json.dumps({**result, "top1": top1}))
    row = next(line for line in summary_lines(tmp_path) if "fine-tune top-1" in line)
    assert row.split()[-3:] == ["90.00%", "40.00%", "16.67%"]


# ---- the pieces --------------------------------------------------------------------------------------
def test_layer_wise_lr_and_no_decay_groups():
    from training.eval_config import FinetuneSettings
    from training.finetune import Classifier, param_groups
    from training.model import TVTS
    from training.model_config import load_preset

    model = TVTS(load_preset("tiny", MINI_MODEL + ["video.depth=2"]))
    groups = {g["name"]: g for g in param_groups(Classifier(model.video, 5), FinetuneSettings(lr=1.0, layer_decay=0.5))}
    # depth 2: embeddings 0.5^3, block 0 0.5^2, block 1 0.5, norm and head 1
    assert {n: g["lr"] for n, g in groups.items() if not n.endswith("no_decay")} == {
        "layer0": 0.125, "layer1": 0.25, "layer2": 0.5, "layer3": 1.0}
    names = {id(p): n for n, p in Classifier(model.video, 5).named_parameters()}
    assert all(g["weight_decay"] == 0.0 for n, g in groups.items() if n.endswith("no_decay"))
    assert groups["layer3"]["weight_decay"] == 0.05 and len(groups["layer3"]["params"]) == 1   # the head weight
    assert sum(len(g["params"]) for g in groups.values()) == len(names)


def test_schedule_and_epoch_order():
    from training.finetune import epoch_batches, lr_factor

    f = lr_factor(total=20, warmup=4)
    assert [f(s) for s in (0, 3, 4)] == pytest.approx([0.25, 1.0, 1.0]) and f(19) < 0.02
    assert all(f(s) >= f(s + 1) for s in range(4, 20))
    one = epoch_batches(10, 3, seed=0, batch=4)
    assert [len(b) for b in one] == [4, 4, 2] and sorted(sum(one, [])) == list(range(10))
    assert one == epoch_batches(10, 3, seed=0, batch=4) != epoch_batches(10, 4, seed=0, batch=4)
    ranks = [epoch_batches(11, 0, 0, 4, rank=r, world=2) for r in range(2)]
    assert [len(b) for b in ranks] == [2, 2]                           # 11 padded to 12: 6 each
    assert set(sum(ranks[0] + ranks[1], [])) == set(range(11))


def test_training_clip_is_a_function_of_its_seed(tmp_path):
    from tests.training.eval_helpers import COLOURS, write_clip
    from training.video_views import ViewSpec, decode_train_clip

    path = write_clip(tmp_path / "c.avi", COLOURS["Red"], seed=1)
    spec = ViewSpec(frames=4, image_size=32)
    a = decode_train_clip(path, spec, random.Random("0:1:2"), (0.5, 1.0), flip=True)
    assert a.shape == (3, 4, 32, 32) and torch.isfinite(a).all()
    assert torch.equal(a, decode_train_clip(path, spec, random.Random("0:1:2"), (0.5, 1.0), flip=True))
    assert not torch.equal(a, decode_train_clip(path, spec, random.Random("0:1:3"), (0.5, 1.0), flip=True))


@pytest.mark.parametrize("override, message", [
    ("downstream.finetune.layer_decay=1.5", "'.layer_decay' in (0, 1]"),
    ("downstream.finetune.crops=2", "'.crops' 1 or 3"),
    ("downstream.finetune.dataset=nope", "is not one of downstream.datasets"),
])
def test_a_wrong_setting_is_one_line(override, message):
    from common.config import ConfigError, load_config
    from training.config import EvalConfig

    with pytest.raises(ConfigError, match=r".*") as err:
        load_config(EvalConfig, None, [override], job="evaluate")
    assert message in str(err.value) and "\n" not in str(err.value)
