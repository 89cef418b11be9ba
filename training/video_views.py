"""A downstream video file -> the model's input views: float [clips * crops, 3, T, S, S], ImageNet-normalised.

Evaluation views as the action-recognition protocols take them (TVTS-SPEC.md, "Evaluation": 2 clips x 3
crops, 5 x 3 for Kinetics-400; retrieval 1 x 1):
- time: clip c of C takes T frames at (i + (c + 0.5) / C) * duration / T, i = 0..T-1: the T equal bins of
  the whole video, each clip at its own offset inside every bin. One clip is the bin centres, the frames
  held-out evaluation takes from the shards (training/sample_decode.py), so both see a video alike.
  A time shows the frame on screen then (the last one presented at or before it).
- space: 1 crop is the evaluation transform of training (resize the short side to S * data.resize_short,
  centre crop S); 3 crops resize the short side to S and take S x S at the start, centre and end of the
  long side (the three-crop test of VideoMAE / SlowFast), so together they cover the whole frame.

An image (SVO-Probes) is a clip of T copies of itself: `image_views` takes it through the same 1-crop
transform, so the video tower sees a still video, as it does a still scene of the corpus.

Training clips of the fine-tuning task (`decode_train_clip`): a random frame inside each of the T bins,
a random square crop, optionally mirrored.

Decoded with PyAV (one pass over the stream, frames converted only when picked, resized by swscale
while converting). training/ does not use pipeline/'s ffmpeg decoder: it imports only common/ and
features/ (ARCHITECTURE.md). Display rotation is not applied (no downstream set here stores any).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from training.sample_decode import IMAGENET_MEAN, IMAGENET_STD


class VideoDecodeError(RuntimeError):
    """A downstream video that cannot be read; `error_class` counts it (missing_file, decode_failed, ...)."""

    def __init__(self, error_class: str, message: str):
        super().__init__(message)
        self.error_class = error_class


@dataclass(frozen=True)
class ViewSpec:
    frames: int                       # T, the preset's video.frames
    image_size: int                   # S, the preset's video.image_size
    clips: int = 1
    crops: int = 1                    # 1 (centre) or 3 (start, centre, end of the long side)
    resize_short: float = 268 / 224   # 1 crop: the short side is resized to S * resize_short first

    @property
    def views(self) -> int:
        return self.clips * self.crops


def frame_times(duration: float, spec: ViewSpec) -> list[list[float]]:
    """[clip][frame] -> seconds from the first frame."""
    step = duration / spec.frames
    return [[(i + (c + 0.5) / spec.clips) * step for i in range(spec.frames)] for c in range(spec.clips)]


def _scaled_size(width: int, height: int, short: int) -> tuple[int, int]:
    if width <= height:
        return short, max(short, round(height * short / width))
    return max(short, round(width * short / height)), short


def _decode(path: str, wanted: list[float], short: int):
    """uint8 [len(wanted), H, W, 3] of the frames on screen at each wanted time (sorted ascending)."""
    import av
    import numpy as np

    with av.open(path) as container:
        if not container.streams.video:
            raise VideoDecodeError("no_video_stream", f"{path}: no video stream")
        stream = container.streams.video[0]
        width, height = _scaled_size(stream.codec_context.width, stream.codec_context.height, short)
        picked: list = [None] * len(wanted)
        j, t0, previous = 0, None, None

        def convert(frame):
            return frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")

        for frame in container.decode(stream):
            if frame.time is None:
                continue
            t0 = frame.time if t0 is None else t0
            t = frame.time - t0
            if j < len(wanted) and wanted[j] < t:          # the frames before this one cover wanted[j...]
                image = convert(previous if previous is not None else frame)
                while j < len(wanted) and wanted[j] < t:
                    picked[j] = image
                    j += 1
            previous = frame
            if j == len(wanted):
                break
        if previous is None:
            raise VideoDecodeError("decode_no_frames", f"{path}: no frame decoded")
        if j < len(wanted):
            image = convert(previous)
            picked[j:] = [image] * (len(wanted) - j)
    return np.stack(picked)


def duration_of(path: str) -> float:
    """The video stream's length in seconds (container's when the stream does not say; decoding when neither)."""
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise VideoDecodeError("no_video_stream", f"{path}: no video stream")
        stream = container.streams.video[0]
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        if container.duration:
            return container.duration / 1_000_000
        last = None                           # WebM without durations (SSV2): read the timestamps
        for frame in container.decode(stream):
            last = frame.time if frame.time is not None else last
        return float(last or 0.0)


def decode_views(path: str | os.PathLike, spec: ViewSpec) -> torch.Tensor:
    """float [clips * crops, 3, T, S, S] (clip-major, then crop), ImageNet-normalised."""
    import av

    path = str(path)
    if not os.path.isfile(path):
        raise VideoDecodeError("missing_file", f"{path}: no such file")
    try:
        duration = duration_of(path)
        if duration <= 0:
            raise VideoDecodeError("no_duration", f"{path}: duration {duration}")
        times = frame_times(duration, spec)
        flat = sorted(t for clip in times for t in clip)
        short = spec.image_size if spec.crops == 3 else round(spec.image_size * spec.resize_short)
        frames = torch.from_numpy(_decode(path, flat, short))       # [C*T, H, W, 3], clip-major order
    except av.error.FFmpegError as exc:
        raise VideoDecodeError("decode_failed", f"{path}: {exc}") from None
    # Sorted times interleave the clips (clip c's frame i is the (i*C + c)-th): put them clip-major.
    order = torch.tensor([i * spec.clips + c for c in range(spec.clips) for i in range(spec.frames)])
    clip = frames[order].view(spec.clips, spec.frames, *frames.shape[1:]).permute(0, 4, 1, 2, 3).float()
    height, width = clip.shape[-2:]
    s = spec.image_size
    if spec.crops == 1:
        offsets = [((height - s) // 2, (width - s) // 2)]
    elif height <= width:
        offsets = [(0, 0), (0, (width - s) // 2), (0, width - s)]
    else:
        offsets = [(0, 0), ((height - s) // 2, 0), (height - s, 0)]
    views = torch.stack([c[..., top:top + s, left:left + s] for c in clip for top, left in offsets])
    return _normalise(views)                                          # [V, 3, T, S, S]


def _normalise(views: torch.Tensor) -> torch.Tensor:
    """float 0-255 [V, 3, T, S, S] -> ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1) * 255
    return ((views - mean) / std).contiguous()


