"""Pretrain on a Ray cluster: Ray Train's TorchTrainer runs the same training function (training.engine.train,
DeepSpeed inside) on N workers, so one Ray cluster runs both the data pipeline and training.

    python -m training.raytrain --config configs/demo.yaml --workers 2 [--gpus] [--address auto] [--set ...]

Ray Train starts the workers, sets RANK/WORLD_SIZE/MASTER_ADDR and creates the torch process group
(gloo on CPU, NCCL with --gpus); DeepSpeed joins that group. Paths in the config are resolved against
the directory the command runs in; on a multi-node cluster they must be shared storage or fsspec URLs.
Checkpoints, metrics and resume are those of `python -m training.pretrain` (same output.dir).

Multi-node: give output.dir as a URL (s3://bucket/run). Each rank stages its checkpoint files on its own
node and uploads them; rank 0 commits the tag with complete.json once all ranks uploaded; a rerun of the
same command resumes from the newest complete tag in the bucket, on whichever nodes it lands
(training/checkpoint.py). Every checkpoint's run.json lists where each rank ran ("ranks": host, pid,
Ray node id). The credentials come from the nodes' environment (AWS_* / AWS_ENDPOINT_URL, ~/.aws), not
the config. Ray Train's own run folder (RunConfig.storage_path) holds only Ray's bookkeeping (the training
function writes its own checkpoints and never reports one to Ray), so it stays local: output.dir/ray, or
for a URL a local folder beside the staging folders (common.storage.local_state_dir).

`--address` joins a running cluster (host:port of its GCS, or 'auto'); without it a private local one
on 127.0.0.1 is started (common.ray_env.prepare_ray).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.config import add_config_args, load_from_args


def train_function(loop_config: dict) -> None:
    """Runs on every Ray Train worker: load the config, train. (A plain function: Ray pickles it.)"""
    os.chdir(loop_config["cwd"])                 # relative paths of the config mean the driver's folder
    if loop_config["cwd"] not in sys.path:
        sys.path.insert(0, loop_config["cwd"])
    import ray

    from common.config import load_config
    from training.config import PretrainConfig
    from training.engine import train
    from training.pretrain import quiet_cpu_run

    quiet_cpu_run()                              # as under the other launchers: no accelerator warnings on CPU

    # the Ray node of this rank, for run.json's "ranks" (engine.train records it with the host name)
    os.environ["TVTS_NODE_ID"] = ray.get_runtime_context().get_node_id()
    cfg = load_config(PretrainConfig, loop_config["config"], loop_config["overrides"], job="pretrain")
    summary = train(cfg, resume=loop_config["resume"], fresh=loop_config["fresh"])
    if os.environ.get("RANK", "0") == "0":
        print(f"[ray train] done: {summary}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.raytrain", description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--workers", type=int, default=2, help="training ranks (Ray Train workers)")
    parser.add_argument("--gpus", action="store_true", help="one GPU per worker (NCCL); default CPU (gloo)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--address", default=None, help="Ray cluster address ('auto' = the running cluster); "
                                                         "default: start a local one")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="DIR")
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args(argv)

    from training.config import PretrainConfig

    cfg = load_from_args(PretrainConfig, args, job="pretrain")   # fail fast on a bad config, in one line
    from common.ray_env import prepare_ray
    from common.storage import is_local, local_state_dir, redact

    prepare_ray(args.address)                                     # before `import ray`
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        if args.address:
            ray.init(address=args.address)
        else:
            ray.init(num_cpus=max(2, int(args.workers * args.cpus_per_worker)), include_dashboard=False)
    # Ray Train's print patch sends every line a rank prints to the driver a second time, through its logger
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    out = cfg.output.dir
    ray_dir = Path(out).resolve() / "ray" if is_local(out) else local_state_dir(out) / "ray"
    loop_config = {"cwd": os.getcwd(), "config": str(Path(args.config).resolve()), "overrides": args.overrides,
                   "resume": args.resume or None, "fresh": args.fresh}
    trainer = TorchTrainer(
        train_function,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=args.gpus,
                                     resources_per_worker={"CPU": args.cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if args.gpus else "gloo", timeout_s=cfg.train.dist_timeout_s),
        run_config=RunConfig(name="tvts-pretrain", storage_path=str(ray_dir)),
    )
    try:
        trainer.fit()
    except Exception as exc:  # noqa: BLE001 - Ray wraps the worker's error; show its last line
        from common.cli import one_line

        print(f"error: Ray Train run failed: {one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        if not args.address:
            ray.shutdown()
    out = redact(out)
    print(f"done: checkpoints {out}/checkpoints/, metrics {out}/metrics.jsonl, weights {out}/model_fp32.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
