"""infra/slurm/*.sbatch: every `#SBATCH` option through sbatch itself, the commands the scripts run, and the
scripts run for real on this machine (one node, one CPU rank).

sbatch (Debian `slurm-client`) parses and checks all options of a script (names and values, e.g. --time)
before it contacts the controller. The test points it at a throw-away slurm.conf whose controller is
127.0.0.1 on a port nothing listens on, so a script whose options parse ends with "Unable to contact slurm
controller" and one with a bad option with "unrecognized option" / "Invalid ...". Without sbatch those
tests skip, and `DOCUMENTED_OPTIONS` (sbatch 22.05.8's own --help/--usage list) still checks the names.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.infra.launch import (
    INFRA,
    ROOT,
    ClusterStandIn,
    job_arguments,
    local_overrides,
    printed_commands,
    rayjob,
    run,
    split_entrypoint,
    stage_of,
    tail,
)

SCRIPTS = sorted((INFRA / "slurm").glob("*.sbatch"))
# The long options that sbatch of slurm-wlm 22.05.8 (Debian 12 `slurm-client`) lists in `sbatch --help` and
# `sbatch --usage` (it accepts a few more that it does not list, e.g. --test-only).
DOCUMENTED_OPTIONS = set("""
account array bb bbf begin chdir cluster-constraint clusters comment constraint container contiguous core-spec
cores-per-socket cpu-freq cpus-per-gpu cpus-per-task deadline delay-boot dependency distribution error exclude
exclusive export export-file extra-node-info get-user-env gid gpu-bind gpu-freq gpus gpus-per-node
gpus-per-socket gpus-per-task gres gres-flags help hold ignore-pbs input job-name licenses mail-type mail-user
mcs-label mem mem-bind mem-per-cpu mem-per-gpu mincpus network nice no-kill no-requeue nodefile nodelist nodes
ntasks ntasks-per-core ntasks-per-node ntasks-per-socket output overcommit oversubscribe parsable partition power
priority profile propagate qos quiet reboot requeue reservation signal sockets-per-node spread-job switches
thread-spec threads-per-core time time-min tmp uid usage use-min-nodes verbose version wait wckey wrap
""".split())
SBATCH = shutil.which("sbatch")
needs_sbatch = pytest.mark.skipif(SBATCH is None, reason="sbatch is not installed (apt-get install slurm-client)")


def sbatch_options(script: Path) -> list[str]:
    """The option names of the script's #SBATCH lines (before its first command, as sbatch reads them)."""
    names = []
    for line in script.read_text().splitlines():
        if line.startswith("#SBATCH"):
            option = line.split()[1]
            assert option.startswith("--"), f"{script.name}: use long options in #SBATCH lines: {line}"
            names.append(option[2:].split("=", 1)[0])
        elif line.strip() and not line.startswith("#"):
            break
    return names


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory) -> Path:
    """A slurm.conf for the client tools only: its controller (127.0.0.1, a closed port) is never there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = tmp_path_factory.mktemp("slurm") / "slurm.conf"
    conf.write_text(f"ClusterName=tvts-test\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort={port}\n"
                    "AuthType=auth/none\nCredType=cred/none\nGresTypes=gpu\nMessageTimeout=2\nTCPTimeout=2\n"
                    "NodeName=localhost CPUs=2 Gres=gpu:8 State=UNKNOWN\nPartitionName=debug Nodes=localhost Default=YES\n")
    return conf


def sbatch_test_only(script: Path, conf: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env["SLURM_CONF"] = str(conf)            # never the DNS lookup sbatch makes without a config
    return subprocess.run([SBATCH, "--test-only", str(script)], env=env, capture_output=True, text=True, timeout=60)


def test_there_are_scripts_for_the_data_jobs_and_training():
    assert {s.name for s in SCRIPTS} == {"pipeline.sbatch", "pretrain.sbatch"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_sbatch_options_are_documented_ones(script: Path):
    names = sbatch_options(script)
    assert "nodes" in names and "time" in names
    unknown = [n for n in names if n not in DOCUMENTED_OPTIONS]
    assert not unknown, f"{script.name}: not sbatch options: {unknown}"


@needs_sbatch
def test_documented_options_are_the_installed_sbatch_ones(slurm_conf: Path):
    env = dict(os.environ, SLURM_CONF=str(slurm_conf))
    text = "".join(subprocess.run([SBATCH, flag], env=env, capture_output=True, text=True, timeout=30).stdout
                   for flag in ("--help", "--usage"))
    listed = set(re.findall(r"--([a-z][a-z0-9-]*)", text))
    assert DOCUMENTED_OPTIONS <= listed, f"no longer listed by this sbatch: {sorted(DOCUMENTED_OPTIONS - listed)}"


@needs_sbatch
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_sbatch_accepts_every_option_of_the_script(script: Path, slurm_conf: Path):
    result = sbatch_test_only(script, slurm_conf)
    out = result.stdout + result.stderr
    assert "Unable to contact slurm controller" in out, out   # parsed and checked: only the controller is missing
    assert "unrecognized" not in out and "Invalid" not in out and "invalid" not in out, out


@needs_sbatch
@pytest.mark.parametrize("old,new,expected", [
    ("#SBATCH --nodes=", "#SBATCH --nodez=", "unrecognized option '--nodez"),
    ("#SBATCH --time=12:00:00", "#SBATCH --time=12h", "Invalid --time specification"),
])
def test_sbatch_rejects_a_bad_option(tmp_path: Path, slurm_conf: Path, old: str, new: str, expected: str):
    text = (INFRA / "slurm" / "pipeline.sbatch").read_text()
    assert old in text
    bad = tmp_path / "bad.sbatch"
    bad.write_text(text.replace(old, new))
    result = sbatch_test_only(bad, slurm_conf)
    assert result.returncode != 0 and expected in result.stderr, result.stderr


def test_scripts_run_the_rayjob_commands():
    """With the cluster defaults (PRINT_ONLY=1), the scripts run the RayJobs' jobs argument for argument."""
    commands = printed_commands(INFRA / "slurm" / "pipeline.sbatch") + printed_commands(INFRA / "slurm" / "pretrain.sbatch")
    assert sorted(stage_of(c) for c in commands) == ["leakage", "pipeline", "pretrain"]
    for argv in commands:
        stage = stage_of(argv)
        _, entry = split_entrypoint(rayjob(stage)["spec"]["entrypoint"])
        assert job_arguments(argv) == job_arguments(entry), f"{stage}:\n{argv}\n{entry}"