def decode_train_clip(path: str | os.PathLike, spec: ViewSpec, rng, crop_scale: tuple[float, float] = (0.7, 1.0),
                      flip: bool = False) -> torch.Tensor:
    """One augmented training clip, float [3, T, S, S], ImageNet-normalised (the fine-tuning task).

    time: the T equal bins of the video, a frame at a random place inside each bin (TSN's segment
    sampling: every clip still spans the whole video, as the test views do). space: the short side
    resized to S * resize_short as for the 1-crop view, a square of a random side (crop_scale of the short
    side) at a random place, resized to S; mirrored with probability 1/2 when `flip` (never for classes
    that name a direction: SSV2's "left to right", the demo's MoveLeft). `rng` is a random.Random, so
    a clip is a pure function of its seed, whichever loader worker decodes it."""
    import av

    path = str(path)
    if not os.path.isfile(path):
        raise VideoDecodeError("missing_file", f"{path}: no such file")
    try:
        duration = duration_of(path)
        if duration <= 0:
            raise VideoDecodeError("no_duration", f"{path}: duration {duration}")
        step = duration / spec.frames
        times = [(i + rng.random()) * step for i in range(spec.frames)]          # ascending: one per bin
        frames = torch.from_numpy(_decode(path, times, round(spec.image_size * spec.resize_short)))
    except av.error.FFmpegError as exc:
        raise VideoDecodeError("decode_failed", f"{path}: {exc}") from None
    clip = frames.permute(3, 0, 1, 2).float()                                    # [3, T, H, W]
    height, width = clip.shape[-2:]
    side = max(1, min(height, width, round(rng.uniform(*crop_scale) * min(height, width))))
    top, left = rng.randint(0, height - side), rng.randint(0, width - side)
    clip = clip[..., top:top + side, left:left + side]
    if side != spec.image_size:
        clip = torch.nn.functional.interpolate(clip, size=(spec.image_size, spec.image_size), mode="bilinear",
                                               align_corners=False, antialias=side > spec.image_size)
    if flip and rng.random() < 0.5:
        clip = clip.flip(-1)
    return _normalise(clip.clamp(0, 255).unsqueeze(0))[0]


def image_views(path: str | os.PathLike, spec: ViewSpec) -> torch.Tensor:
    """float [1, 3, T, S, S]: the image resized (short side S * resize_short, area filter as the video
    frames get), centre-cropped to S and repeated over the T frames the video tower takes."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    path = str(path)
    if not os.path.isfile(path):
        raise VideoDecodeError("missing_file", f"{path}: no such file")
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise VideoDecodeError("decode_failed", f"{path}: {exc}") from None
    width, height = _scaled_size(*rgb.size, round(spec.image_size * spec.resize_short))
    pixels = torch.from_numpy(np.array(rgb.resize((width, height), Image.BOX))).permute(2, 0, 1).float()
    s = spec.image_size
    top, left = (height - s) // 2, (width - s) // 2
    crop = pixels[:, top:top + s, left:left + s]                               # [3, S, S]
    return _normalise(crop[None, :, None].expand(1, 3, spec.frames, s, s))     # [1, 3, T, S, S]
