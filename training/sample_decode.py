"""One training sample from its shard members: the T frames the model takes and the K transcripts.

`decode_frames(sample, meta, spec, rng) -> float [3, T, S, S]`: picks T of the stored frames (bins
subsampled evenly, one candidate per bin: `pick_frame_members`), decodes the JPEGs (torchvision), crops
one square for all frames (`crop_box`: random in training, centre in evaluation), resizes to S and
normalises with the ImageNet mean/std. `sample_texts(meta, k)` is the K window texts in true order.
The loader (training/data.py) calls these inside its DataLoader workers; randomness comes from `rng`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

__all__ = ["FrameSpec", "pick_frame_members", "crop_box", "decode_frames", "sample_texts",
           "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FrameSpec:
    frames: int                    # T frames the model takes
    image_size: int                # square crop side S
    train: bool                    # random candidate/crop vs centre
    resize_short: float = 268 / 224
    crop_scale: tuple[float, float] = (0.7, 1.0)


def pick_frame_members(meta: dict, spec: FrameSpec, rng: random.Random) -> list[int]:
    """Member indices (000.jpg = 0) of the T frames: bins subsampled evenly, one candidate per bin."""
    frames = meta["frames"]
    per_bin = int(frames.get("per_bin", 1))
    times = frames["times"]
    n_bins = len(times) // per_bin
    if n_bins < 1:
        raise ValueError("sample has no frames")
    # Evenly spaced bins: the centre of each of T equal parts of the stored bins.
    bins = [min(n_bins - 1, int((i + 0.5) * n_bins / spec.frames)) for i in range(spec.frames)]
    members = []
    for b in bins:
        if per_bin == 1:
            cand = 0
        elif spec.train:
            cand = rng.randrange(per_bin)
        else:  # the candidate nearest the bin centre
            cands = times[b * per_bin:(b + 1) * per_bin]
            centre = (cands[0] + cands[-1]) / 2
            cand = min(range(per_bin), key=lambda c: abs(cands[c] - centre))
        members.append(b * per_bin + cand)
    return members


def crop_box(height: int, width: int, spec: FrameSpec, rng: random.Random) -> tuple[int, int, int]:
    """(top, left, side) of the square crop, in stored-frame pixels, shared by all T frames.

    Recipe: resize the short side to S * resize_short, crop S (random in train, centre in eval); that is
    a crop of side short / resize_short before the resize. Stored frames smaller than the recipe's resize
    get a scale-jittered crop instead (side = short * U(crop_scale)) so training still sees scale jitter.
    """
    short = min(height, width)
    recipe_side = max(1, round(short / spec.resize_short))
    if not spec.train:
        side = recipe_side
    elif short >= spec.image_size * spec.resize_short:
        side = recipe_side
    else:
        side = max(1, round(short * rng.uniform(*spec.crop_scale)))
    if spec.train:
        top, left = rng.randint(0, height - side), rng.randint(0, width - side)
    else:
        top, left = (height - side) // 2, (width - side) // 2
    return top, left, side


def decode_frames(sample: dict, meta: dict, spec: FrameSpec, rng: random.Random) -> torch.Tensor:
    """JPEG members -> float [3, T, S, S], ImageNet-normalised."""
    import warnings

    with warnings.catch_warnings():  # torchvision 0.29 flags its image codecs as deprecated; they work
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

    members = pick_frame_members(meta, spec, rng)
    raw = []
    for m in members:
        data = sample.get(f"{m:03d}.jpg")
        if data is None:
            raise KeyError(f"missing frame member {m:03d}.jpg")
        raw.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        images = decode_jpeg(raw, mode=ImageReadMode.RGB)         # T x [3, H, W] uint8
    height, width = images[0].shape[-2:]
    if any(img.shape[-2:] != (height, width) for img in images):
        raise ValueError("frames of one sample differ in size")
    top, left, side = crop_box(height, width, spec, rng)
    clip = torch.stack(images)[:, :, top:top + side, left:left + side].float()  # [T, 3, side, side]
    if side != spec.image_size:
        clip = torch.nn.functional.interpolate(clip, size=(spec.image_size, spec.image_size),
                                               mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    clip = (clip - mean) / std
    return clip.permute(1, 0, 2, 3).contiguous()                   # [3, T, S, S]


def sample_texts(meta: dict, k: int) -> list[str]:
    windows = meta.get("windows") or []
    if len(windows) < k:
        raise ValueError(f"sample has {len(windows)} transcript windows, the model needs {k}")
    return [str(w.get("text", "")) for w in windows[:k]]
