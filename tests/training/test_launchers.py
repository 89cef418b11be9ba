"""Launchers and bad input: one process, Ray Train, and one-line errors (never a hang) for bad config/data."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.training.train_helpers import PY, ROOT, env, metrics, run, write_config
from training.synthetic import write_synthetic_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("launch_shards")
    write_synthetic_shards(out, shards=2, samples=8, size=(40, 40), frames=8, seed=9)
    return out


def errors(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("error")]


def test_wrong_config_key_is_one_line(tmp_path, shards):
    config = write_config(tmp_path / "c.yaml", str(shards / "shard-*.tar"), tmp_path / "out")
    result = run([PY, "-m", "training.pretrain", "--config", str(config), "--set", "train.max_stepz=3"], timeout=60)
    assert result.returncode == 2
    assert len(errors(result)) == 1 and "train.max_stepz" in errors(result)[0]


def test_missing_shards_path_is_one_line(tmp_path):
    config = write_config(tmp_path / "c.yaml", str(tmp_path / "nowhere" / "shard-{000000..000003}.tar"),
                          tmp_path / "out")
    result = run([PY, "-m", "training.pretrain", "--config", str(config)], timeout=120)
    assert result.returncode == 2, result.stdout[-2000:]
    assert len(errors(result)) == 1 and "does not exist" in errors(result)[0]


@pytest.mark.slow
def test_empty_shards_fail_in_one_line(tmp_path):
    (tmp_path / "shard-000000.tar").write_bytes(b"")
    (tmp_path / "shard-000001.tar").write_bytes(b"\0" * 1024)    # an empty tar archive (end blocks only)
    config = write_config(tmp_path / "c.yaml", str(tmp_path / "shard-*.tar"), tmp_path / "out")
    result = run([PY, "-m", "training.pretrain", "--config", str(config)], timeout=180)
    assert result.returncode == 2, result.stdout[-2000:]
    assert len(errors(result)) == 1 and "no usable train samples in 2 shard(s)" in errors(result)[0]


@pytest.mark.slow
def test_ray_train_runs_the_same_training_function(tmp_path, shards):
    out = tmp_path / "ray"
    config = write_config(tmp_path / "c.yaml", str(shards / "shard-*.tar"), out, max_steps=2,
                          deepspeed="training/presets/pretrain_cpu_zero2.json")
    proc = subprocess.Popen([PY, "-m", "training.raytrain", "--config", str(config), "--workers", "2"], cwd=ROOT,
                            env=env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        import psutil

        # only the processes this run started (its local Ray cluster), by pid
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        os.killpg(proc.pid, 9)
        stdout, _ = proc.communicate()
        pytest.fail(f"Ray Train run hung:\n{stdout[-3000:]}")
    assert proc.returncode == 0, stdout[-3000:]
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert "on 2 rank(s)" in stdout and "ZeRO stage 2" in stdout
    assert (out / "model_fp32.pt").is_file()


@pytest.mark.slow
def test_kill_9_of_the_launcher_leaves_no_orphan_ranks(tmp_path, shards):
    import time

    import psutil

    from tests.training.train_helpers import torchrun_cmd

    out = tmp_path / "orphans"
    config = write_config(tmp_path / "c.yaml", str(shards / "shard-*.tar"), out, max_steps=500, checkpoint_every=1000)
    proc = subprocess.Popen(torchrun_cmd(config), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not ((out / "metrics.jsonl").is_file() and metrics(out)):
            assert proc.poll() is None, "training stopped before its first step"
            time.sleep(0.5)
        ranks = [p for p in psutil.Process(proc.pid).children() if "training.pretrain" in " ".join(p.cmdline())]
        assert len(ranks) == 2
        everything = psutil.Process(proc.pid).children(recursive=True)   # ranks and their loader workers
        proc.kill()                                           # SIGKILL the launcher only
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(everything, timeout=30)
        assert not alive, f"processes outlived their launcher: {[p.pid for p in alive]}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        for p in psutil.process_iter():                       # never leave our ranks behind
            try:
                if str(config) in " ".join(p.cmdline()):
                    p.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
