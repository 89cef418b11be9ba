"""Probe stage: what a file holds, from ffprobe (duration, fps, display size, rotation, codecs, audio).

`probe(path, cfg) -> VideoInfo` or a `StageError("probe", error_class, message)`:
- `empty_file`: zero bytes; `missing_file`: no such file;
- `not_video`: ffprobe cannot read it as media at all (a text file named .mp4, a truncated mp4 whose
  index is gone) or it has no decodable video stream (`no_video_stream` for audio-only files);
- `no_duration`: the duration cannot be found, not even by reading the packet timestamps;
- `probe_timeout`: ffprobe ran past `timeout_s` (its process tree is killed, pipeline.media.proc).

Duration: the container's, else the video stream's, else a `DURATION` tag (Matroska), else the end of
the last video packet (one demux pass without decoding: WebM written without a duration, e.g. by a
browser recorder). Rotation comes from the display matrix side data (or the legacy `rotate` tag) and is
given as degrees clockwise in {0, 90, 180, 270}; `width`/`height` are the displayed size (swapped for 90
and 270), which is what ffmpeg's decoder outputs with its default autorotation.

Clock: `video_start` is the stream time of the first presented video frame (ffprobe's frame times of
the first packets; the stream's start_time when none decodes), `video_end` the stream's start plus its
own duration (the container's end when the stream has none). Caption time 0 is `video_start`, and
`video_duration` (end - start) is the picture's extent that samples are placed in.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from pipeline.errors import StageError
from pipeline.media.proc import run_media_tool, safe_input


@dataclasses.dataclass
class ProbeConfig:
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


def _ratio(text: str | None) -> float:
    if not text or text in ("0/0", "N/A"):
        return 0.0
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den) if float(den) else 0.0
        return float(text)
    except ValueError:
        return 0.0


def _float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) and result > 0 else None


def _time(value: Any) -> float | None:
    """A timestamp in seconds; unlike `_float`, zero and negative values are real times."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _tag_duration(tags: dict[str, str] | None) -> float | None:
    """Matroska's `DURATION` tag: 'HH:MM:SS.fffffffff'."""
    for key, value in (tags or {}).items():
        if key.upper() == "DURATION":
            try:
                h, m, s = value.split(":")
                return _float(int(h) * 3600 + int(m) * 60 + float(s))
            except ValueError:
                return None
    return None


def rotation_of(stream: dict[str, Any]) -> int:
    """Clockwise display rotation in {0, 90, 180, 270} from the display matrix (or legacy tag)."""
    degrees = None
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            # ffprobe reports the matrix's counter-clockwise angle; the decoder turns clockwise by it.
            degrees = -float(side["rotation"])
            break
    if degrees is None:
        tag = (stream.get("tags") or {}).get("rotate")
        if tag is not None:
            try:
                degrees = float(tag)
            except ValueError:
                degrees = None
    if degrees is None:
        return 0
    return int(round(degrees / 90.0)) * 90 % 360


def _ffprobe_json(path: str, cfg: ProbeConfig, extra: list[str], timeout: float) -> dict[str, Any]:
    # An absolute path is never read as an option (`-x`) or a protocol (`a:b.mp4`); URLs stay as they are.
    target = path if "://" in path else os.path.abspath(path)
    args = [cfg.ffprobe, "-v", "error", "-hide_banner", "-of", "json", *extra, "-i", safe_input(target)]
    result = run_media_tool(args, timeout, stage="probe", path=path, failed_class="not_video",
                            failed_what="ffprobe cannot read")
    try:
        return json.loads(result.stdout.decode("utf-8", "replace") or "{}")
    except ValueError:
        raise StageError("probe", "not_video", f"ffprobe gave no readable output for {path}") from None


def _scan_duration(path: str, cfg: ProbeConfig) -> float | None:
    """End time of the last video packet, by demuxing (not decoding) the whole stream."""
    data = _ffprobe_json(path, cfg, ["-select_streams", "v:0", "-show_entries", "packet=pts_time,duration_time"],
                         cfg.scan_timeout_s)
    end = None
    for packet in data.get("packets") or []:
        pts = _float(packet.get("pts_time")) or 0.0
        span = _float(packet.get("duration_time")) or 0.0
        if packet.get("pts_time") not in (None, "N/A"):
            end = max(end or 0.0, pts + span)
    return end


