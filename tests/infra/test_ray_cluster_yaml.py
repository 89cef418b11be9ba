"""infra/ray/cluster.yaml through Ray's own cluster-launcher checks (the installed wheel's ray-schema.json via
`prepare_config` + `validate_config`, as `ray up` runs them before it touches a cloud), each AWS node_config
through botocore's EC2 RunInstances input shape (what Ray's AWS provider passes it to), and the documented
commands through the option lists of `ray start` and `ray job submit`. No network."""
from __future__ import annotations

import copy

import pytest
import yaml

from tests.infra.launch import INFRA, STAGES, job_arguments, rayjob, split_entrypoint, stage_of, submitted_jobs

CLUSTER = INFRA / "ray" / "cluster.yaml"


def load() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def ray_validate(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def node_config_errors(node_config: dict) -> str:
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    # Ray's AWS provider adds MinCount/MaxCount (and tags) to node_config before create_instances().
    return ParamValidator().validate(dict(node_config, MinCount=1, MaxCount=1), shape).generate_report()


def test_ray_accepts_the_cluster_yaml():
    prepared = ray_validate(load())
    nodes = prepared["available_node_types"]
    assert set(nodes) == {"head", "cpu_worker", "gpu_worker"} and prepared["head_node_type"] == "head"
    assert nodes["cpu_worker"]["max_workers"] == 100 and nodes["gpu_worker"]["resources"]["GPU"] == 8
    assert prepared["max_workers"] >= sum(n["max_workers"] for n in nodes.values())


@pytest.mark.parametrize("mutate,expected", [
    (lambda c: c.__setitem__("idle_timeout_minute", 5), "'idle_timeout_minute' was unexpected"),
    (lambda c: c["available_node_types"]["cpu_worker"].__setitem__("max_worker", 3), "'max_worker' was unexpected"),
    (lambda c: c["available_node_types"]["gpu_worker"]["resources"].__setitem__("GPU", "8"), "is not of type"),
    (lambda c: c["docker"].__setitem__("imagee", "x"), "'imagee' was unexpected"),
])
def test_ray_rejects_a_misspelled_field(mutate, expected):
    import jsonschema

    config = load()
    mutate(config)
    with pytest.raises(jsonschema.ValidationError) as caught:
        ray_validate(config)
    assert expected in str(caught.value)


def test_node_configs_are_ec2_run_instances_parameters():
    for name, node in load()["available_node_types"].items():
        report = node_config_errors(node["node_config"])
        assert report == "", f"{name}: {report}"
    bad = dict(load()["available_node_types"]["cpu_worker"]["node_config"], InstanceTyp="c6i.4xlarge")
    assert 'Unknown parameter in input: "InstanceTyp"' in node_config_errors(bad)


def test_start_commands_use_ray_start_options():
    from ray.scripts.scripts import start

    options = {opt for param in start.params for opt in param.opts}
    config = load()
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        words = command.split()
        if "start" not in words:
            continue
        flags = {w.split("=", 1)[0] for w in words[words.index("start") + 1:] if w.startswith("-")}
        assert flags <= options, f"not `ray start` options: {flags - options}"


def test_documented_jobs_are_the_rayjob_entrypoints():
    """One `ray job submit` per stage, its options those of Ray's CLI, its job the RayJob's, argument for
    argument (so the dry runs of test_dry_runs.py cover these commands too)."""
    from ray.dashboard.modules.job.cli import submit

    options = {opt for param in submit.params for opt in param.opts}
    jobs = submitted_jobs(CLUSTER)
    assert sorted(stage_of(argv) for _, argv in jobs) == sorted(STAGES)
    for submit_options, argv in jobs:
        flags = {o for o in submit_options if o.startswith("-")}
        assert flags <= options, f"not `ray job submit` options: {flags - options}"
        stage = stage_of(argv)
        _, rayjob_argv = split_entrypoint(rayjob(stage)["spec"]["entrypoint"])
        assert argv == rayjob_argv, f"{stage}: cluster.yaml runs\n{argv}\nrayjob-{stage}.yaml runs\n{rayjob_argv}"
        assert job_arguments(argv) == job_arguments(rayjob_argv)
