"""`PipelineConfig`: the data job's typed config (the `pipeline:` section of configs/demo.yaml).

Sections: input, output, fetch (pipeline.sources.fetch), probe, transcript (+ its word cleaning, pipeline.transcripts.clean),
asr (pipeline.transcripts.asr), segment (pipeline.samples.segment), decode, embed (optional clip features, features.embed),
shards, ray, stall (pipeline.watchdog); plus the shared top-level `seed`. Every key can be overridden on the command line:
`python -m pipeline run --config configs/demo.yaml --set decode.short_side=320 --set ray.num_cpus=4`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pipeline.media.frames import DecodeConfig
from pipeline.media.video_info import ProbeConfig
from pipeline.samples.segment import SegmentConfig
from pipeline.samples.shards import ShardsConfig
from pipeline.sources.fetch_config import FetchConfig
from pipeline.transcripts.asr import AsrConfig
from pipeline.transcripts.clean import CleanConfig
from pipeline.watchdog import StallConfig


@dataclass
class InputConfig:
    manifest: str = "data/demo/manifest.jsonl"  # path, fsspec URL, folder or glob (pipeline.sources.manifest)
    format: str | None = None                     # jsonl | csv | tsv | parquet | json; None: from the name
    limit: int | None = None                      # only the first N rows (after de-duplication)
    # Split one manifest between independent jobs (e.g. one per cluster): this job takes the rows whose
    # position modulo `partitions` is `partition`. Each job needs its own output.dir.
    partition: int = 0
    partitions: int = 1
    # A row is redone when its fields change, or (this key) the size or mtime of its local video/captions
    # files: one stat per file per run in the driver. Remote files count by their URL only.
    fingerprint_files: bool = True

    def validate(self) -> None:
        from common.config import ConfigError

        if not self.manifest:
            raise ConfigError("config key 'input.manifest' is empty: give the manifest path or URL")
        if self.partitions < 1 or not 0 <= self.partition < self.partitions:
            raise ConfigError("config keys 'input.partition'/'input.partitions': need 0 <= partition < partitions")
        if self.limit is not None and self.limit < 0:
            raise ConfigError("config key 'input.limit' must be >= 0")


@dataclass
class OutputConfig:
    dir: str = "data/demo-run/pipeline"  # shards/, summary.json (+ ledger.sqlite when local); a folder or URL
    # Downloads, on each node; default <dir>/scratch for a local dir, else a folder in the node's temp dir
    # named after the URL (kept stable so reruns resume).
    scratch_dir: str | None = None
    # The driver's ledger (SQLite) and run lock: a local folder. Default: dir itself when local, else
    # ~/.cache/tvts/state/<url> (rebuilt from the shards' stats files when missing).
    state_dir: str | None = None


@dataclass
class TranscriptConfig:
    clean: CleanConfig = field(default_factory=CleanConfig)
    # Rows without a captions file get ASR words (asr section) when ASR is enabled, else are skipped
    # with reason "no_transcript".
    asr_when_no_captions: bool = True


@dataclass
class EmbedConfig:
    """Optional open_clip features of the frames, stored as `clip.npy` (features.embed.FrameEmbedder)."""

    enabled: bool = False
    model: str = "ViT-B-32"
    pretrained: str = ""        # local weights file; empty + random_init for tests/demo without weights
    random_init: bool = False
    device: str = "cpu"
    batch_size: int = 32        # frames per forward pass


@dataclass
class RayConfig:
    address: str | None = None      # None: a local Ray on 127.0.0.1 (or the cluster of `ray job submit`)
    num_cpus: int | None = None     # local Ray only: CPUs it may use (None: all)
    object_store_memory: int | None = None  # local Ray only: bytes of object store
    # Streaming backpressure: Ray Data keeps at most this many bytes of rows in flight (None: Ray's default).
    max_inflight_bytes: int | None = 512 * 1024**2
    chunk_rows: int = 20000         # manifest rows per Ray Data run (bounds the driver's memory)
    # Logical CPUs per task/actor: Ray holds them while the task or actor lives. One per process suits a
    # many-core node; on a small one fractions let every stage run at once (configs/demo.yaml, 2 cores).
    prepare_num_cpus: float = 0.5   # fetch + probe + captions, per task
    prepare_concurrency: int = 2
    decode_num_cpus: float = 1.0    # segment + decode + write, per task
    decode_concurrency: int = 2
    asr_num_cpus: float = 1.0       # per ASR actor (the model is loaded once per actor)
    asr_num_gpus: float = 0.0
    asr_actors: int = 1
    embed_num_cpus: float = 1.0
    embed_num_gpus: float = 0.0
    embed_actors: int = 1
    temp_dir: str | None = None     # local Ray only: its session folder (default: Ray's, /tmp/ray)
    progress_bar: bool = True

    def validate(self) -> None:
        from common.config import ConfigError

        for name in ("prepare_concurrency", "decode_concurrency", "asr_actors", "embed_actors", "chunk_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"config key 'ray.{name}' must be >= 1")


@dataclass
class PipelineConfig:
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    transcript: TranscriptConfig = field(default_factory=TranscriptConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    stall: StallConfig = field(default_factory=StallConfig)
    seed: int = 0

    def validate(self) -> None:
        # The shared top-level seed drives sample placement unless the segment section sets its own.
        if self.segment.seed == 0 and self.seed != 0:
            self.segment.seed = self.seed


def asr_enabled(cfg: PipelineConfig) -> bool:
    return bool(getattr(cfg.asr, "enabled", False)) and cfg.transcript.asr_when_no_captions


def to_dict(cfg: PipelineConfig) -> dict:
    return dataclasses.asdict(cfg)


# Config sections that change what lands in the shards (not how fast or from where). The decoder and
# probe backends do (another decoder, scaler and JPEG encoder: other bytes); how a decoder reaches a
# frame (mode, seek_min_gap_s, seek_gap_s) does not change which frame it is.
OUTPUT_SECTIONS = ("probe", "transcript", "asr", "segment", "decode", "embed", "shards", "seed")
NOT_OUTPUT_KEYS = {"asr": ("device", "cpu_threads"), "embed": ("device", "batch_size"),
                   "probe": ("ffprobe", "timeout_s", "scan_timeout_s"),
                   "decode": ("timeout_s", "threads", "ffmpeg", "mode", "seek_min_gap_s",
                              "seek_gap_s")}


def output_fingerprint(cfg: PipelineConfig) -> str:
    """A hash of the settings that shape the samples: a rerun into the same output.dir must match it."""
    import hashlib
    import json

    full = to_dict(cfg)
    picked = {}
    for name in OUTPUT_SECTIONS:
        value = full[name]
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in NOT_OUTPUT_KEYS.get(name, ())}
        picked[name] = value
    return hashlib.sha256(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:16]
