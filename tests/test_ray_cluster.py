"""tests/ray_cluster.py: two raylets on 127.0.0.1, tasks pinned to each, a `ray job submit` job, a node killed
with SIGKILL and seen dead, and nothing left running after stop()."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.ray_cluster import RAY, LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# A driver that joins the cluster: per node id given, a task pinned there reports where it ran; then the
# node table as ray.nodes() shows it.
DRIVER = """
import json, sys
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()

pinned = [ray.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(),
                  timeout=120) for n in sys.argv[2:]]
print(json.dumps({"ran_on": pinned, "alive": {n["NodeID"]: n["Alive"] for n in ray.nodes()}}))
"""


def drive(cluster: LocalCluster, *node_ids: str) -> dict:
    res = subprocess.run([sys.executable, "-c", DRIVER, cluster.address, *node_ids], env=cluster.client_env(),
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def scrape(port: int, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                return resp.read().decode()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(1)


def test_two_nodes_tasks_job_kill_and_stop(tmp_path):
    cluster = LocalCluster(tmp_path, num_workers=1, cpus_per_node=1)
    with cluster:
        ids = cluster.node_ids()
        assert len(ids) == 2 and len(set(ids)) == 2
        seen = drive(cluster, *ids)
        assert seen["ran_on"] == ids                              # each task ran on the node it was pinned to
        assert seen["alive"] == {ids[0]: True, ids[1]: True}
        assert len(set(cluster.metrics_ports)) == 2
        assert all("ray_" in scrape(port) for port in cluster.metrics_ports)

        job = subprocess.run([RAY, "job", "submit", "--address", cluster.dashboard_url, "--",
                              sys.executable, "-c", "print('job ran')"],
                             env=cluster.client_env(), capture_output=True, text=True, timeout=180)
        assert job.returncode == 0 and "job ran" in job.stdout, (job.stdout + job.stderr)[-3000:]
        assert "succeeded" in job.stdout

        everything = cluster.pids()
        worker = cluster.pids(1)
        assert worker and worker < everything
        cluster.kill_worker(0)
        assert not worker & cluster.pids()                        # its whole process group is gone
        assert drive(cluster, ids[0])["alive"] == {ids[0]: True, ids[1]: False}
    assert not cluster.pids()
    import psutil

    alive = [pid for pid in everything if psutil.pid_exists(pid)
             and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes of the cluster left running: {alive}"
    cluster.stop()                                                # idempotent
