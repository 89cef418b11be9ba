"""CPU utilisation of a process tree over a timed window, for bench/pipeline.py.

    with TreeCpu(cores=2) as usage:
        ...                      # the job, or a baseline (threads, subprocesses, a process pool)
    usage.result()               # {"cpu_s", "wall_s", "util", "by_role", "machine_util", "load_1min", ...}

What is counted: this process and every process below it. In a local Ray that is the whole job: the driver
starts gcs_server and the raylet, the raylet starts the workers and Ray's agents, a worker starts its
ffmpeg children. A baseline's ffmpeg commands and pool processes are children of this process.
`util` = CPU seconds of the tree / (wall seconds x `cores`): 100% means every core was busy with this
work for the whole window.

Why not /proc/stat (system-wide busy time): the machine is shared (a demo job, other engineers' tests),
so system-wide busy time counts their work too. It is still measured (`machine_util`) and printed beside
the tree's: a job at 60% on a machine at 100% lost its cores to others, not to its own idling; a job at
60% on a machine at 60% left them idle.

How: a thread reads psutil every `interval` seconds over the tree: per process its own user + system time
(all threads) and its reaped children's (children_user/children_system). A process that ends keeps its last
sample (at most `interval` seconds of its CPU are lost). Its parent's children counters may then grow by its
whole lifetime, or not: the kernel adds a child's times there only when the parent waits for it (Python's
subprocess does; the raylet does not, measured: its workers' CPU never showed up there). So a process's
children counters count only for what exceeds the lifetimes (at their last sample) of its children that
were seen and have ended: nothing twice either way, and children too short-lived to be sampled (a
baseline's ffmpeg commands) still count when their parent waits for them.
`stage_processes`: per Ray Data stage, how many processes ran its task or held its actor, on average over
the samples (from the process titles Ray sets): 2 decode tasks at a time on 2 cores shows as 2.0;
`stage_cpu_s`: the CPU seconds those processes used meanwhile (by the title at the end of each interval).
`by_role` splits the seconds by what the process is: the driver (this process), stage workers (Ray
worker processes that ran a Ray Data stage or wait for one: `ray::MapBatches(...)`, `ray::MapWorker(...)`,
`ray::IDLE`), Ray's own services (gcs_server, raylet, dashboard and runtime-env agents, log monitor,
Ray Data's bookkeeping actors) and other children (ffmpeg, pool processes).
"""
from __future__ import annotations

import os
import threading
import time

import psutil

STAGE_MARKS = ("MapBatches", "MapWorker")


def role_of(proc: psutil.Process, root_pid: int) -> tuple[str | None, str | None]:
    """(role, Ray Data stage title) of the process by its command line. Role None: a Ray worker that runs
    nothing now (`ray::IDLE`: it keeps the role of what it ran last, else counts as a stage worker). The
    title (`MapBatches(segment)->...`, what a worker runs now: Ray sets it as the process title) says
    which stage's task or actor is in the process."""
    if proc.pid == root_pid:
        return "driver", None
    try:
        line = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        line = ""
    if not line:   # ending (a zombie has no command line): keep what it was
        return None, None
    if line.startswith("ray::IDLE"):
        return None, None
    if any(mark in line for mark in STAGE_MARKS):
        return "stage workers", line.split()[0].removeprefix("ray::")
    if line.startswith("ray::") or "/ray/" in line or "gcs_server" in line or "raylet" in line:
        return "ray services", None
    return "other", None


