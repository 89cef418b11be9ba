"""Pretrain TVTS with DeepSpeed: `python -m training.pretrain --config FILE [--set key=value ...]`.

Reads the `pretrain` section of the config (configs/demo.yaml by default; training/config.py lists the
keys). The same command runs under every launcher, with the same config file:

    python -m training.pretrain --config configs/demo.yaml                    # one process
    deepspeed --num_gpus 2 --module training.pretrain --config configs/demo.yaml     # one node
    deepspeed --hostfile infra/hostfile.example --module training.pretrain ...       # several nodes
    torchrun --nproc_per_node 2 -m training.pretrain --config configs/demo.yaml
    python -m training.raytrain --config configs/demo.yaml --workers 2        # Ray Train

It continues from the newest complete checkpoint in output.dir (or `--resume DIR`), passing over one
that cannot be read (truncated, corrupt: a warning line, then the next older one; training/resume.py);
`--fresh` starts over. Exit codes: 0 done, 2 a wrong command/config/input (one line), 1 the run broke:
a non-finite loss (train.on_nonfinite_loss), no readable checkpoint, or anything unexpected. Writes checkpoints/, metrics.jsonl, tensorboard/, model_fp32.pt and loss_curve.png into output.dir,
which may be an fsspec URL (s3://bucket/run: staged locally per rank and uploaded at each checkpoint;
training/checkpoint.py).
"""
from __future__ import annotations

import argparse
import os
import sys

from common.cli import JobError, one_line
from common.config import add_config_args, load_from_args
from training.runtime import quiet_cpu_run  # raytrain.py imports it from here

# A wrong command, config or input: one line, exit 2. A JobError (the run itself broke: a non-finite loss,
# checkpoints that cannot be read) is one line with its own exit code (1). Anything else: traceback, exit 1.
USER_ERRORS = ("ConfigError", "DataError", "ResumeError", "FileNotFoundError", "MissingDependency", "StorageError")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="DIR",
                        help="continue from DIR (an output.dir, its checkpoints/ or one checkpoint folder); "
                             "without DIR: the newest checkpoint in output.dir (also the default)")
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start at step 0")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def die_with_launcher() -> None:
    """Under a launcher (deepspeed, torchrun), a rank must not outlive it: if the launcher is killed with
    SIGKILL it cannot stop its ranks, and orphaned ranks would keep writing checkpoints. Linux only."""
    if "LOCAL_RANK" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)          # PR_SET_PDEATHSIG: SIGKILL this process when its parent dies
    except OSError:
        return
    if os.getppid() == 1:                      # the launcher died before prctl took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    die_with_launcher()
    quiet_cpu_run()
    args = parse_args(argv)
    from training.config import PretrainConfig

    cfg = load_from_args(PretrainConfig, args, job="pretrain")
    try:
        from training.engine import train

        summary = train(cfg, resume=args.resume or None, fresh=args.fresh)
    except Exception as exc:  # noqa: BLE001 - every failure ends as one line and a non-zero exit
        rank = os.environ.get("RANK", "0")
        print(f"error (rank {rank}): {one_line(exc)}", file=sys.stderr, flush=True)
        if isinstance(exc, JobError):
            return exc.code
        if type(exc).__name__ not in USER_ERRORS and "Original Traceback" not in str(exc):
            import traceback

            traceback.print_exc()
        return 2 if type(exc).__name__ in USER_ERRORS else 1
    if os.environ.get("RANK", "0") == "0":
        from common.storage import redact

        out = redact(cfg.output.dir)
        print(f"done: step {summary['step']} (trained {summary['trained_steps']} steps this run)\n"
              f"  checkpoints  {out}/checkpoints/\n  metrics      {out}/metrics.jsonl (TensorBoard: {out}/tensorboard)\n"
              f"  weights      {out}/model_fp32.pt\n  loss curve   {out}/loss_curve.png", flush=True)
        if summary.get("skipped"):
            print(f"  skipped samples: {summary['skipped']}", flush=True)
        if summary.get("nonfinite_skipped"):
            print(f"  skipped batches with a non-finite loss: {summary['nonfinite_skipped']} "
                  "(train.on_nonfinite_loss=skip)", flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - shutting down
        pass
    sys.exit(code)
