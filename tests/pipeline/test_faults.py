"""Faults of the job's environment stop it cleanly: the output disk full while a shard is written (a temp file
that is /dev/full), the output folder replaced by a file. One line, exit code 1, not a failure per video;
nothing half-written stays; after the fault is fixed the rerun ends with the shards of an uninterrupted run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.run import main
from tests.pipeline.corpus import make_corpus

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("faults"), n=4, duration=48.0)


def _args(manifest, out):
    sets = [f"input.manifest={manifest}", f"output.dir={out}", "shards.input_rows=1", "asr.enabled=false",
            "segment.samples_per_slot=1"]
    return [a for s in sets for a in ("--set", s)] + ["--no-ray", "--no-progress"]


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults-reference")
    assert main(_args(corpus, out)) == 0
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}


def test_disk_full_while_writing_a_shard_stops_the_job(corpus, reference, tmp_path):
    out = tmp_path / "out"
    job = subprocess.Popen([sys.executable, "-m", "pipeline", "run", *_args(corpus, out)], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shards = out / "shards"
    deadline = time.time() + 300
    while not (shards / "shard-000000_stats.json").exists():   # shards are written in order without Ray
        assert job.poll() is None and time.time() < deadline, job.communicate()
        time.sleep(0.05)
    for index in (2, 3):   # the next shards' temp files are /dev/full: every write fails with ENOSPC
        os.symlink("/dev/full", shards / f".shard-{index:06d}.tar.tmp")
    _, err = job.communicate(timeout=300)
    assert job.returncode == 1, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: the pipeline job stopped: cannot write") and "No space left on device" in line
    assert not (shards / ".shard-000002.tar.tmp").exists(), "the failed temp file stayed"
    assert not (shards / "shard-000002.tar").exists() and not (shards / "shard-000002_stats.json").exists()
    (shards / ".shard-000003.tar.tmp").unlink(missing_ok=True)   # the disk has room again

    assert main(_args(corpus, out)) == 0   # the rerun finishes the job
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 0 and summary["this_run"]["processed"] <= 3
    assert {p.name: p.read_bytes() for p in sorted(shards.glob("*.tar"))} == reference


def test_output_folder_gone_is_one_line_exit_1(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "shards").write_text("not a folder any more\n")   # someone replaced it
    assert main(_args(corpus, out)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the pipeline job stopped:") and "\n" not in err