def _first_frame_time(path: str, cfg: ProbeConfig) -> float | None:
    """Time of the first presented video frame, by decoding the first packets.

    The stream's start_time is the first packet's timestamp, which is not always a shown frame: packets
    an edit list discards, B-frame reordering, negative starts. The smallest presentation time of the
    first decoded frames is what a player shows first. None when nothing decodes (the caller falls back
    on start_time; a broken file fails later, in decode, with its own class).
    """
    try:
        data = _ffprobe_json(path, cfg, ["-select_streams", "v:0", "-read_intervals", "%+#30",
                                         "-show_entries", "frame=pts_time,best_effort_timestamp_time"],
                             cfg.timeout_s)
    except StageError:
        return None
    times = [t for frame in data.get("frames") or []
             for t in [_time(frame.get("pts_time")) if frame.get("pts_time") not in (None, "N/A")
                       else _time(frame.get("best_effort_timestamp_time"))] if t is not None]
    return min(times) if times else None


def probe(path: str | os.PathLike, cfg: ProbeConfig | None = None) -> VideoInfo:
    cfg = cfg or ProbeConfig()
    path = os.fspath(path)
    if "://" not in path:
        file = Path(path)
        if not file.is_file():
            raise StageError("probe", "missing_file", f"{path} does not exist or is not a file")
        if file.stat().st_size == 0:
            raise StageError("probe", "empty_file", f"{path} is empty (0 bytes)")
    data = _ffprobe_json(path, cfg, ["-show_format", "-show_streams"], cfg.timeout_s)
    streams = data.get("streams") or []
    fmt = data.get("format") or {}
    videos = [s for s in streams if s.get("codec_type") == "video"
              and not (s.get("disposition") or {}).get("attached_pic")]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not streams or not fmt:
        raise StageError("probe", "not_video", f"{path} holds no media streams")
    if not videos:
        kinds = sorted({s.get("codec_type", "?") for s in streams})
        raise StageError("probe", "no_video_stream", f"{path} has no video stream (streams: {', '.join(kinds)})")
    video = videos[0]
    coded_w, coded_h = int(video.get("width") or 0), int(video.get("height") or 0)
    if coded_w <= 0 or coded_h <= 0:
        raise StageError("probe", "not_video", f"{path}: video stream has no frame size")
    rotation = rotation_of(video)
    width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
    fps = _ratio(video.get("avg_frame_rate")) or _ratio(video.get("r_frame_rate"))
    if fps > 1000:  # r_frame_rate of a VFR phone video can be the timebase (90000/1)
        fps = 0.0
    duration = (_float(fmt.get("duration")) or _float(video.get("duration"))
                or _tag_duration(video.get("tags")) or _tag_duration(fmt.get("tags")))
    if duration is None:
        duration = _scan_duration(path, cfg)
    if duration is None:
        raise StageError("probe", "no_duration", f"{path}: no duration in the container and no timed packets")
    n_frames = int(video["nb_frames"]) if str(video.get("nb_frames", "")).isdigit() else None
    if not fps and n_frames and duration:
        fps = n_frames / duration
    container_start = _time(fmt.get("start_time")) or 0.0
    stream_start = _time(video.get("start_time"))
    first_frame = _first_frame_time(path, cfg)
    video_start = first_frame if first_frame is not None else (
        stream_start if stream_start is not None else container_start)
    # The picture's end: the stream's own duration (mp4 track, Matroska per-stream tag, MPEG-TS packet
    # estimate) from its start, not the container's, which also covers audio running on past the picture.
    stream_duration = _float(video.get("duration")) or _tag_duration(video.get("tags"))
    if stream_duration is not None:
        video_end = (stream_start if stream_start is not None else container_start) + stream_duration
    else:
        video_end = container_start + duration
    size = int(fmt["size"]) if str(fmt.get("size", "")).isdigit() else 0
    bit_rate = int(fmt["bit_rate"]) if str(fmt.get("bit_rate", "")).isdigit() else None
    return VideoInfo(duration=duration, fps=fps, width=width, height=height, rotation=rotation,
                     video_codec=str(video.get("codec_name") or "unknown"),
                     audio_codec=str(audios[0].get("codec_name")) if audios else None,
                     has_audio=bool(audios), coded_width=coded_w, coded_height=coded_h,
                     format_name=str(fmt.get("format_name") or ""), n_frames=n_frames,
                     bit_rate=bit_rate, size_bytes=size, video_start=video_start, video_end=video_end,
                     container_start=container_start)
