"""infra/k8s/*.yaml against the KubeRay v1 / Kubernetes core v1 fields (tests/infra/kuberay_schema.py), the
operator's spec rules, Ray's own lists (`ray start` options, runtime_env fields), and what the jobs accept.
Fast: no cluster, no job runs (the entrypoints run in test_dry_runs.py)."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from tests.infra import kuberay_schema
from tests.infra.launch import INFRA, STAGES, config_and_overrides, rayjob, split_entrypoint, stage_of

MANIFESTS = sorted((INFRA / "k8s").glob("*.yaml"))
IMAGE_REPO = "registry.example.com/tvts"
SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY", "CREDENTIAL")


def docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d]


def cluster_specs(doc: dict) -> list[dict]:
    spec = doc["spec"]
    if doc["kind"] == "RayCluster":
        return [spec]
    return [spec["rayClusterSpec"]] if doc["kind"] == "RayJob" and spec.get("rayClusterSpec") else []


def groups(cluster: dict) -> list[dict]:
    return [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]


def containers(doc: dict) -> list[dict]:
    return [c for cluster in cluster_specs(doc) for g in groups(cluster) for c in g["template"]["spec"]["containers"]]


def test_there_is_a_manifest_per_stage_and_a_raycluster():
    kinds = sorted((name, d["kind"]) for name, d in docs())
    assert ("raycluster.yaml", "RayCluster") in kinds and ("storage.yaml", "PersistentVolumeClaim") in kinds
    for stage in STAGES:
        assert (f"rayjob-{stage}.yaml", "RayJob") in kinds


@pytest.mark.parametrize("name,doc", docs(), ids=[f"{n}:{d['kind']}" for n, d in docs()])
def test_manifest_matches_the_kuberay_v1_and_core_v1_fields(name: str, doc: dict):
    errors = kuberay_schema.check(doc)
    assert not errors, f"{name}:\n" + "\n".join(errors)


@pytest.mark.parametrize("mutate,expected", [
    (lambda d: d["spec"].__setitem__("shutdownAfterJobFinish", True), "'shutdownAfterJobFinish' was unexpected"),
    (lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].__setitem__("maxReplica", 3), "'maxReplica'"),
    (lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
     .__setitem__("volumeMount", []), "'volumeMount' was unexpected"),
    (lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"][0]
     ["valueFrom"]["secretKeyRef"].__setitem__("keyy", "x"), "'keyy' was unexpected"),
    (lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
     .__setitem__("nodeSelecter", {}), "'nodeSelecter' was unexpected"),
    (lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
     ["limits"].__setitem__("memory", "28 GB"), "'28 GB' is not valid"),
    (lambda d: d["spec"].__setitem__("submissionMode", "K8sJob"), "'K8sJob' is not one of"),
    (lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].__setitem__("minReplicas", 101),
     "need 0 <= minReplicas <= maxReplicas"),
    (lambda d: d["spec"].update(clusterSelector={"ray.io/cluster": "tvts"}), "backoffLimit is incompatible"),
    (lambda d: d["spec"].__setitem__("shutdownAfterJobFinishes", False), "ttlSecondsAfterFinished needs"),
    (lambda d: d["spec"]["rayClusterSpec"].__setitem__("rayVersion", "2.40.0"), "rayVersion >= 2.52.0"),
    (lambda d: d["metadata"].__setitem__("name", "tvts_pipeline"), "DNS-1035"),
])
def test_a_misspelled_or_invalid_field_fails_the_check(mutate, expected):
    doc = copy.deepcopy(rayjob("pipeline"))
    assert kuberay_schema.check(doc) == []
    mutate(doc)
    errors = kuberay_schema.check(doc)
    assert any(expected in e for e in errors), errors
    assert all("\n" not in e for e in errors)


def test_ray_start_params_are_ray_start_options():
    """rayStartParams become `ray start --KEY=VALUE`: every key must be an option of this Ray's `ray start`."""
    from ray.scripts.scripts import start

    options = {opt[2:] for param in start.params for opt in param.opts if opt.startswith("--")}
    for name, doc in docs():
        for cluster in cluster_specs(doc):
            for group in groups(cluster):
                unknown = set(group.get("rayStartParams", {})) - options
                assert not unknown, f"{name}: rayStartParams {sorted(unknown)} are not `ray start` options"
            assert cluster["rayVersion"] == __import__("ray").__version__, f"{name}: rayVersion != installed Ray"


