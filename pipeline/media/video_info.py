"""What a probe says about a video (`VideoInfo`), its config, and the parsing rules both probes share.

Two probes fill `VideoInfo` with the same meaning (pipeline/media/probe.py): `probe.backend: pyav` opens
the file in-process with PyAV (pipeline/media/pyav_probe.py, no process started), `ffprobe` runs the
ffprobe command. This module is the leaf both import, so neither imports the other.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal


@dataclasses.dataclass
class ProbeConfig:
    # pyav: in-process (PyAV, pinned in requirements.txt), the default; ffprobe: the ffprobe command,
    # the reference the PyAV probe is tested against (tests/pipeline/test_probe.py).
    backend: Literal["pyav", "ffprobe"] = "pyav"
    ffprobe: str = "ffprobe"
    timeout_s: float = 60.0
    # A packet scan for the duration reads the whole file; cap it (seconds) for huge files on slow disks.
    scan_timeout_s: float = 300.0

    def validate(self) -> None:
        from common.config import ConfigError

        if self.timeout_s <= 0 or self.scan_timeout_s <= 0:
            raise ConfigError("config keys 'probe.timeout_s' and 'probe.scan_timeout_s' must be > 0")


@dataclasses.dataclass
class VideoInfo:
    duration: float          # seconds
    fps: float               # average frame rate (frames/s); 0.0 when unknown
    width: int               # displayed width (after rotation)
    height: int              # displayed height (after rotation)
    rotation: int            # degrees clockwise the decoder turns the coded picture: 0, 90, 180, 270
    video_codec: str
    audio_codec: str | None
    has_audio: bool
    coded_width: int
    coded_height: int
    format_name: str
    n_frames: int | None = None  # from the container when it says so
    bit_rate: int | None = None
    size_bytes: int = 0
    # The video stream's own extent, in stream seconds (the clock of the file's timestamps). Caption and
    # transcript time 0 is `video_start`, the first presented frame (as players show it), which is not 0
    # for MPEG-TS recordings, edit lists, `-itsoffset` or negative starts; `video_end` is where the
    # picture ends, which can be well before the container's end (audio running on). None: unknown
    # (info recorded before these fields existed); then the container's start and duration stand in.
    video_start: float | None = None
    video_end: float | None = None
    container_start: float = 0.0  # the container's start_time: ffmpeg's `-ss` counts from it

    @property
    def clock_zero(self) -> float:
        """Stream time of caption time 0."""
        return self.video_start if self.video_start is not None else self.container_start

    @property
    def video_duration(self) -> float:
        """Seconds of picture on the caption clock: samples are placed within [0, video_duration)."""
        if self.video_end is not None and self.video_end > self.clock_zero:
            return self.video_end - self.clock_zero
        return self.duration

    def to_json(self) -> dict[str, Any]:
        """The `video` part of the shard json (ARCHITECTURE.md)."""
        return {"duration": round(self.duration, 3), "fps": round(self.fps, 3), "width": self.width,
                "height": self.height, "rotation": self.rotation, "has_audio": self.has_audio,
                "codec": self.video_codec, "audio_codec": self.audio_codec}


def ratio(text: str | None) -> float:
    """A frame rate written as 'num/den' (or a number); 0.0 when unknown."""
    if not text or text in ("0/0", "N/A"):
        return 0.0
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den) if float(den) else 0.0
        return float(text)
    except ValueError:
        return 0.0


def positive(value: Any) -> float | None:
    """A duration or size: a finite number > 0, else None."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) and result > 0 else None


def timestamp(value: Any) -> float | None:
    """A timestamp in seconds; unlike `positive`, zero and negative values are real times."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def tag_duration(tags: dict[str, str] | None) -> float | None:
    """Matroska's `DURATION` tag: 'HH:MM:SS.fffffffff'."""
    for key, value in (tags or {}).items():
        if key.upper() == "DURATION":
            try:
                h, m, s = value.split(":")
                return positive(int(h) * 3600 + int(m) * 60 + float(s))
            except ValueError:
                return None
    return None


def plausible_fps(fps: float) -> float:
    """0.0 for a rate no video has: the r_frame_rate of a VFR phone video can be its timebase (90000/1)."""
    return fps if 0 < fps <= 1000 else 0.0


def clockwise(counter_clockwise: float) -> int:
    """The display matrix's angle (counter-clockwise, as ffprobe and PyAV give it) as the clockwise turn
    the decoder applies, in {0, 90, 180, 270}."""
    return int(round(-counter_clockwise / 90.0)) * 90 % 360


def build_info(*, coded_width: int, coded_height: int, rotation: int, avg_fps: float, base_fps: float,
               duration: float, n_frames: int | None, container_start: float, stream_start: float | None,
               stream_duration: float | None, first_frame: float | None, video_codec: str,
               audio_codec: str | None, format_name: str, bit_rate: int | None, size_bytes: int) -> VideoInfo:
    """The rules both probes apply to the raw facts they read, so they agree by construction."""
    width, height = (coded_height, coded_width) if rotation in (90, 270) else (coded_width, coded_height)
    fps = plausible_fps(avg_fps) or plausible_fps(base_fps)
    if not fps and n_frames and duration:
        fps = n_frames / duration
    video_start = first_frame if first_frame is not None else (
        stream_start if stream_start is not None else container_start)
    # The picture's end: the stream's own duration (mp4 track, Matroska per-stream tag, MPEG-TS packet
    # estimate) from its start, not the container's, which also covers audio running on past the picture.
    if stream_duration is not None:
        video_end = (stream_start if stream_start is not None else container_start) + stream_duration
    else:
        video_end = container_start + duration
    return VideoInfo(duration=duration, fps=fps, width=width, height=height, rotation=rotation,
                     video_codec=video_codec, audio_codec=audio_codec, has_audio=audio_codec is not None,
                     coded_width=coded_width, coded_height=coded_height, format_name=format_name,
                     n_frames=n_frames, bit_rate=bit_rate, size_bytes=size_bytes, video_start=video_start,
                     video_end=video_end, container_start=container_start)


def legacy_rotation(tag: str | None) -> int:
    """The old `rotate` metadata tag (clockwise degrees), rounded to {0, 90, 180, 270}; 0 when absent."""
    try:
        return int(round(float(tag) / 90.0)) * 90 % 360 if tag is not None else 0
    except ValueError:
        return 0
