"""The same job on a real Ray cluster: `ray start --head` on 127.0.0.1 and `ray job submit --working-dir .`.

Only the cluster this test starts is stopped: its processes are found by its own temp folder and killed
by pid (`ray stop` would stop every Ray on the machine).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import webdataset as wds

from tests.pipeline.corpus import make_corpus

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
pytestmark = pytest.mark.slow


def _free_ports(n: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def _cluster_processes(temp_dir: str) -> list[psutil.Process]:
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if temp_dir in " ".join(proc.info["cmdline"] or []):
                found[proc.pid] = proc
                for child in proc.children(recursive=True):
                    found[child.pid] = child
        except psutil.NoSuchProcess:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


@pytest.fixture()
def cluster():
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    gcs, dash, agent_http, agent_grpc, metrics, env_agent, node_mgr, obj_mgr = _free_ports(8)
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    start = subprocess.run(
        [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs), "--num-cpus", "1",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--dashboard-agent-listen-port",
         str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc), "--metrics-export-port", str(metrics),
         "--runtime-env-agent-port", str(env_agent), "--node-manager-port", str(node_mgr),
         "--object-manager-port", str(obj_mgr), "--temp-dir", temp_dir, "--object-store-memory", str(200 * 1024**2),
         "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
        yield {"dashboard": f"http://127.0.0.1:{dash}", "env": env, "temp_dir": temp_dir}
    finally:
        procs = _cluster_processes(temp_dir)
        for proc in procs:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _gone, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_job_submit(cluster, tmp_path):
    manifest = make_corpus(tmp_path / "corpus", n=2, duration=48.0)
    out = tmp_path / "out"
    env = dict(cluster["env"], RAY_AUTH_MODE="token")
    started = time.time()
    submit = subprocess.run(
        [RAY, "job", "submit", "--address", cluster["dashboard"], "--working-dir", ".", "--",
         sys.executable, "-m", "pipeline", "run", "--set", f"input.manifest={manifest}", "--set", f"output.dir={out}",
         "--set", "asr.enabled=false", "--set", "segment.samples_per_slot=1",
         "--set", "ray.prepare_concurrency=1", "--set", "ray.decode_concurrency=1",
         "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = submit.stdout[-4000:] + submit.stderr[-2000:]
    assert submit.returncode == 0, log
    assert "succeeded" in log.lower(), log
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["written"], summary["samples"], summary["failed"]) == (2, 4, 0)
    samples = list(wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("*.tar")), shardshuffle=False))
    assert len(samples) == 4 and all("015.jpg" in s for s in samples)
    assert time.time() - started < 600
