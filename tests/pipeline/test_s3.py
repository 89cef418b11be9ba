"""The data job on object storage, for real: manifest, videos and captions read from s3:// and the shards
written there by the Ray workers (moto's S3 server on 127.0.0.1 through s3fs); bad locations fail in one
line before any work; the credentials appear in no output."""
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

from common import storage
from pipeline.run import main
from tests.pipeline.corpus import make_corpus

pytestmark = [pytest.mark.s3, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("s3corpus"), n=4, duration=48.0)


def _upload_corpus(s3_server, manifest) -> str:
    """The corpus in a bucket; its manifest names s3:// URLs only. Returns the manifest URL."""
    bucket = s3_server.new_bucket("corpus")
    fs = s3_server.fs()
    rows = []
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        for key in ("url", "captions"):
            name = os.path.basename(row[key])
            fs.put_file(row[key], f"{bucket[5:]}/media/{name}")
            row[key] = f"{bucket}/media/{name}"
        rows.append(row)
    url = f"{bucket}/manifest.jsonl"
    fs.pipe_file(url[5:], "".join(json.dumps(r) + "\n" for r in rows).encode())
    return url


def _args(manifest: str, out: str, *extra: str) -> list[str]:
    sets = [f"input.manifest={manifest}", f"output.dir={out}", "shards.input_rows=2", "asr.enabled=false",
            "segment.samples_per_slot=1", "ray.num_cpus=2", *extra]
    return [a for s in sets for a in ("--set", s)] + ["--no-progress"]


def _pieces(fs, url: str) -> dict[str, bytes]:
    fs.invalidate_cache()
    return {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in sorted(fs.ls(url[5:])) if p.endswith(".tar")}


def test_job_reads_and_writes_s3(s3_server, local_corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)   # a URL turned into a local path would show up here as a folder "s3:"
    manifest = _upload_corpus(s3_server, local_corpus)
    out = s3_server.new_bucket("out") + "/run"
    state = tmp_path / "state"
    assert main(_args(manifest, out, f"output.state_dir={state}")) == 0
    printed = capsys.readouterr()
    fs = s3_server.fs()
    summary = json.loads(fs.cat_file(f"{out[5:]}/summary.json"))
    assert (summary["written"], summary["samples"], summary["shards"]) == (4, 8, 2)
    assert summary["this_run"]["driver_bytes_in"] < 20_000   # the driver saw stats, not samples
    assert not (tmp_path / "s3:").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["state"]
    assert (state / "ledger.sqlite").is_file()

    # The same job into a local folder gives byte-identical shards.
    local = tmp_path / "local"
    assert main(_args(manifest, str(local), "ray.progress_bar=false")) == 0
    remote = _pieces(fs, f"{out}/shards")
    assert remote == {p.name: p.read_bytes() for p in sorted((local / "shards").glob("*.tar"))}
    assert set(remote) == {"shard-000000.tar", "shard-000001.tar"}

    # The ledger is only an index: without it (a new machine) the rerun rebuilds it and does nothing.
    assert main(_args(manifest, out, f"output.state_dir={tmp_path / 'other-state'}")) == 0
    again = json.loads(fs.cat_file(f"{out[5:]}/summary.json"))
    assert again["this_run"]["processed"] == 0 and again["written"] == 4
    assert again["this_run"]["ledger_reconciled"]["imported"] == 2
    assert _pieces(fs, f"{out}/shards") == remote

    # The secret key is in no output and was never printed.
    secret = s3_server.env["AWS_SECRET_ACCESS_KEY"]
    assert secret not in printed.out + printed.err + capsys.readouterr().err
    for path in fs.find(out[5:]):
        assert secret.encode() not in fs.cat_file(path), path


@pytest.mark.parametrize("out, expected", [
    ("nosuchproto://bucket/run", "output.dir nosuchproto://bucket/run: Protocol not known"),
    ("s3://no-such-bucket-tvts/run", "bucket 'no-such-bucket-tvts' does not exist"),
])
def test_unusable_output_is_one_line_before_any_work(s3_server, local_corpus, tmp_path, capsys, monkeypatch,
                                                     out, expected):
    monkeypatch.chdir(tmp_path)
    assert main(_args(str(local_corpus), out, f"output.state_dir={tmp_path / 'state'}")) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and err.startswith("error: ")
    assert not (tmp_path / "state").exists() and not any(tmp_path.iterdir())


def test_missing_filesystem_package_is_named(tmp_path, capsys):
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed here")
    except ImportError:
        pass
    with pytest.raises(storage.StorageError, match=r"needs gcsfs \(pip install gcsfs\)"):
        storage.check_location("gs://bucket/run", "output.dir", writable=True)


def test_kill_9_of_the_driver_then_rerun_on_s3(s3_server, local_corpus, tmp_path):
    """kill -9 of the driver (and of the local Ray it started) mid-job; the rerun's shards on S3 equal an
    uninterrupted run's, byte for byte, and no piece is there twice."""
    root = Path(__file__).resolve().parents[2]
    manifest = _upload_corpus(s3_server, local_corpus)
    reference = tmp_path / "reference"
    assert main(_args(manifest, str(reference), "shards.input_rows=1") + ["--no-ray"]) == 0
    want = {p.name: p.read_bytes() for p in sorted((reference / "shards").glob("*.tar"))}
    out = s3_server.new_bucket("kill") + "/run"
    args = _args(manifest, out, "shards.input_rows=1", f"output.state_dir={tmp_path / 'state'}")
    job = subprocess.Popen([sys.executable, "-m", "pipeline", "run", *args], cwd=root, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    fs = s3_server.fs()
    seen: dict[int, psutil.Process] = {}
    try:
        deadline = time.time() + 300
        while time.time() < deadline and job.poll() is None:
            for child in psutil.Process(job.pid).children(recursive=True):
                seen.setdefault(child.pid, child)
            fs.invalidate_cache()
            if len([p for p in fs.find(out[5:]) if p.endswith("_stats.json")]) >= 1:
                break
            time.sleep(0.1)
        assert job.poll() is None, "the job ended before the kill point"
        os.killpg(job.pid, signal.SIGKILL)   # the driver and everything in its session (its local Ray)
        job.wait(timeout=30)
    finally:
        for proc in seen.values():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(list(seen.values()), timeout=10)
    done_before = len(_pieces(fs, f"{out}/shards"))
    assert 1 <= done_before <= 4
    assert main(args) == 0
    summary = json.loads(fs.cat_file(f"{out[5:]}/summary.json"))
    assert summary["this_run"]["processed"] < 4 and summary["written"] == 4
    assert _pieces(fs, f"{out}/shards") == want