def test_runtime_env_yaml_is_a_ray_runtime_env():
    from ray.runtime_env import RuntimeEnv

    for stage in STAGES:
        spec = rayjob(stage)["spec"]
        env = yaml.safe_load(spec["runtimeEnvYAML"])
        unknown = set(env) - RuntimeEnv.known_fields
        assert not unknown, f"rayjob-{stage}: runtimeEnvYAML fields {sorted(unknown)} are not Ray runtime_env fields"
        # No working_dir: the image already holds the code at /app, and a local working_dir would be uploaded
        # from the submitter pod (the whole /app with its venv, past Ray's package size limit).
        assert "working_dir" not in env and "py_modules" not in env
        RuntimeEnv(**env)                                      # Ray's own validation of the values
        assert all(isinstance(v, str) for v in env.get("env_vars", {}).values())


def test_batch_jobs_bring_their_own_cluster_and_delete_it():
    for stage in STAGES:
        spec = rayjob(stage)["spec"]
        assert spec["shutdownAfterJobFinishes"] is True and "rayClusterSpec" in spec and "clusterSelector" not in spec
        assert spec.get("backoffLimit", 0) >= 1, f"rayjob-{stage}: a retry resumes the job, allow one"
        kinds = {("gpu" if "nvidia.com/gpu" in c["resources"]["limits"] else "cpu")
                 for g in spec["rayClusterSpec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]}
        assert kinds == ({"gpu"} if stage == "pretrain" else {"cpu"}), (stage, kinds)


def test_containers_use_the_image_credentials_come_from_secrets():
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile
    for name, doc in docs():
        for c in containers(doc):
            assert c["image"].split(":")[0] == IMAGE_REPO, f"{name}: {c['name']} runs {c['image']}"
            limits, requests = c["resources"].get("limits", {}), c["resources"].get("requests", {})
            assert limits and requests, f"{name}: {c['name']} needs resource requests and limits"
            for env in c.get("env", []):
                if any(word in env["name"].upper() for word in SECRET_WORDS):
                    assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), \
                        f"{name}: {env['name']} must come from a Secret (valueFrom.secretKeyRef), never inline"
    text = "\n".join(p.read_text() for p in MANIFESTS)
    assert not re.search(r"AKIA[0-9A-Z]{16}|secret_access_key\W{1,3}[A-Za-z0-9/+]{30,}", text, re.I), "a key is inline"


def test_every_volume_mount_names_a_volume_of_its_pod():
    for name, doc in docs():
        for cluster in cluster_specs(doc):
            for group in groups(cluster):
                pod = group["template"]["spec"]
                volumes = {v["name"] for v in pod.get("volumes", [])}
                for c in pod["containers"]:
                    missing = {m["name"] for m in c.get("volumeMounts", [])} - volumes
                    assert not missing, f"{name}: {c['name']} mounts undefined volumes {missing}"


def test_entrypoints_are_the_three_jobs_and_their_cluster_configs_load():
    """Each entrypoint is `cd /app && python -m <job> --config <cluster config> --set ...`, and the job's own
    config loader accepts that config with exactly those overrides (keys exist, types check)."""
    from common.config import load_config
    from dedup.config import LeakageConfig
    from pipeline.config import PipelineConfig
    from training.config import PretrainConfig

    loaders = {"pipeline": (PipelineConfig, "pipeline"), "leakage": (LeakageConfig, "leakage"),
               "pretrain": (PretrainConfig, "pretrain")}
    for stage in STAGES:
        cwd, argv = split_entrypoint(rayjob(stage)["spec"]["entrypoint"])
        assert cwd == "/app" and argv[:2] == ["python", "-m"] and stage_of(argv) == stage
        config, overrides = config_and_overrides(argv)
        assert (Path(__file__).resolve().parents[2] / config).is_file(), config
        cls, job = loaders[stage]
        cfg = load_config(cls, Path(__file__).resolve().parents[2] / config, overrides, job=job)
        assert str(cfg.output.dir).startswith(("s3://tvts-data/", "/shared/")), cfg.output.dir