# ---- the scripts, run for real ----------------------------------------------------------------------------
def slurm_env(tmp_path: Path, slurm_conf: Path, **extra: str) -> dict[str, str]:
    """A one-node allocation's environment, and scontrol: the real one (with the test slurm.conf), or a stand-in
    that only expands a plain comma list (`scontrol show hostnames`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    if shutil.which("scontrol") is None:
        shim = tmp_path / "bin" / "scontrol"
        shim.parent.mkdir(exist_ok=True)
        shim.write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && echo "$3" | tr , "\\n"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
        env["PATH"] = f"{shim.parent}:{env['PATH']}"
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RAY_ADDRESS"):
        env.pop(key, None)
    env.update(SLURM_CONF=str(slurm_conf), SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="localhost", SLURM_JOB_NUM_NODES="1",
               SLURM_CPUS_PER_TASK="2", SLURM_GPUS_ON_NODE="1", SLURM_SUBMIT_DIR=str(ROOT), OMP_NUM_THREADS="1",
               DS_ACCELERATOR="cpu", CUDA_VISIBLE_DEVICES="", RAY_USAGE_STATS_ENABLED="0",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", **extra)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    return env


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def stop_processes_of(marker: str) -> None:
    """Stop only the processes whose command line names `marker` (this test's Ray temp folder), by pid."""
    procs = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or []) and proc.pid != os.getpid():
                procs.append(proc)
        except psutil.NoSuchProcess:
            continue
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.slow
def test_pretrain_sbatch_runs_one_cpu_rank(tmp_path: Path, slurm_conf: Path):
    """The script as sbatch runs it (its cluster defaults: configs/pretrain-yt-temporal.yaml, shards and
    blocklist under $DATA, output.dir under $SHARED), on one node with one CPU rank, DeepSpeed launcher
    (several nodes add the hostfile and ssh, which this machine cannot test)."""
    from training.synthetic import write_synthetic_shards

    data, shared = tmp_path / "s3" / "tvts-data" / "yt-temporal", tmp_path / "shared"
    write_synthetic_shards(data / "pipeline" / "shards", shards=2, samples=8, size=(40, 40), frames=8, seed=3)
    (data / "leakage").mkdir(parents=True)
    (data / "leakage" / "blocklist.txt").write_text("# the leakage job's output\n")
    (master_port,) = free_ports(1)
    env = slurm_env(tmp_path, slurm_conf, DATA=str(data), SHARED=str(shared), LOG_DIR=str(tmp_path / "logs"),
                    MASTER_PORT=str(master_port))
    started = time.time()
    result = run(["bash", str(INFRA / "slurm" / "pretrain.sbatch"), *local_overrides("pretrain")], env, timeout=420)
    assert result.returncode == 0, tail(result.stdout)
    out = shared / "tvts" / "pretrain"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [r["step"] for r in rows] == [1] and (out / "model_fp32.pt").is_file()
    assert "ZeRO stage 1" in result.stdout and not (ROOT / ".deepspeed_env").exists()
    print(f"pretrain.sbatch dry run: {time.time() - started:.0f} s")


