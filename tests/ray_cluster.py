"""A real multi-node Ray cluster on this machine for tests: a head node and N worker nodes, each its own
raylet started with `ray start --block` in its own process group, everything on 127.0.0.1.

    from tests.ray_cluster import LocalCluster

    with LocalCluster(tmp_path, num_workers=1, cpus_per_node=1, env=s3_server.env) as cluster:
        cluster.address          # "127.0.0.1:PORT": the GCS, for ray.init(address=...) / RAY_ADDRESS / --address
        cluster.dashboard_url    # "http://127.0.0.1:PORT": for `ray job submit --address` (dashboard=True)
        cluster.metrics_ports    # [head, worker 0, ...]: each node's Prometheus export port (metrics=False:
                                 #   [], and Ray picks the ports itself)
        cluster.node_ids()       # [head, worker 0, ...]: NodeID hex, as ray.get_runtime_context().get_node_id()
        cluster.client_env()     # os.environ + env + what a driver on this machine needs to join (below)
        cluster.pids()           # every live process of the cluster, by pid (for leak checks); pids(1): worker 0
        cluster.kill_worker(0)   # SIGKILL worker 0's whole process group; returns once the head marks it dead
    # leaving the block (or stop()) kills every process it started and removes its temp folders

API: `LocalCluster(tmp_path, num_workers=1, cpus_per_node=1, env=None, dashboard=True, metrics=True,
object_store_mb=512)`; `start() -> self` (returns once every node is ALIVE in the GCS), `node_ids()`,
`kill_worker(i=0)`, `stop()` (idempotent; raises if a process survives), `pids(node=None)`, `client_env()`, and the
context manager (`__enter__` starts). `start()` raises ClusterError with the tail of the failing node's log.

How it is set up, and why:
- Every node gets its own `--temp-dir` and its own ports: GCS, dashboard and Ray client server (head);
  node manager, object manager, metrics export, dashboard agent http/grpc and runtime-env agent (every
  node); and a worker port range of its own, taken from 20000-32767 (below the kernel's ephemeral range,
  so ports picked by bind(0) never fall inside it). Ray's unix sockets must stay under 107 characters,
  so when `tmp_path` is long (pytest's are) the temp dirs live in a short `mkdtemp(prefix="rc")` folder
  under /tmp, removed by stop(); each node's `ray start` output and, at stop(), its Ray logs are kept in
  `tmp_path/ray-node<i>.log` and `tmp_path/ray-logs/n<i>/`.
- Loopback only. Ray 2.60 keeps a node on 127.0.0.1 only with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0:
  with 1 (its Linux default) `--node-ip-address 127.0.0.1` and the `--address` are rewritten to the
  machine's external address and the GCS/raylets listen on every interface. But with 0, `ray start
  --address` refuses to join ("multi-node clusters are not supported on Windows and OSX"). So worker
  nodes run Ray's own `ray start` command (`ray.scripts.scripts.main`) through a three-line shim that
  lifts only that one check; every address stays 127.0.0.1. The head runs `.venv/bin/ray start --head`.
  A driver that joins must also have RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (tests/conftest.py and
  scripts/env.sh set it; client_env() includes it), else Ray rewrites 127.0.0.1 in the address too.
- Authentication: the nodes run with RAY_AUTH_MODE=disabled unless `env` sets RAY_AUTH_MODE. A driver
  that joins with an explicit address, as `prepare_ray(address)` leaves it (it sets nothing when
  joining), connects without a token when RAY_AUTH_MODE is unset, and with the token mode that an
  earlier in-process `prepare_ray(None)` may have set it still connects (Ray 2.60 accepts a token it
  does not check); `ray job submit` works both ways too. A token cluster (env={"RAY_AUTH_MODE": "token"})
  would need every client to carry the same token (~/.ray/auth_token or RAY_AUTH_TOKEN); loopback test
  clusters need neither.
- Node environment: os.environ + `env` (e.g. the moto server's AWS_* so tasks reach S3), minus
  RAY_ADDRESS, plus RAY_USAGE_STATS_ENABLED=0 and, on the head unless `env` says otherwise,
  RAY_health_check_period_ms=1000 so that a killed node is declared dead in about 5 s instead of 15 s
  (a check of a killed raylet fails at once; one of a busy raylet still gets Ray's 10 s timeout).
- Liveness and node ids come from the GCS node table (what ray.nodes() shows), read in a subprocess
  through Ray's GcsClient: no driver joins the cluster and the test process never imports Ray.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["LocalCluster", "ClusterError"]

PY = sys.executable
RAY = str(Path(sys.executable).parent / "ray")
WORKER_PORTS = 100                       # worker port range per node (one per worker process and driver)
PORT_RANGE = (20000, 32700)              # worker ranges come from here: under the ephemeral 32768-60999
START_TIMEOUT_S = 180                    # per node, on a busy 2-core machine
DEAD_TIMEOUT_S = 90

# `ray start` for a worker node with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (loopback): the command sees a
# copy of ray_constants in which multi-node clusters are allowed; services.py, which resolves addresses,
# keeps the real one (so 127.0.0.1 stays 127.0.0.1).
JOIN_SHIM = """
import sys, types
from ray._private import ray_constants
from ray.scripts import scripts
view = types.ModuleType(ray_constants.__name__); view.__dict__.update(vars(ray_constants))
view.ENABLE_RAY_CLUSTER = True
scripts.ray_constants = view
sys.argv[0] = "ray"
sys.exit(scripts.main())
"""

# Prints {node_manager_port: [node_id_hex, "ALIVE"|"DEAD"]} once every wanted port has the wanted state;
# exits 4 as soon as one of the watched `ray start` processes is gone (its log says why).
POLL = """
import json, os, sys, time
from ray._raylet import GcsClient
from ray.core.generated.gcs_pb2 import GcsNodeInfo
address, want, timeout, watch = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False
deadline, seen, client, error = time.time() + timeout, {}, None, ""
while time.time() < deadline:
    if not all(running(pid) for pid in watch):
        print(json.dumps(seen)); sys.exit(4)
    try:
        client = client or GcsClient(address=address)
        info = client.get_all_node_info(timeout=10)
        seen = {str(n.node_manager_port): [n.node_id.hex(), GcsNodeInfo.GcsNodeState.Name(n.state)]
                for n in info.values()}
        if all(seen.get(port, [None, None])[1] == state for port, state in want.items()):
            print(json.dumps(seen)); sys.exit(0)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    time.sleep(0.5)
