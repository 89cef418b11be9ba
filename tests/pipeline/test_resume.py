"""Kill the job (the driver, then separately a Ray worker) with SIGKILL mid-run; the rerun's shards equal
an uninterrupted run's, shard by shard and byte for byte, with one ledger outcome per video."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipeline.ledger import Ledger
from pipeline.run import main
from tests.pipeline.corpus import make_corpus

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("resume"), n=6, duration=48.0)


def _args(manifest: Path, out: Path) -> list[str]:
    # 2 samples per video, 2 videos per input shard: 3 shards of 4 samples, each written by a worker task
    # (its temp file lives while the tar is written, so a kill can find it half-written).
    return ["--set", f"input.manifest={manifest}", "--set", f"output.dir={out}", "--set", "shards.input_rows=2",
            "--set", "asr.enabled=false", "--set", "ray.num_cpus=2", "--set", "segment.samples_per_slot=1",
            "--no-progress"]


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert main(_args(corpus, out) + ["--no-ray"]) == 0
    return out


def _start(manifest: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-m", "pipeline", "run", *_args(manifest, out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _descendants(proc: subprocess.Popen, known: dict[int, psutil.Process]) -> dict[int, psutil.Process]:
    try:
        for child in psutil.Process(proc.pid).children(recursive=True):
            known.setdefault(child.pid, child)
    except psutil.NoSuchProcess:
        pass
    return known


def _kill_all(procs: dict[int, psutil.Process]) -> None:
    """SIGKILL the processes this test started (Ray's gcs/raylet/workers of the killed driver), by pid."""
    for proc in procs.values():
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(procs.values()), timeout=10)


def _wait_for(predicate, proc, known, timeout=240.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        _descendants(proc, known)
        found = predicate()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the job ended before the kill point:\n{proc.stdout.read().decode()[-3000:]}")
        time.sleep(0.05)
    pytest.fail("the kill point never came")


def _done_stats(out: Path) -> list[Path]:
    return sorted((out / "shards").glob("shard-*_stats.json")) if (out / "shards").is_dir() else []


def _open_temp(out: Path) -> list[Path]:
    return sorted((out / "shards").glob(".shard-*.tmp")) if (out / "shards").is_dir() else []


def _assert_same_as(out: Path, reference: Path) -> None:
    ref = sorted(p.name for p in (reference / "shards").iterdir())
    got = sorted(p.name for p in (out / "shards").iterdir())
    assert got == ref  # no temp file, no extra shard
    for name in ref:
        if name.endswith(".tar"):
            assert (out / "shards" / name).read_bytes() == (reference / "shards" / name).read_bytes(), name
        if name.endswith("_stats.json"):
            a = json.loads((out / "shards" / name).read_text())
            b = json.loads((reference / "shards" / name).read_text())
            assert a["videos"] == b["videos"] and a["samples"] == b["samples"]
    with Ledger(out / "ledger.sqlite") as got_ledger, Ledger(reference / "ledger.sqlite") as ref_ledger:
        fields = ("video_id", "status", "shard", "keys")
        assert [{k: o[k] for k in fields} for o in got_ledger.outcomes()] == \
               [{k: o[k] for k in fields} for o in ref_ledger.outcomes()]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["written"], summary["samples"], summary["shards"]) == (6, 12, 3)


def test_kill_driver_then_rerun(corpus, reference, tmp_path):
    out = tmp_path / "out"
    known: dict[int, psutil.Process] = {}
    proc = _start(corpus, out)
    try:
        # kill -9 the driver while a shard is half-written (temp file present) after one shard is done;
        # should two videos arrive together and close a shard at once, kill after the second shard anyway
        _wait_for(lambda: (_done_stats(out) and _open_temp(out)) or len(_done_stats(out)) >= 2, proc, known)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _kill_all(_descendants(proc, known))
    assert proc.returncode == -signal.SIGKILL
    half_written = bool(_open_temp(out))
    # On an idle machine the last shard can close between the check and the kill: the kill then lands
    # in the ledger/summary commit, which the rerun must also survive.
    assert 1 <= len(_done_stats(out)) <= 3

    rerun = subprocess.run([sys.executable, "-m", "pipeline", "run", *_args(corpus, out)], cwd=ROOT,
                           capture_output=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    if half_written:
        assert summary["this_run"]["removed_incomplete"]  # the half-written shard was deleted, not kept
    assert summary["this_run"]["processed"] < 6       # only what was missing was redone
    _assert_same_as(out, reference)


def test_kill_a_worker_mid_run(corpus, reference, tmp_path):
    out = tmp_path / "out"
    known: dict[int, psutil.Process] = {}
    proc = _start(corpus, out)

    def busy_worker():
        for child in list(known.values()):
            try:
                if "MapBatches" in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        return None

    try:
        # Kill the first worker seen running a stage task: on an idle machine the 6-video job can end
        # within a second of its first shard, so waiting for a shard first may miss the run.
        victim = _wait_for(busy_worker, proc, known)
        victim.kill()
        code = proc.wait(timeout=600)
    finally:
        _kill_all(_descendants(proc, known))
    if code != 0:  # Ray retries a task whose worker died; should the job still break, a rerun resumes it
        rerun = subprocess.run([sys.executable, "-m", "pipeline", "run", *_args(corpus, out)], cwd=ROOT,
                               capture_output=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    _assert_same_as(out, reference)
