"""Frames of a downstream video, decoded by the pipeline's own probe + decode stages.

N frames at the bin centres of the video (the same spacing rule the shards use), short side
`short_side`, returned as uint8 [N, H, W, 3]. Reusing pipeline.media.probe / pipeline.media.decode means the corpus
frames and the downstream frames come out of the same decoder and resizer, so a re-upload of a clip
is compared like for like. Failures are `pipeline.errors.StageError`s with their stable error_class
(`missing_file`, `not_video`, `no_video_stream`, `decode_failed`, `decode_timeout`, ...).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np

from common.deps import require
from pipeline.errors import StageError


@dataclass
class DecodedVideo:
    frames: np.ndarray  # uint8 [N, H, W, 3]
    times: list[float]  # seconds of each frame on the video's clock
    duration: float


def bin_centres(duration: float, n_frames: int) -> list[float]:
    step = duration / n_frames
    return [round(step * (i + 0.5), 6) for i in range(n_frames)]


def decode_frames(path: str | os.PathLike, n_frames: int = 8, short_side: int = 224,
                  timeout: float = 120.0) -> DecodedVideo:
    """Decode `n_frames` frames spread evenly over the video's picture (its own stream extent, on the
    caption clock), checked as the pipeline checks samples: frames from other times than asked for (a
    file cut short, a clock mapped wrongly) fail the video as `decode/frame_time_mismatch`."""
    from pipeline.media.decode import DecodeConfig, check_frame_times
    from pipeline.media.decode import decode_frames as pipeline_decode
    from pipeline.media.probe import probe

    Image = require("PIL.Image", "pillow")
    info = probe(path)
    duration = info.video_duration
    if duration <= 0:
        raise StageError("probe", "no_duration", f"{path}: duration {duration}")
    cfg = DecodeConfig(short_side=short_side, jpeg_quality=95, timeout_s=timeout)
    requested = bin_centres(duration, n_frames)
    decoded = pipeline_decode(path, info, requested, cfg)
    if not decoded.jpegs:
        raise StageError("decode", "decode_no_frames", f"no frames decoded from {path}")
    wrong = check_frame_times(requested, decoded.times, info.fps)
    if wrong:
        raise StageError("decode", "frame_time_mismatch", f"{path}: {wrong}")
    frames = []
    for jpeg in decoded.jpegs:
        with Image.open(io.BytesIO(jpeg)) as img:
            frames.append(np.asarray(img.convert("RGB")))
    return DecodedVideo(frames=np.stack(frames), times=[round(t, 3) for t in decoded.times], duration=duration)
