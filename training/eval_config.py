"""Typed config of the downstream evaluation tasks (t2v on a dataset, v2v, linear-probe, svo-probes, finetune): the `downstream:`
section of the `evaluate` job (training/config.py's EvalConfig holds it; configs/demo.yaml fills it).

    evaluate:
      downstream:
        datasets:                   # official annotation files + a folder of videos (common/downstream.py)
          - {name: msrvtt, format: msrvtt, annotations: [.../MSRVTT_JSFUSION_test.csv], video_root: ...}
          - {name: svo, format: svo, annotations: [svo_probes.csv], video_root: svo_images}
        features: {batch_size: 16, cache_dir: "", device: auto, ray_actors: 0}
        t2v: {dataset: ""}          # "": the held-out pretraining samples (no --dataset given)
        v2v: {dataset: ucf101}
        linear_probe: {dataset: ucf101, epochs: 100, lr: 0.1, batch_size: 384}
        svo_probes: {dataset: svo, rhos: [0.2, 0.25, 0.3]}
        finetune: {dataset: ucf101, epochs: 100, lr: 1.0e-3, batch_size: 8}

`python -m training.evaluate --task TASK --dataset NAME` picks one of `datasets` by name; without
--dataset a task reads its own `dataset` key. Every key is checked when the file is read (one-line
ConfigError naming the key).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.config import ConfigError
from common.downstream import READERS

RETRIEVAL_FORMATS = ("msrvtt", "msvd", "didemo", "lsmdc")
CLASSIFICATION_FORMATS = ("ucf101", "hmdb51", "ssv2", "kinetics")
PROBE_FORMATS = ("svo",)              # image-text probes (common/downstream_svo.py), not videos
FORMATS = (*READERS, *PROBE_FORMATS)


@dataclass
class DatasetSpec:
    """One downstream dataset as its official files lay it out."""
    name: str = ""
    format: str = ""                  # a common/downstream.py reader: msrvtt msvd didemo lsmdc ucf101 hmdb51 ssv2 kinetics; svo
    annotations: list[str] = field(default_factory=list)
    video_root: str = ""              # the folder of its videos (found by relative path, file name or stem); svo csv: images
    # Splits: the classifier/gallery side and the evaluated side. "" for eval_split: "test" when the
    # files have it, else "val" (SSV2 and Kinetics publish labelled val, not test), else every video.
    train_split: str = "train"
    eval_split: str = ""
    max_videos: int = 0               # per split, the first N (0: all): quick looks at a big set
    # Views per video (clips x crops): 0 takes the task's own (linear_probe.clips/crops; t2v and v2v 1 x 1).
    # The spec's linear probe: 2 x 3, 5 x 3 for Kinetics-400.
    clips: int = 0
    crops: int = 0
    # t2v query per video: each caption ("caption": MSR-VTT, MSVD, LSMDC) or all its sentences joined in
    # order into one paragraph ("paragraph": DiDeMo's paragraph-to-video). "auto": paragraph for didemo.
    query: Literal["auto", "caption", "paragraph"] = "auto"

    def validate(self) -> None:
        if not self.name:
            raise ConfigError("config key 'downstream.datasets[].name' is empty")
        if self.format not in FORMATS:
            raise ConfigError(f"config key 'downstream.datasets[{self.name}].format': {self.format!r} is not one of "
                              f"{sorted(FORMATS)}")
        if not self.annotations:
            raise ConfigError(f"config key 'downstream.datasets[{self.name}].annotations' is empty: the "
                              f"{self.format} reader needs the dataset's annotation files")
        if self.clips < 0 or self.crops not in (0, 1, 3) or self.max_videos < 0:
            raise ConfigError(f"config keys 'downstream.datasets[{self.name}].clips' >= 0, '.crops' 0, 1 or 3, "
                              f"'.max_videos' >= 0; got {self.clips}, {self.crops}, {self.max_videos}")

    @property
    def paragraphs(self) -> bool:
        return self.query == "paragraph" or (self.query == "auto" and self.format == "didemo")


@dataclass
class FeatureSettings:
    """How the frozen video features are computed and kept (training/downstream_features.py)."""
    batch_size: int = 16              # views per forward pass
    num_workers: int = 0              # DataLoader processes decoding videos (0: in this process)
    device: str = "auto"              # auto: cuda when visible, else cpu
    # Where the features of (weights, dataset, frame settings) are kept; "": <output.dir>/features.
    cache_dir: str = ""
    cache: bool = True                # false: always recompute (and do not write)
    # Extraction on Ray actors (training/ray_features.py): 0 in this process; N > 0: N actors, each taking
    # the model once and embedding a share of the videos/images (same features, same order).
    ray_actors: int = 0
    ray_address: str = ""             # "": a private local Ray on 127.0.0.1 for the run; "auto" / host:port: join one
    ray_cpus_per_actor: float = 1.0
    ray_gpus_per_actor: float = 0.0   # 1: each actor on its own GPU (device auto then picks it)

    def validate(self) -> None:
        if self.batch_size < 1 or self.num_workers < 0:
            raise ConfigError(f"config keys 'downstream.features.batch_size' >= 1 and '.num_workers' >= 0, got "
                              f"{self.batch_size} and {self.num_workers}")
        if self.ray_actors < 0 or self.ray_cpus_per_actor <= 0 or self.ray_gpus_per_actor < 0:
            raise ConfigError(f"config keys 'downstream.features.ray_actors' >= 0, '.ray_cpus_per_actor' > 0 and "
                              f"'.ray_gpus_per_actor' >= 0, got {self.ray_actors}, {self.ray_cpus_per_actor}, "
                              f"{self.ray_gpus_per_actor}")


@dataclass
class T2VSettings:
    dataset: str = ""                 # "": the held-out pretraining samples (the eval section's t2v)
    # Tokens per query; 0: the preset's text.max_length for captions, 4x that (at most 512) for paragraphs.
    max_text_length: int = 0


@dataclass
class V2VSettings:
    dataset: str = ""
    # The gallery the eval-split queries search: "train" (the train split, as video SSL papers retrieve
    # test clips from train clips), "eval" (the eval split itself, the query left out: SSV2's labelled val
    # alone), "auto": train when the files list a train split, else eval.
    gallery: Literal["auto", "train", "eval"] = "auto"
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])


@dataclass
class LinearProbeSettings:
    """The spec's linear probe: frozen [CLS], SGD lr 0.1, batch 384, 100 epochs, 2 x 3 views."""
    dataset: str = ""
    clips: int = 2
    crops: int = 3
    epochs: int = 100
    lr: float = 0.1
    batch_size: int = 384
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    # "views": every view of a training video is its own sample (the cache holds them: augmentation for
    # free); "mean": one sample per video, its views averaged. Evaluation always averages the views.
    train_on: Literal["views", "mean"] = "views"
    seeds: int = 1                    # probes trained with seeds seed..seed+N-1 on the same features
    ks: list[int] = field(default_factory=lambda: [1, 5])

    def validate(self) -> None:
        if self.clips < 1 or self.crops not in (1, 3):
            raise ConfigError(f"config keys 'downstream.linear_probe.clips' >= 1 and '.crops' 1 or 3, got "
                              f"{self.clips} and {self.crops}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.seeds < 1:
            raise ConfigError("config keys 'downstream.linear_probe.epochs', '.batch_size', '.seeds' must be >= 1 "
                              "and '.lr' > 0")


@dataclass
class SvoSettings:
    """SVO-Probes (training/svo_probes.py): an image counts as positive for a sentence when cos > rho."""
    dataset: str = ""
    rhos: list[float] = field(default_factory=lambda: [0.2, 0.25, 0.3])   # the spec's thresholds
    max_text_length: int = 0          # tokens per sentence; 0: the preset's text.max_length

    def validate(self) -> None:
        if not self.rhos or any(not -1.0 <= r <= 1.0 for r in self.rhos) or len(set(self.rhos)) != len(self.rhos):
            raise ConfigError(f"config key 'downstream.svo_probes.rhos' must list distinct cosines in [-1, 1], "
                              f"got {self.rhos}")
        if self.max_text_length < 0:
            raise ConfigError(f"config key 'downstream.svo_probes.max_text_length' must be >= 0, got {self.max_text_length}")


@dataclass
class FinetuneSettings:
    """The spec's fine-tuning protocol (training/finetune.py): the checkpoint's video tower and a linear head
    on its [CLS], trained end to end on the train split through DeepSpeed, AdamW lr 1e-3, linear warmup
    then cosine decay per step; top-1/top-5 on the eval split over clips x crops views (2 x 3; the
    dataset's clips/crops first, 5 x 3 for K400). Its checkpoints: <results folder>/finetune/checkpoints."""
    dataset: str = ""
    epochs: int = 0                   # 0: the spec's, 50 for ssv2-format sets and 100 for the others
    batch_size: int = 8               # training videos per rank per step (test: views per forward pass)
    lr: float = 1e-3
    # VideoMAE's fine-tuning numbers; weight decay skips biases, norms, [CLS] and position embeddings.
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_epochs: float = 5.0
    # Layer-wise lr decay (VideoMAE/BEiT): block i of D gets lr x layer_decay^(D - i), the patch embedding
    # layer_decay^(D + 1), the final norm and the head lr itself. 1.0: one lr for every weight.
    layer_decay: float = 0.75
    label_smoothing: float = 0.1
    pool: Literal["cls", "mean"] = "cls"        # the head reads [CLS] (as linear-probe) or the mean patch token
    crop_scale: list[float] = field(default_factory=lambda: [0.7, 1.0])   # random crop side / short side
    # Mirrored training clips; None: on, except for ssv2-format sets (their classes say left or right).
    flip: bool | None = None
    max_steps: int = 0                # stop after this many optimizer steps of the schedule (0: all)
    checkpoint_every: int = 0         # steps between checkpoints; 0: at the end of each epoch (and at the end)
    keep_last: int = 2                # checkpoints kept
    log_every: int = 10               # steps per row of <results folder>/finetune/metrics.jsonl
    clips: int = 2
    crops: int = 3
    seed: int = 0                     # head init, data order, augmentation (the top-level seed: --random-init)
    num_workers: int = 0              # DataLoader processes decoding clips
    # DeepSpeed JSON (a bare name is looked up in training/presets/): ZeRO stage 0-2, precision, clipping.
    # Fine-tuning builds its own AdamW (lr per layer) and schedule: a recipe's optimizer section is unused.
    deepspeed: str = "pretrain_cpu_zero1.json"
    resume: bool = True               # false: delete this task's checkpoints and start at step 0
    ks: list[int] = field(default_factory=lambda: [1, 5])

    def validate(self) -> None:
        key = "config key 'downstream.finetune"
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0 or self.max_steps < 0:
            raise ConfigError(f"{key}.epochs' >= 0, '.batch_size' >= 1, '.lr' > 0, '.max_steps' >= 0; got "
                              f"{self.epochs}, {self.batch_size}, {self.lr}, {self.max_steps}")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or not 0 < self.layer_decay <= 1:
            raise ConfigError(f"{key}.weight_decay' >= 0, '.warmup_epochs' >= 0, '.layer_decay' in (0, 1]; got "
                              f"{self.weight_decay}, {self.warmup_epochs}, {self.layer_decay}")
        if not 0 <= self.label_smoothing < 1 or len(self.betas) != 2:
            raise ConfigError(f"{key}.label_smoothing' in [0, 1) and '.betas' two numbers; got "
                              f"{self.label_smoothing}, {self.betas}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"{key}.crop_scale' must be [lo, hi] with 0 < lo <= hi <= 1, got {self.crop_scale}")
        if self.clips < 1 or self.crops not in (1, 3):
            raise ConfigError(f"{key}.clips' >= 1 and '.crops' 1 or 3, got {self.clips} and {self.crops}")
        if self.checkpoint_every < 0 or self.keep_last < 1 or self.log_every < 1 or self.num_workers < 0:
            raise ConfigError(f"{key}.checkpoint_every' >= 0, '.keep_last' >= 1, '.log_every' >= 1, "
                              f"'.num_workers' >= 0; got {self.checkpoint_every}, {self.keep_last}, "
                              f"{self.log_every}, {self.num_workers}")


@dataclass
class DownstreamSettings:
    datasets: list[DatasetSpec] = field(default_factory=list)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    t2v: T2VSettings = field(default_factory=T2VSettings)
    v2v: V2VSettings = field(default_factory=V2VSettings)
    linear_probe: LinearProbeSettings = field(default_factory=LinearProbeSettings)
    svo_probes: SvoSettings = field(default_factory=SvoSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)

    def validate(self) -> None:
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ConfigError(f"config key 'downstream.datasets': names must be unique, got {names}")
        for d in self.datasets:        # a list's items are not walked by common.config's _validate
            d.validate()
        for key, task in (("t2v", self.t2v), ("v2v", self.v2v), ("linear_probe", self.linear_probe),
                          ("svo_probes", self.svo_probes), ("finetune", self.finetune)):
            if task.dataset and task.dataset not in names:
                raise ConfigError(f"config key 'downstream.{key}.dataset': {task.dataset!r} is not one of "
                                  f"downstream.datasets {names}")

    def dataset(self, name: str, task: str) -> DatasetSpec:
        """The dataset `name` (or the task's default), checked to suit the task: one line when not."""
        key = {"t2v": self.t2v, "v2v": self.v2v, "linear-probe": self.linear_probe, "svo-probes": self.svo_probes,
               "finetune": self.finetune}[task]
        name = name or key.dataset
        names = [d.name for d in self.datasets]
        if not name:
            raise ConfigError(f"--task {task}: no dataset: pass --dataset NAME (one of {names}) or set "
                              f"downstream.{task.replace('-', '_')}.dataset")
        spec = next((d for d in self.datasets if d.name == name), None)
        if spec is None:
            raise ConfigError(f"--dataset {name}: not in the config's downstream.datasets {names}")
        wanted, what = {"t2v": (RETRIEVAL_FORMATS, "captions"), "svo-probes": (PROBE_FORMATS, "sentence/image probes")
                        }.get(task, (CLASSIFICATION_FORMATS, "class labels"))
        if spec.format not in wanted:
            raise ConfigError(f"--task {task} --dataset {name}: format {spec.format} has no {what}; use one of the "
                              f"formats {list(wanted)}")
        return spec
