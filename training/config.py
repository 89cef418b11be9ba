"""Typed configs of the training jobs: `pretrain` (PretrainConfig) and `evaluate` (EvalConfig).

Both are filled from a YAML file by `common.config.load_config` (configs/demo.yaml has a `pretrain:` and
an `evaluate:` section) and overridable with `--set section.key=value`. An unknown key or a wrong type is
a one-line ConfigError naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from common.config import ConfigError, check_protocols
from training.eval_config import DownstreamSettings

PRESET_DIR = Path(__file__).resolve().parent / "presets"


@dataclass
class DataConfig:
    """Where the shards are and how a sample becomes a tensor (TVTS-SPEC.md, "Sample")."""
    # Training/evaluation input: a path, glob, brace pattern (shard-{000000..000009}.tar), a folder of
    # shards, an fsspec URL (s3://..., gs://...) or several of these joined by '::'.
    shards: str = "data/demo-run/pipeline/shards/shard-*.tar"
    # Evaluation input; when empty, evaluation reads `shards` and keeps only the held-out videos.
    eval_shards: str = ""
    # Hold out this fraction of VIDEOS (by a hash of the video id, so every span of a video lands on the
    # same side) for evaluation; training never sees them. 0 disables the hold-out.
    holdout_fraction: float = 0.1
    # Files (local paths or fsspec URLs) in the blocklist format (ARCHITECTURE.md): one sample key or video
    # id per line, '#' comments.
    blocklist: list[str] = field(default_factory=list)
    shuffle_buffer: int = 1000        # samples in the in-stream shuffle buffer (per loader worker)
    shuffle_initial: int = 100        # samples buffered before the first one leaves
    resampled: bool = False           # epoch-less: each worker draws shards with replacement forever
    # How ranks x workers share the data: "shard" (each slot reads its own shards), "sample" (every slot
    # reads every shard and keeps every (ranks x workers)-th sample), "auto": shard when there are at
    # least 4 shards per slot (so slots get about equal data), else sample.
    split_by: Literal["auto", "shard", "sample"] = "auto"
    num_workers: int = 2              # DataLoader worker processes per rank (0 = in the training process)
    prefetch_factor: int = 2          # batches each worker (0 workers: a thread) prepares ahead
    # Frames: image_size and frame count come from the model preset; these shape the crop.
    resize_short: float = 268 / 224   # recipe: resize short side to 268 then crop 224 (ratio to image_size)
    crop_scale: list[float] = field(default_factory=lambda: [0.7, 1.0])  # jittered crop side / short side,
    #                                   used when the stored frames are smaller than the recipe's resize
    max_text_length: int | None = None  # tokens per transcript; None: the preset's text.max_length (spec: 50)
    text_padding: Literal["max_length", "longest"] = "max_length"

    def validate(self) -> None:
        if not self.shards:
            raise ConfigError("config key 'data.shards' is empty: give a path, glob or brace pattern of .tar shards")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ConfigError(f"config key 'data.holdout_fraction' must be in [0, 1), got {self.holdout_fraction}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"config key 'data.crop_scale' must be [lo, hi] with 0 < lo <= hi <= 1, got {self.crop_scale}")
        if self.num_workers < 0 or self.shuffle_buffer < 1 or (self.max_text_length or 2) < 2:
            raise ConfigError("config keys 'data.num_workers' >= 0, 'data.shuffle_buffer' >= 1, "
                              "'data.max_text_length' >= 2")
        if self.resize_short < 1.0:
            raise ConfigError(f"config key 'data.resize_short' is a ratio to the crop size and must be >= 1, got {self.resize_short}")
        # An unknown protocol or a missing fsspec package (s3fs, gcsfs) is a config error before any work;
        # whether the bucket and objects exist is checked when the shards are listed (training/data.py).
        check_protocols("data.shards", self.shards.split("::"))
        check_protocols("data.eval_shards", self.eval_shards.split("::"))
        check_protocols("data.blocklist", self.blocklist)




@dataclass
class TrainConfig:
    """The recipe (TVTS-SPEC.md, "Training recipe"); the DeepSpeed JSON holds ZeRO/precision/clipping."""
    preset: str = "tiny"              # model preset name (training/presets/<name>.yaml) or a YAML path
    model_overrides: list[str] = field(default_factory=list)  # e.g. ["video.depth=2"] on top of the preset
    mode: Literal["pretrain", "post"] = "pretrain"  # post: image-text + video-text, mask 0, no sort loss
    post_frames: list[int] = field(default_factory=lambda: [1, 4])  # post mode: frames of alternating batches
    deepspeed: str = "training/presets/pretrain_cpu_zero1.json"     # DeepSpeed JSON of the recipe
    init_from: str = ""               # start from these weights (a run's model_fp32.pt), e.g. post-pretraining
    max_steps: int = 200              # optimizer steps of the whole run
    epochs: int = 20                  # the recipe's epochs; the step schedule's milestones scale to max_steps
    micro_batch: int = 8              # samples per rank per forward
    grad_accum: int = 1               # micro batches per optimizer step
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: Literal["step", "cosine", "constant"] = "step"
    step_epochs: list[int] = field(default_factory=lambda: [12, 16])  # step schedule: x step_gamma at these
    step_gamma: float = 0.1
    warmup_steps: int = 0             # linear warmup (both schedules)
    min_lr_ratio: float = 0.0         # cosine floor as a fraction of lr
    activation_checkpointing: bool = False  # recompute encoder blocks in backward (saves memory)
    log_every: int = 10               # steps between metrics.jsonl / TensorBoard rows
    checkpoint_every: int = 100       # steps between checkpoints (one is always written at the end)
    keep_last: int = 2                # checkpoints kept (older ones are deleted)
    # Held-out evaluation during training (0: none): every eval_every steps and at the end, rank 0 scores
    # the first eval_samples samples of the videos data.holdout_fraction leaves out (or data.eval_shards),
    # the same ones every time: sort accuracy (also text only) and t2v R@1/R@5/MedR (one gallery entry per
    # video), one row each in output.dir/heldout.jsonl.
    eval_every: int = 0
    eval_samples: int = 256
    export_fp32: bool = True          # write model_fp32.pt (plain state_dict) at the end
    dist_timeout_s: int = 600         # a collective that waits longer than this fails instead of hanging
    # A NaN/Inf loss (total or any term) is caught before backward, on every rank together (guards.py).
    # stop: end the run in one line naming the step and the batch's sample keys (no checkpoint of that
    # step is written). skip: drop that micro batch on every rank (no backward, no optimizer step; the
    # next batch takes its place), warn, count it (metrics.jsonl `nonfinite_skipped`); the run still
    # stops at the (max_nonfinite_skips + 1)-th such batch, since a loss that keeps going NaN is divergence.
    on_nonfinite_loss: Literal["stop", "skip"] = "stop"
    max_nonfinite_skips: int = 10
    tensorboard: bool = True
    plot: bool = True                 # loss-curve PNG at the end

    def validate(self) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"config key 'train.max_steps' must be >= 1, got {self.max_steps}")
        if self.micro_batch < 1 or self.grad_accum < 1:
            raise ConfigError("config keys 'train.micro_batch' and 'train.grad_accum' must be >= 1")
        if self.log_every < 1 or self.checkpoint_every < 1 or self.keep_last < 1:
            raise ConfigError("config keys 'train.log_every', 'train.checkpoint_every', 'train.keep_last' must be >= 1")
        if self.eval_every < 0 or self.eval_samples < 1:
            raise ConfigError(f"config keys 'train.eval_every' must be >= 0 and 'train.eval_samples' >= 1, got "
                              f"{self.eval_every} and {self.eval_samples}")
        if self.max_nonfinite_skips < 0:
            raise ConfigError(f"config key 'train.max_nonfinite_skips' must be >= 0, got {self.max_nonfinite_skips}")
        if len(self.betas) != 2:
            raise ConfigError(f"config key 'train.betas' must be two numbers, got {self.betas}")
        if self.mode == "post" and (not self.post_frames or any(f < 1 for f in self.post_frames)):
            raise ConfigError(f"config key 'train.post_frames' must list frame counts >= 1, got {self.post_frames}")


@dataclass
class OutputConfig:
    dir: str = "data/demo-run/train"  # a folder or an fsspec URL (s3://bucket/run; training/checkpoint.py)

    def validate(self) -> None:
        check_protocols("output.dir", [self.dir])


@dataclass
class PretrainConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


@dataclass
class EvalSettings:
    batch_size: int = 16
    max_samples: int = 0              # the first N held-out samples, the same in every pass; 0 = all
    # t2v: how the K transcripts of a sample become one query. "mean": the mean of the K projected
    # transcript embeddings (what L_base trains); "concat": the K transcripts joined into one text.
    text_query: Literal["mean", "concat"] = "mean"
    sort_repeats: int = 1             # sort accuracy: passes over the data with fresh shuffles/masks


@dataclass
class EvalOutputConfig:
    dir: str = "data/demo-run/eval"


@dataclass
class EvalConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=lambda: DataConfig(num_workers=0))
    eval: EvalSettings = field(default_factory=EvalSettings)
    output: EvalOutputConfig = field(default_factory=EvalOutputConfig)
    # The downstream tasks (t2v on a dataset, v2v, linear-probe): training/eval_config.py.
    downstream: DownstreamSettings = field(default_factory=DownstreamSettings)
