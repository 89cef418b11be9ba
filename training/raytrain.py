"""Pretrain on a Ray cluster: Ray Train's TorchTrainer runs the same training function (training.engine.train,
DeepSpeed inside) on N workers, so one Ray cluster runs both the data pipeline and training.

    python -m training.raytrain --config configs/demo.yaml --workers 2 [--gpus] [--address auto] [--set ...]

Ray Train starts the workers, sets RANK/WORLD_SIZE/MASTER_ADDR and creates the torch process group
(gloo on CPU, NCCL with --gpus); DeepSpeed joins that group. Paths in the config are resolved against
the directory the command runs in; on a multi-node cluster they must be shared storage or fsspec URLs.
Checkpoints, metrics and resume are those of `python -m training.pretrain` (same output.dir).
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
    from common.config import load_config
    from training.config import PretrainConfig
    from training.engine import train

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
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        if args.address:
            ray.init(address=args.address)
        else:
            ray.init(num_cpus=max(2, int(args.workers * args.cpus_per_worker)), include_dashboard=False)
    loop_config = {"cwd": os.getcwd(), "config": str(Path(args.config).resolve()), "overrides": args.overrides,
                   "resume": args.resume or None, "fresh": args.fresh}
    trainer = TorchTrainer(
        train_function,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=args.gpus,
                                     resources_per_worker={"CPU": args.cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if args.gpus else "gloo", timeout_s=cfg.train.dist_timeout_s),
        run_config=RunConfig(name="tvts-pretrain", storage_path=str(Path(cfg.output.dir).resolve() / "ray")),
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
    out = cfg.output.dir
    print(f"done: checkpoints {out}/checkpoints/, metrics {out}/metrics.jsonl, weights {out}/model_fp32.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
