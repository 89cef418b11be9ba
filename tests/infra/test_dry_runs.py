"""The KubeRay RayJobs' entrypoints, run for real on this machine, one after the other as the cluster runs
them: the pipeline writes shards where the leakage job reads them, the leakage job writes the blocklist
where training reads it (so a path that does not line up between two manifests fails here).

Each entrypoint is taken from infra/k8s/rayjob-<stage>.yaml as written (`cd /app && python -m ...`), with its
runtimeEnvYAML's env_vars, and run through tests/infra/launch.py's ClusterStandIn: cluster locations mapped
into a temp folder, the demo config instead of the cluster config, small overrides appended (2 videos,
1 training step, the tiny preset), and Ray started locally instead of joining the job's cluster
(`ray.address`, `--address`); test_ray_cluster_yaml.py and test_slurm.py check that the `ray up` and Slurm
launchers run these same commands. The manifest holds demo-000 (leaked into the downstream set) and demo-004
(not): the blocklist must name the first and spare the second, and training runs on what is left.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.infra.launch import ROOT, ClusterStandIn, rayjob, run, split_entrypoint, tail

pytestmark = [pytest.mark.slow, pytest.mark.s3]
JOIN_CLUSTER = {"pipeline": ["--set", "ray.address=null"], "leakage": ["--set", "ray.address="], "pretrain": []}


def run_rayjob(stage: str, local: ClusterStandIn, timeout: float) -> tuple[str, float]:
    spec = rayjob(stage)["spec"]
    cwd, argv = split_entrypoint(spec["entrypoint"])
    assert cwd == "/app"                                   # the image's checkout: here, this one
    if stage == "pretrain":                                # Ray Train launcher flags, sized to this machine
        argv = [a for a in argv if a != "--gpus"]
        for flag, value in (("--workers", "1"), ("--cpus-per-worker", "1")):
            argv[argv.index(flag) + 1] = value
        i = argv.index("--address")
        del argv[i:i + 2]                                  # start a local Ray instead of joining the job's
    cmd = local.argv(argv, stage) + JOIN_CLUSTER[stage]
    env = local.env(yaml.safe_load(spec["runtimeEnvYAML"]).get("env_vars", {}))
    started = time.time()
    result = run(cmd, env, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, f"rayjob-{stage} entrypoint failed:\n{tail(result.stdout)}"
    return result.stdout, time.time() - started


@pytest.fixture(scope="module")
def local(s3_server, tmp_path_factory, demo_corpus: Path) -> ClusterStandIn:
    """s3://tvts-data as a bucket of the local moto S3 server (s3fs, as on the cluster). The same chain with a
    local folder for the bucket (`ClusterStandIn(..., bucket=None)`) also works; CI runs the S3 one only."""
    return ClusterStandIn(tmp_path_factory.mktemp("cluster"), demo_corpus, bucket=s3_server.new_bucket())


@pytest.fixture(scope="module")
def pipeline_run(local: ClusterStandIn) -> str:
    out, seconds = run_rayjob("pipeline", local, timeout=420)
    print(f"rayjob-pipeline dry run: {seconds:.0f} s")
    return "s3://tvts-data/yt-temporal/pipeline"


@pytest.fixture(scope="module")
def leakage_run(local: ClusterStandIn, pipeline_run: str) -> str:
    out, seconds = run_rayjob("leakage", local, timeout=420)
    print(f"rayjob-leakage dry run: {seconds:.0f} s")
    return "s3://tvts-data/yt-temporal/leakage"


def test_pipeline_entrypoint_writes_shards_to_its_output_dir(local: ClusterStandIn, pipeline_run: str):
    summary = json.loads(local.read(f"{pipeline_run}/summary.json"))
    assert (summary["inputs"], summary["written"], summary["failed"]) == (2, 2, 0)
    names = local.listing(f"{pipeline_run}/shards")
    tars = [n for n in names if n.endswith(".tar")]
    assert tars and summary["samples"] > 0 and summary["shards"] == len(tars)
    assert all(t.replace(".tar", "_stats.json") in names for t in tars)


def test_leakage_entrypoint_reads_those_shards_and_blocks_the_leaked_video(local: ClusterStandIn, leakage_run: str):
    report = json.loads(local.read(f"{leakage_run}/report.json"))
    assert any(p["corpus_video_id"] == "demo-000" for p in report)
    blocked = {line.split("#")[0].strip() for line in local.read(f"{leakage_run}/blocklist.txt").splitlines()}
    assert "demo-000" in blocked and "demo-004" not in blocked, blocked
    assert "report.html" in local.listing(leakage_run)


def test_pretrain_entrypoint_trains_on_the_shards_without_the_blocked_video(local: ClusterStandIn, leakage_run: str):
    out, seconds = run_rayjob("pretrain", local, timeout=420)
    print(f"rayjob-pretrain dry run: {seconds:.0f} s")
    train = Path(local.local("/shared/tvts/pretrain"))
    rows = [json.loads(line) for line in (train / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [r["step"] for r in rows] == [1] and (train / "model_fp32.pt").is_file()
    assert "on 1 rank(s)" in out, tail(out)
    assert "blocklisted" in out, tail(out)                # demo-000's samples were skipped, demo-004's trained
