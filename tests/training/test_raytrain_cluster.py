"""Ray Train across two nodes with output.dir on S3: `python -m training.raytrain --address <cluster>` runs
the DeepSpeed training function on 2 Ray Train workers, one per node (tests/ray_cluster.py, 1 CPU each),
checkpoints into the moto bucket (every rank uploads its own files, rank 0 commits), and a rerun with more
steps resumes from the bucket."""
from __future__ import annotations

import json

import pytest

from tests.ray_cluster import LocalCluster
from tests.training.train_helpers import PY, run, write_config
from training.synthetic import write_synthetic_shards

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.slow]


def raytrain(cluster: LocalCluster, config, *args: str):
    # The cluster runs without token auth (tests/ray_cluster.py); an earlier test in this process may have set
    # RAY_AUTH_MODE=token (common.ray_env for private local clusters), which Ray Train's actors then trip on.
    result = run([PY, "-m", "training.raytrain", "--config", str(config), "--workers", "2",
                  "--address", cluster.address, *args], timeout=420, RAY_AUTH_MODE="disabled")
    assert result.returncode == 0, result.stdout[-4000:]
    return result


def test_ray_train_on_two_nodes_checkpoints_to_s3_and_resumes(tmp_path, s3_server):
    shards = tmp_path / "shards"
    write_synthetic_shards(shards, shards=2, samples=8, size=(40, 40), frames=8, seed=9)  # local: one machine
    url = s3_server.new_bucket() + "/run"
    config = write_config(tmp_path / "c.yaml", str(shards / "shard-*.tar"), url, max_steps=2, checkpoint_every=2,
                          deepspeed="training/presets/pretrain_cpu_zero2.json")
    fs, key = s3_server.fs(), url[len("s3://"):]
    secret = s3_server.env["AWS_SECRET_ACCESS_KEY"]
    # the staging folders (one per rank) under tmp_path, not ~/.cache; the nodes pass it to the workers
    env = {**s3_server.env, "TVTS_STATE_DIR": str(tmp_path / "state")}

    with LocalCluster(tmp_path / "cluster", num_workers=1, cpus_per_node=1, env=env) as cluster:
        first = raytrain(cluster, config)
        tag = f"{key}/checkpoints/step00000002"
        names = {p.rsplit("/", 1)[-1] for p in fs.find(tag)}
        # both ranks' ZeRO-2 partitions and loader/RNG states reached the bucket, then the commit marker
        assert {"complete.json", "run.json", "mp_rank_00_model_states.pt", "rank00000.pt", "rank00001.pt",
                "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= names
        done = json.loads(fs.cat(f"{tag}/complete.json"))     # the commit lists every object and its size
        assert done["step"] == 2 and set(done["files"]) == names - {"complete.json"}
        assert all(fs.size(f"{tag}/{name}") == size for name, size in done["files"].items())
        info = json.loads(fs.cat(f"{tag}/run.json"))
        assert info["world_size"] == 2
        assert sorted(r["rank"] for r in info["ranks"]) == [0, 1]
        # the two Ray Train workers ran on the two different nodes of the cluster
        assert sorted(r["node"] for r in info["ranks"]) == sorted(cluster.node_ids())
        assert [r["step"] for r in metrics(fs, key)] == [1, 2]

        second = raytrain(cluster, config, "--set", "train.max_steps=4")
        assert f"resumed from {url}/checkpoints/step00000002 at step 2" in second.stdout
        assert json.loads(fs.cat(f"{key}/checkpoints/step00000004/complete.json"))["step"] == 4
        assert [r["step"] for r in metrics(fs, key)] == [1, 2, 3, 4]      # steps 3-4 continue the saved run
        info = json.loads(fs.cat(f"{key}/checkpoints/step00000004/run.json"))
        assert sorted(r["node"] for r in info["ranks"]) == sorted(cluster.node_ids())
        assert fs.exists(f"{key}/model_fp32.pt")

    # the secret key never lands in what the job prints or writes (bucket objects, staging folders)
    assert secret not in first.stdout + second.stdout
    for path in fs.find(key):
        assert secret.encode() not in fs.cat(path), path
    for path in (tmp_path / "state").rglob("*"):
        assert not path.is_file() or secret.encode() not in path.read_bytes(), path


def metrics(fs, key: str) -> list[dict]:
    fs.invalidate_cache()
    return [json.loads(line) for line in fs.cat(f"{key}/metrics.jsonl").decode().splitlines() if line.strip()]
