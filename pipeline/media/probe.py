"""Probe stage: what a file holds (duration, fps, display size, rotation, codecs, audio) as a `VideoInfo`.

`probe(path, cfg) -> VideoInfo` or a `StageError("probe", error_class, message)`. `cfg.backend` picks how:
`pyav` (the default) opens the file in-process with PyAV (pipeline/media/pyav_probe.py: no process per
video), `ffprobe` runs ffprobe (this module), the reference the PyAV probe is tested against. Both give
the same facts by the same rules, and the same error classes:
- `empty_file`: zero bytes; `missing_file`: no such file;
- `not_video`: it cannot be read as media at all (a text file named .mp4, a truncated mp4 whose
  index is gone) or it has no decodable video stream (`no_video_stream` for audio-only files);
- `no_duration`: the duration cannot be found, not even by reading the packet timestamps;
- `probe_timeout`: the probe ran past `timeout_s` (ffprobe's process tree is killed, pipeline.media.proc;
  the PyAV probe checks its deadline between reads and interrupts blocking I/O).

Duration: the container's, else the video stream's, else a `DURATION` tag (Matroska), else the end of
the last video packet (one demux pass without decoding: WebM written without a duration, e.g. by a
browser recorder). Rotation comes from the display matrix side data (or the legacy `rotate` tag) and is
given as degrees clockwise in {0, 90, 180, 270}; `width`/`height` are the displayed size (swapped for 90
and 270), which is what ffmpeg's decoder outputs with its default autorotation.

Clock: `video_start` is the stream time of the first presented video frame (the frame times of the
first packets, decoded; the stream's start_time when none decodes), `video_end` the stream's start plus
its own duration (the container's end when the stream has none). Caption time 0 is `video_start`, and
`video_duration` (end - start) is the picture's extent that samples are placed in.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.errors import StageError
from pipeline.media.proc import run_media_tool, safe_input
from pipeline.media.video_info import (
    ProbeConfig,
    VideoInfo,
    build_info,
    clockwise,
    legacy_rotation,
    positive,
    ratio,
    tag_duration,
    timestamp,
)

__all__ = ["ProbeConfig", "VideoInfo", "probe", "rotation_of", "check_file"]


def rotation_of(stream: dict[str, Any]) -> int:
    """Clockwise display rotation in {0, 90, 180, 270} from the display matrix (or legacy tag)."""
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            # ffprobe reports the matrix's counter-clockwise angle; the decoder turns clockwise by it.
            return clockwise(float(side["rotation"]))
    return legacy_rotation((stream.get("tags") or {}).get("rotate"))


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
        pts = positive(packet.get("pts_time")) or 0.0
        span = positive(packet.get("duration_time")) or 0.0
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
             for t in [timestamp(frame.get("pts_time")) if frame.get("pts_time") not in (None, "N/A")
                       else timestamp(frame.get("best_effort_timestamp_time"))] if t is not None]
    return min(times) if times else None


def check_file(path: str, stage: str = "probe") -> None:
    """A local file must exist and not be empty (URLs are left to the reader)."""
    if "://" not in path:
        file = Path(path)
        if not file.is_file():
            raise StageError(stage, "missing_file", f"{path} does not exist or is not a file")
        if file.stat().st_size == 0:
            raise StageError(stage, "empty_file", f"{path} is empty (0 bytes)")


def probe(path: str | os.PathLike, cfg: ProbeConfig | None = None) -> VideoInfo:
    cfg = cfg or ProbeConfig()
    path = os.fspath(path)
    check_file(path)
    if cfg.backend == "pyav":
        from pipeline.media.pyav_probe import probe_pyav

        return probe_pyav(path, cfg)
    return probe_ffprobe(path, cfg)


def probe_ffprobe(path: str, cfg: ProbeConfig) -> VideoInfo:
    """`probe` by the ffprobe command (three runs at most: streams, first frames, a packet scan)."""
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
    duration = (positive(fmt.get("duration")) or positive(video.get("duration"))
                or tag_duration(video.get("tags")) or tag_duration(fmt.get("tags")))
    if duration is None:
        duration = _scan_duration(path, cfg)
    if duration is None:
        raise StageError("probe", "no_duration", f"{path}: no duration in the container and no timed packets")
    return build_info(
        coded_width=coded_w, coded_height=coded_h, rotation=rotation_of(video),
        avg_fps=ratio(video.get("avg_frame_rate")), base_fps=ratio(video.get("r_frame_rate")), duration=duration,
        n_frames=int(video["nb_frames"]) if str(video.get("nb_frames", "")).isdigit() else None,
        container_start=timestamp(fmt.get("start_time")) or 0.0, stream_start=timestamp(video.get("start_time")),
        stream_duration=positive(video.get("duration")) or tag_duration(video.get("tags")),
        first_frame=_first_frame_time(path, cfg), video_codec=str(video.get("codec_name") or "unknown"),
        audio_codec=str(audios[0].get("codec_name")) if audios else None,
        format_name=str(fmt.get("format_name") or ""),
        bit_rate=int(fmt["bit_rate"]) if str(fmt.get("bit_rate", "")).isdigit() else None,
        size_bytes=int(fmt["size"]) if str(fmt.get("size", "")).isdigit() else 0)