@pytest.mark.slow
def test_pipeline_sbatch_starts_ray_and_runs_the_pipeline(tmp_path: Path, slurm_conf: Path, demo_corpus: Path):
    """The script on a one-node allocation: `ray start --head` on 127.0.0.1, then the pipeline command as a
    driver of that cluster (`ray.address=auto`), on the demo config with the cluster paths under tmp_path."""
    local = ClusterStandIn(tmp_path, demo_corpus)
    ray_tmp = f"/tmp/rs{os.getpid()}"                 # short: Ray's socket paths must stay < 108 characters
    port, dash, agent, agent_grpc, metrics, env_agent, node_mgr, obj_mgr = free_ports(8)
    head_args = (f"--dashboard-port={dash} --dashboard-agent-listen-port={agent} --dashboard-agent-grpc-port={agent_grpc} "
                 f"--metrics-export-port={metrics} --runtime-env-agent-port={env_agent} --node-manager-port={node_mgr} "
                 f"--object-manager-port={obj_mgr} --object-store-memory={300 * 1024**2} --include-dashboard=false")
    overrides = local_overrides("pipeline")
    pairs = [overrides[i:i + 2] for i in range(0, len(overrides), 2)]   # ["--set", "key=value"]
    pipeline_args = [word for pair in pairs if not pair[1].startswith("ray.num_cpus") for word in pair]
    env = slurm_env(tmp_path, slurm_conf, DATA=local.local("s3://tvts-data/yt-temporal"), SHARED=str(tmp_path / "shared"),
                    SCRATCH=str(tmp_path / "scratch"), SECRETS=str(tmp_path / "secrets"),
                    PIPELINE_CONFIG=str(local.config), STAGES="pipeline", HEAD_IP="127.0.0.1", RAY_PORT=str(port),
                    RAY_TMP=ray_tmp, RAY_HEAD_ARGS=head_args, PIPELINE_ARGS=" ".join(pipeline_args))
    started = time.time()
    try:
        result = run(["bash", str(INFRA / "slurm" / "pipeline.sbatch")], env, timeout=420)
    finally:
        stop_processes_of(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 0, tail(result.stdout)
    log = tail(result.stdout, 10**7)                                                 # without colour codes
    assert "Local node IP: 127.0.0.1" in log, log[-4000:]                            # loopback only, here
    assert "Started a local Ray instance" not in log, log[-4000:]     # the driver joined the script's cluster
    summary = json.loads(Path(local.local("s3://tvts-data/yt-temporal/pipeline/summary.json")).read_text())
    assert (summary["written"], summary["failed"]) == (2, 0) and summary["samples"] > 0
    print(f"pipeline.sbatch dry run: {time.time() - started:.0f} s")
