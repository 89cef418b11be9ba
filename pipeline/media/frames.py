"""What the decode stage returns and promises, whichever decoder made it (pipeline/media/decode.py).

`DecodeConfig` (the `decode:` config section), `DecodedFrames` (JPEGs + the times they really show),
`output_size` (the resize rule) and `check_frame_times` (are these the requested frames?). The ffmpeg
command decoder (decode.py) and the in-process PyAV decoder (pyav_decode.py) both import this leaf.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal, Sequence

# A frame whose time is this close below a requested time counts as "at" it (timebases such as 1/15360
# cannot hold every millisecond exactly).
TIME_TOLERANCE_S = 0.002
# check_frame_times: decoded times are rounded to the millisecond and timebases are inexact.
FRAME_CHECK_EPSILON_S = 0.005
# check_frame_times: the longest gap between frames a variable-frame-rate video may have (see there).
VFR_GAP_S = 1.0


# swscale's interpolations by ffmpeg's `-sws_flags` name -> PyAV's `Interpolation` name.
SCALE_FLAGS = {"fast_bilinear": "FAST_BILINEAR", "bilinear": "BILINEAR", "bicubic": "BICUBIC",
               "experimental": "X", "neighbor": "POINT", "area": "AREA", "bicublin": "BICUBLIN",
               "gauss": "GAUSS", "sinc": "SINC", "lanczos": "LANCZOS", "spline": "SPLINE"}


@dataclasses.dataclass
class DecodeConfig:
    # pyav: in-process, one open container per video, every sample's frames in one forward pass
    # (pipeline/media/pyav_decode.py); ffmpeg: one ffmpeg command per sample, the reference decoder.
    # They give the same frames (tests/pipeline/test_frame_times.py) but not the same bytes: a fingerprint key.
    backend: Literal["pyav", "ffmpeg"] = "pyav"
    short_side: int = 256            # frames are resized so their short side is this many pixels
    upscale: bool = True             # also enlarge videos smaller than short_side (uniform shards)
    jpeg_quality: int = 90           # JPEG quality (libjpeg-turbo's scale), 1..95
    mode: Literal["auto", "span", "seek"] = "auto"   # ffmpeg only (see decode.py)
    seek_min_gap_s: float = 4.0      # ffmpeg auto: per-frame seeks when frames are further apart than this
    # pyav: with no seek index to say where keyframes are (MPEG-TS, WebM without cues), a gap longer
    # than this to the next requested frame is crossed by a container seek; a shorter one by reading
    # packets forward without decoding them, to the last keyframe before that frame.
    seek_gap_s: float = 8.0
    threads: int = 1                 # decoder threads per video (parallelism comes from Ray); 0: auto
    scale_flags: str = "bicubic"     # swscale's interpolation, both decoders (SCALE_FLAGS)
    timeout_s: float = 120.0         # ffmpeg: per call, the process tree is killed after it; pyav: per sample
    ffmpeg: str = "ffmpeg"
    audio_sample_rate: int = 16000

    def validate(self) -> None:
        from common.config import ConfigError

        if not 16 <= self.short_side <= 4096:
            raise ConfigError(f"config key 'decode.short_side': expected 16..4096, got {self.short_side}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ConfigError(f"config key 'decode.jpeg_quality': expected 1..95, got {self.jpeg_quality}")
        if self.timeout_s <= 0:
            raise ConfigError("config key 'decode.timeout_s' must be > 0")
        if self.threads < 0:
            raise ConfigError("config key 'decode.threads' must be >= 0 (0: ffmpeg decides)")
        if self.scale_flags not in SCALE_FLAGS:
            raise ConfigError(f"config key 'decode.scale_flags': expected one of {', '.join(SCALE_FLAGS)}, "
                              f"got {self.scale_flags!r}")
        if self.seek_gap_s <= 0:
            raise ConfigError("config key 'decode.seek_gap_s' must be > 0")


@dataclasses.dataclass
class DecodedFrames:
    jpegs: list[bytes]          # one per requested time, in the requested order
    times: list[float]          # caption-clock time of the frame actually used for each request
    width: int
    height: int
    processes: int = 1          # ffmpeg processes run (for the benchmark); 0 for the in-process decoder


def output_size(width: int, height: int, cfg: DecodeConfig) -> tuple[int, int]:
    """(w, h) with the short side at `cfg.short_side` (aspect kept; never 0)."""
    short = min(width, height)
    if short <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    if short <= cfg.short_side and not cfg.upscale:
        return width, height
    scale = cfg.short_side / short
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))



# When a container's seek lands after the requested time (MPEG-TS seeks by bytes and can land
# on the keyframe after it), seek again this much earlier, and decode forward to the frame (both decoders).
SEEK_BACKOFF_S = (0.0, 4.0, 16.0, 64.0)



def check_frame_times(requested: Sequence[float], decoded: Sequence[float], fps: float) -> str | None:
    """Why the decoded frames are not the requested ones (None: they are); the decode stage drops such
    a sample as `frame_time_mismatch`.

    A decoded frame earlier than its request by more than one frame interval (1/fps, plus rounding) is a
    stand-in past the last frame (the picture ended before the container, or the file was cut short).
    A later one is the wrong picture (a clock mapped wrongly, a seek that overshot); the late side allows
    up to VFR_GAP_S when that is more than the interval, because a variable-frame-rate video (screen
    recordings, phones) legitimately has gaps longer than its average interval, and the frame shown at t
    is then the next one. Two requests further apart than that allowance must not get the same frame.
    Unknown fps: one second stands in for the interval.
    """
    interval = 1.0 / fps if fps and fps > 0 else 1.0
    early = interval + FRAME_CHECK_EPSILON_S
    late = max(interval, VFR_GAP_S) + FRAME_CHECK_EPSILON_S
    for t, d in zip(requested, decoded):
        if not math.isfinite(d) or d < t - early or d > t + late:
            return f"frame for {t:.3f}s is at {d:.3f}s (more than one frame interval, {interval:.3f}s, away)"
    by_time: dict[float, float] = {}
    for t, d in zip(requested, decoded):
        other = by_time.setdefault(d, t)
        if abs(other - t) > late:
            return f"the same frame ({d:.3f}s) came back for {other:.3f}s and {t:.3f}s"
    return None
