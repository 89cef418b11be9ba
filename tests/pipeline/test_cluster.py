"""The data job on a real two-node Ray cluster on this machine (tests/ray_cluster.py: two raylets, each its own
`ray start`), submitted with `ray job submit`, writing to S3 (moto): pieces written on both nodes, byte-identical
to a local run, the job's Ray metrics on the nodes' Prometheus endpoints; then the worker node is killed
(SIGKILL of its whole process group) mid-job and the job still ends with the same shards."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from pipeline.run import main
from tests.pipeline.corpus import make_corpus
from tests.ray_cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.slow]
N_VIDEOS = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("cluster-corpus"), n=N_VIDEOS, duration=48.0)


def _args(manifest, out, state) -> list[str]:
    sets = [f"input.manifest={manifest}", f"output.dir={out}", f"output.state_dir={state}", "shards.input_rows=1",
            "asr.enabled=false", "segment.samples_per_slot=1", "ray.prepare_concurrency=2",
            "ray.decode_concurrency=3"]
    return [a for s in sets for a in ("--set", s)] + ["--no-progress"]


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("cluster-reference")
    assert main(_args(corpus, out, out) + ["--no-ray"]) == 0
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}


def _submit(cluster, manifest, out, state, **popen) -> subprocess.Popen:
    cmd = [RAY, "job", "submit", "--address", cluster.dashboard_url, "--working-dir", ".", "--", sys.executable, "-m", "pipeline", "run",
           *_args(manifest, out, state)]
    return subprocess.Popen(cmd, cwd=ROOT, env=cluster.client_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def _tars(fs, url) -> dict[str, bytes]:
    fs.invalidate_cache()
    prefix = url[len("s3://"):]
    return {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in sorted(fs.find(prefix)) if p.endswith(".tar")}


def _scrape(ports: list[int], name: str, timeout: float = 90.0) -> float:
    """Sum of a metric over every node's Prometheus endpoint (Ray exports metrics every few seconds)."""
    deadline, total = time.time() + timeout, 0.0
    while time.time() < deadline:
        total = 0.0
        for port in ports:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            except OSError:
                continue
            total += sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                         if line.startswith(name + "{") or line.startswith(name + " "))
        if total:
            return total
        time.sleep(3)
    return total


def test_two_nodes_job_submit_metrics_and_node_kill(s3_server, corpus, reference, tmp_path):
    fs = s3_server.fs()
    bucket = s3_server.new_bucket("cluster")
    with LocalCluster(tmp_path / "c", num_workers=1, cpus_per_node=2, env=s3_server.env) as cluster:
        # 1. A submitted job: pieces written on both nodes, the same bytes as a local run.
        out = f"{bucket}/run1"
        job = _submit(cluster, corpus, out, tmp_path / "state1")
        log = job.communicate(timeout=900)[0]
        assert job.returncode == 0 and "succeeded" in log.lower(), log[-4000:]
        summary = json.loads(fs.cat_file(f"{out[5:]}/summary.json"))
        assert (summary["written"], summary["failed"]) == (N_VIDEOS, 0)
        assert set(summary["this_run"]["pieces_by_node"]) == set(cluster.node_ids()), summary["this_run"]
        assert _tars(fs, f"{out}/shards") == reference

        # The job's metrics, on the nodes' Prometheus endpoints (Ray prefixes them with ray_).
        assert _scrape(cluster.metrics_ports, "ray_tvts_pipeline_videos_total") >= N_VIDEOS
        assert _scrape(cluster.metrics_ports, "ray_tvts_pipeline_bytes_written_total") > 0

        # 2. The worker node dies (SIGKILL of its raylet's process group) while it runs a stage task.
        out = f"{bucket}/run2"
        job = _submit(cluster, corpus, out, tmp_path / "state2")
        deadline = time.time() + 600
        busy = False
        while time.time() < deadline and job.poll() is None and not busy:
            for pid in cluster.pids(1):
                try:
                    busy = busy or "MapBatches" in " ".join(psutil.Process(pid).cmdline())
                except psutil.NoSuchProcess:
                    continue
            time.sleep(0.2)
        assert busy, "the worker node never ran a stage task"
        cluster.kill_worker(0)
        log = job.communicate(timeout=900)[0]
        if job.returncode != 0:   # should the job itself break, the rerun (on the head alone) finishes it
            rerun = _submit(cluster, corpus, out, tmp_path / "state2")
            log = rerun.communicate(timeout=900)[0]
            assert rerun.returncode == 0, log[-4000:]
        summary = json.loads(fs.cat_file(f"{out[5:]}/summary.json"))
        assert (summary["written"], summary["failed"]) == (N_VIDEOS, 0), summary
        assert _tars(fs, f"{out}/shards") == reference
        killed_job_ok = job.returncode == 0
    print(f"node kill: the job {'completed' if killed_job_ok else 'broke and the rerun completed it'}")