print(json.dumps(seen)); print(error, file=sys.stderr); sys.exit(3)
"""


class ClusterError(RuntimeError):
    """The cluster did not come up, a node did not die, or a process survived stop(); one line + log tail."""


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


def _free_range(taken: set[int], size: int) -> tuple[int, int]:
    """A block of `size` ports none of which is bound now (a random offset, so parallel sessions differ)."""
    for _ in range(200):
        lo = random.randrange(PORT_RANGE[0], PORT_RANGE[1] - size)
        block = range(lo, lo + size)
        if taken.intersection(block):
            continue
        try:
            for port in block:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        taken.update(block)
        return lo, lo + size - 1
    raise ClusterError(f"no free block of {size} ports in {PORT_RANGE}: too many clusters on this machine?")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


class _Node:
    def __init__(self, index: int, head: bool, temp_dir: Path, log: Path, ports: dict[str, int],
                 worker_range: tuple[int, int]):
        self.index, self.head, self.temp_dir, self.log = index, head, temp_dir, log
        self.ports, self.worker_range = ports, worker_range
        self.proc: subprocess.Popen | None = None
        self.node_id: str | None = None


class LocalCluster:
    """A head node and `num_workers` worker nodes on 127.0.0.1; see the module docstring."""

    def __init__(self, tmp_path, num_workers: int = 1, cpus_per_node: int = 1, env: dict | None = None,
                 dashboard: bool = True, metrics: bool = True, object_store_mb: int = 512):
        self.tmp_path = Path(tmp_path)
        self.num_workers, self.cpus_per_node = num_workers, cpus_per_node
        self.env = {k: str(v) for k, v in (env or {}).items()}
        self.dashboard, self.metrics, self.object_store_mb = dashboard, metrics, object_store_mb
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        # the longest socket path Ray makes is about 70 characters below --temp-dir
        if len(str(self.tmp_path / "rc" / "n0")) <= 36:
            self._root, self._own_root = self.tmp_path / "rc", False
            self._root.mkdir(exist_ok=True)
        else:
            self._root, self._own_root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp")), True
        taken: set[int] = set()
        self._head_ports = {"port": _free_port(taken), "ray-client-server-port": _free_port(taken)}
        if dashboard:
            self._head_ports["dashboard-port"] = _free_port(taken)
        self.nodes: list[_Node] = []
        for i in range(num_workers + 1):
            ports = {name: _free_port(taken) for name in (
                "node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port", "runtime-env-agent-port")}
            self.nodes.append(_Node(i, i == 0, self._root / f"n{i}", self.tmp_path / f"ray-node{i}.log", ports,
                                    _free_range(taken, WORKER_PORTS)))
        self.address = f"127.0.0.1:{self._head_ports['port']}"
        self.dashboard_url = f"http://127.0.0.1:{self._head_ports['dashboard-port']}" if dashboard else ""
        self.metrics_ports = [n.ports["metrics-export-port"] for n in self.nodes] if metrics else []
        self._stopped = False

    # -- environment -------------------------------------------------------------------------------------

    def _node_env(self, head: bool) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
        if head:
            env["RAY_health_check_period_ms"] = "1000"
        env.update(self.env)
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"       # loopback only (see the module docstring)
        return env

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment for a driver process (ray.init(address=...), `ray job submit`, python -m ...)."""
        env = dict(os.environ)
        env.update(self.env)
        env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
        env.update(extra)
        return env

    # -- starting ----------------------------------------------------------------------------------------

    def _command(self, node: _Node) -> list[str]:
        args = ["start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(self.cpus_per_node),
                "--temp-dir", str(node.temp_dir), "--disable-usage-stats",
                "--object-store-memory", str(self.object_store_mb * 1024 * 1024),
                "--min-worker-port", str(node.worker_range[0]), "--max-worker-port", str(node.worker_range[1])]
        for name, port in node.ports.items():
            if name != "metrics-export-port" or self.metrics:
                args += [f"--{name}", str(port)]
        if node.head:
            args += ["--head"] + [a for name, port in self._head_ports.items() for a in (f"--{name}", str(port))]
            args += ["--include-dashboard", "true" if self.dashboard else "false"]
            if self.dashboard:
                args += ["--dashboard-host", "127.0.0.1"]
            return [RAY, *args]
        return [PY, "-c", JOIN_SHIM, *args, "--address", self.address]

    def _launch(self, node: _Node) -> None:
        node.temp_dir.mkdir(parents=True, exist_ok=True)
        with open(node.log, "ab") as log:
            # own session = own process group: kill_worker/stop kill the whole group (raylet, agents, workers)
            node.proc = subprocess.Popen(self._command(node), env=self._node_env(node.head), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def _poll(self, want: dict[int, str], timeout: float, what: str,
              watch: list[_Node] = ()) -> dict[int, tuple[str, str]]:
        cmd = [PY, "-c", POLL, self.address, json.dumps({str(k): v for k, v in want.items()}), str(timeout),
               json.dumps([n.proc.pid for n in watch])]
        try:
            res = subprocess.run(cmd, env=self.client_env(), capture_output=True, text=True, timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{what}: reading the node table of {self.address} hung") from None
        lines = res.stdout.strip().splitlines()
        seen = {int(k): tuple(v) for k, v in json.loads(lines[-1]).items()} if lines else {}
        if res.returncode == 4:
            self._check_running(watch)
        if res.returncode != 0:
            nodes = [n for n in self.nodes if n.ports["node-manager-port"] in want]
            logs = "\n".join(f"--- {n.log}:\n{_tail(n.log)}" for n in nodes)
            last = (res.stderr.strip().splitlines() or [""])[-1]
            raise ClusterError(f"{what}: not reached within {timeout:.0f}s (node table: {seen}; {last})\n{logs}")
        return seen

    def start(self) -> "LocalCluster":
        try:
            self._launch(self.nodes[0])
            head_port = self.nodes[0].ports["node-manager-port"]
            self._poll({head_port: "ALIVE"}, START_TIMEOUT_S, "head node ALIVE", watch=self.nodes[:1])
            for node in self.nodes[1:]:
                self._launch(node)
            want = {n.ports["node-manager-port"]: "ALIVE" for n in self.nodes}
            seen = self._poll(want, START_TIMEOUT_S, f"{len(self.nodes)} nodes ALIVE", watch=self.nodes)
            for node in self.nodes:
                node.node_id = seen[node.ports["node-manager-port"]][0]
            self._check_running(self.nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def _check_running(self, nodes: list[_Node]) -> None:
        for node in nodes:
            code = node.proc.poll() if node.proc else None
            if code is not None:
                raise ClusterError(f"node {node.index} (`ray start`) exited with {code}:\n{_tail(node.log)}")

    # -- queries -----------------------------------------------------------------------------------------

    def node_ids(self) -> list[str]:
        if any(n.node_id is None for n in self.nodes):
            raise ClusterError("node_ids(): the cluster is not started (call start() or use `with`)")
        return [n.node_id for n in self.nodes]

    def _group_pids(self, node: _Node) -> set[int]:
        """The live processes of a node: its process group plus anything descended from it."""
        import psutil

        if node.proc is None:
            return set()
        found: set[int] = set()
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(proc.pid) == node.proc.pid and proc.status() != psutil.STATUS_ZOMBIE:
                    found.add(proc.pid)
            except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
                continue
        try:
            root = psutil.Process(node.proc.pid)
            if root.status() != psutil.STATUS_ZOMBIE:
                found.add(root.pid)
            found.update(p.pid for p in root.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            pass
        return found

    def pids(self, node: int | None = None) -> set[int]:
        """Live pids of the whole cluster, or of one node (its index in node_ids(): 0 = head, 1 = worker 0)."""
        nodes = self.nodes if node is None else [self.nodes[node]]
        return set().union(*(self._group_pids(n) for n in nodes))

    # -- killing -----------------------------------------------------------------------------------------

    def _kill(self, node: _Node) -> set[int]:
        """SIGKILL the node's process group and every process descended from it; returns their pids."""
        pids = self._group_pids(node)
        if node.proc is not None:
            try:
                os.killpg(node.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in pids:                     # descendants that left the group, if any
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if node.proc is not None:
            try:
                node.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        return pids

    @staticmethod
    def _wait_gone(pids: set[int], timeout: float = 30) -> set[int]:
        import psutil

        deadline, alive = time.time() + timeout, set(pids)
        while alive and time.time() < deadline:
            for pid in list(alive):
                try:
                    if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                        alive.discard(pid)
                except psutil.NoSuchProcess:
                    alive.discard(pid)
            if alive:
                time.sleep(0.2)
        return alive

    def kill_worker(self, i: int = 0) -> None:
        if not 0 <= i < self.num_workers:
            raise ClusterError(f"kill_worker({i}): the cluster has {self.num_workers} worker node(s)")
        node = self.nodes[i + 1]
        left = self._wait_gone(self._kill(node))
        if left:
            raise ClusterError(f"kill_worker({i}): processes {sorted(left)} survived SIGKILL")
        self._poll({node.ports["node-manager-port"]: "DEAD"}, DEAD_TIMEOUT_S, f"worker node {i} DEAD")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        killed: set[int] = set()
        for node in reversed(self.nodes):    # workers first: the head outlives them, no reconnect attempts
            killed |= self._kill(node)
        left = self._wait_gone(killed)
        self._keep_logs()
        if self._own_root:
            shutil.rmtree(self._root, ignore_errors=True)
        if left:
            raise ClusterError(f"stop(): processes {sorted(left)} of the cluster survived SIGKILL")

    def _keep_logs(self) -> None:
        """Copy each node's Ray logs next to its `ray start` output (the temp dirs are removed)."""
        for node in self.nodes:
            logs = node.temp_dir / "session_latest" / "logs"
            if logs.is_dir():
                shutil.copytree(logs, self.tmp_path / "ray-logs" / f"n{node.index}", dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("*.sock", "events"), symlinks=False,
                                ignore_dangling_symlinks=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:               # a test that forgot stop() must not leak a cluster
        try:
            if not self._stopped and any(n.proc is not None for n in self.nodes):
                self.stop()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