def machine_times() -> tuple[float, float]:
    """(busy, total) jiffies of all cores from /proc/stat (busy: everything but idle and iowait)."""
    with open("/proc/stat") as handle:
        fields = [float(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    total = sum(fields[:8])  # guest time is already inside user/nice
    return total - idle, total


class TreeCpu:
    def __init__(self, cores: int, interval: float = 0.2, root: int | None = None):
        self.cores, self.interval = cores, interval
        self.root = psutil.Process(root or os.getpid())
        self.procs: dict[tuple[int, float], dict] = {}   # (pid, create_time) -> ppid, base, last, role;
        # base and last: (own, reaped children) CPU seconds
        self.ended_by_role: dict[str, float] = {}         # CPU seconds of processes that are gone
        self.loads: list[float] = []
        self.samples = 0
        self.titles: dict[str, int] = {}                  # stage title -> processes showing it, summed over samples
        self.stage_cpu: dict[str, float] = {}             # stage title -> CPU seconds of those processes
        self.stage_workers: dict[tuple[int, float], bool] = {}   # processes that ran a stage -> started since
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _sample(self, first: bool = False) -> None:
        seen: dict[tuple[int, float], dict] = {}
        titles: dict[str, int] = {}
        for proc in self._tree():
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    t = proc.cpu_times()
                    ppid = proc.ppid()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            now = (t.user + t.system, t.children_user + t.children_system)   # (own, reaped children)
            known = self.procs.get(key)
            if known is None:
                known = {"ppid": ppid, "base": now if first else (0.0, 0.0), "last": now, "role": "stage workers",
                         "ended_kids": 0.0,   # lifetimes of its children that were seen and have ended
                         "new": not first}
            role, title = role_of(proc, self.root.pid)
            if title and key not in self.stage_workers:   # a process that ran a stage: started in the window?
                self.stage_workers[key] = known["new"]
            if title:   # the CPU it used since the last sample counts for the stage it runs now
                titles[title] = titles.get(title, 0) + 1
                self.stage_cpu[title] = self.stage_cpu.get(title, 0.0) + max(0.0, now[0] - known["last"][0])
            known["last"] = tuple(max(a, b) for a, b in zip(known["last"], now))
            known["role"] = role or known["role"]
            seen[key] = known
        with self._lock:
            by_pid = {pid: p for (pid, _), p in seen.items()}
            for key, gone in self.procs.items():
                if key in seen:
                    continue
                self._credit(self.ended_by_role, gone)
                if gone["ppid"] in by_pid:
                    by_pid[gone["ppid"]]["ended_kids"] += sum(gone["last"])
            self.procs = seen
        self.loads.append(os.getloadavg()[0])
        self.samples += 1
        for title, count in titles.items():
            self.titles[title] = self.titles.get(title, 0) + count

    @staticmethod
    def _credit(roles: dict[str, float], p: dict) -> None:
        """Add process `p`'s CPU seconds in the window to `roles`: its own by its role, its children
        counters' excess (see the module docstring) by its role too (a stage worker's ffmpeg), except for
        the driver's (a baseline's ffmpeg commands and pool processes are not the driver's work)."""
        own = p["last"][0] - p["base"][0]
        kids = max(0.0, p["last"][1] - p["base"][1] - p["ended_kids"])
        roles[p["role"]] = roles.get(p["role"], 0.0) + own
        kid_role = "other" if p["role"] == "driver" else p["role"]
        roles[kid_role] = roles.get(kid_role, 0.0) + kids

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeCpu:
        self._machine0 = machine_times()
        self._sample(first=True)
        self.started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="tree-cpu", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.started
        self._stop.set()
        self._thread.join()
        self._sample()
        self._machine1 = machine_times()

    def result(self) -> dict:
        roles = dict(self.ended_by_role)
        for p in self.procs.values():
            self._credit(roles, p)
        cpu = sum(roles.values())
        busy = self._machine1[0] - self._machine0[0]
        total = self._machine1[1] - self._machine0[1]
        return {"cpu_s": round(cpu, 2), "wall_s": round(self.wall, 2), "cores": self.cores,
                "util": round(cpu / (self.wall * self.cores), 3),
                "by_role": {k: round(v, 2) for k, v in sorted(roles.items()) if abs(v) >= 0.005},
                "machine_util": round(busy / total, 3) if total else None,
                # how many processes ran each stage's task (or held its actor), on average over the window
                "stage_processes": {t: round(n / self.samples, 2) for t, n in sorted(self.titles.items())},
                "stage_cpu_s": {t: round(c, 1) for t, c in sorted(self.stage_cpu.items())},
                # Ray worker processes that ran a stage; how many of them started during the window (each
                # imports the stage's code and libraries again: Ray stops idle workers beyond its CPU count)
                "stage_workers": len(self.stage_workers), "stage_workers_started": sum(self.stage_workers.values()),
                "load_1min_mean": round(sum(self.loads) / len(self.loads), 2),
                "load_1min_max": round(max(self.loads), 2)}


def describe(usage: dict) -> str:
    """One line: tree utilisation, its split, the machine's, the load average; stage processes."""
    parts = ", ".join(f"{role} {s:.1f} s" for role, s in usage["by_role"].items())
    stages = "; ".join(f"{title} {n} ({usage['stage_cpu_s'].get(title, 0.0)} CPU s)"
                       for title, n in usage["stage_processes"].items())
    return (f"CPU {usage['cpu_s']:.1f} s in {usage['wall_s']:.1f} s = {usage['util']:.0%} of {usage['cores']} cores "
            f"({parts}); machine {usage['machine_util']:.0%} busy, load avg (1 min) mean "
            f"{usage['load_1min_mean']}, max {usage['load_1min_max']}"
            + (f"\n    processes per stage, on average (their CPU): {stages}; {usage['stage_workers']} worker processes "
               f"ran stages, {usage['stage_workers_started']} of them started in this window" if stages else ""))
