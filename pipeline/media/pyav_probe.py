"""The probe in-process with PyAV (`probe.backend: pyav`): the same `VideoInfo` as ffprobe, no process.

One container is opened (libavformat reads the header and, for mp4, the index), the facts ffprobe prints
are read from the same fields (`build_info` in pipeline/media/video_info.py applies the shared rules),
and the first packets of the video stream are decoded for the time of the first presented frame and
the display matrix (FFmpeg attaches the stream's matrix to every decoded frame). A container with no
duration anywhere gets one demux pass (no decoding) for the end of its last packet, as with ffprobe.

Time limit: `timeout_s` covers the whole probe. Blocking I/O is interrupted by libavformat's interrupt
callback (`av.open(timeout=...)`), and the deadline is checked between packets; past it the probe raises
`probe_timeout`. `open_video` and `frame_seconds` are shared with the decoder (pipeline/media/pyav_decode.py).
"""
from __future__ import annotations

import os
import time
from fractions import Fraction
from typing import Any

from common.deps import require
from pipeline.errors import StageError
from pipeline.media.video_info import (
    ProbeConfig,
    VideoInfo,
    build_info,
    clockwise,
    legacy_rotation,
    positive,
    tag_duration,
)

# Like ffprobe's `-read_intervals %+#30`: the first presented frame is looked for among the frames of the
# first 30 packets. Decoders hand frames out in presentation order, so the first is the earliest; a few
# more are decoded in case a reorder buffer starts too small, then the search stops (each 720p frame costs
# milliseconds, and ffprobe decoding all 30 was a good part of its time).
FIRST_PACKETS = 30
FIRST_FRAMES = 4


def load_av():
    return require("av", "av", why="reading videos in-process (probe.backend / decode.backend: pyav)")


def open_video(path: str, timeout_s: float, *, stage: str, failed_class: str, started: float):
    """(container, video stream) of `path`, or a StageError of `stage`: `<stage>_timeout` past the time
    limit, `no_video_stream` (probe only) when there is none, else `failed_class` (ffmpeg cannot read it)."""
    av = load_av()
    # An absolute path is never read as a protocol (`a:b.mp4`) or an option; URLs stay as they are.
    target = path if "://" in path else os.path.abspath(path)
    try:
        container = av.open(target, mode="r", timeout=(timeout_s, timeout_s), metadata_errors="replace")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        check_deadline(started, timeout_s, stage, path)
        raise StageError(stage, failed_class, f"cannot read {path}: {exc}"[:500]) from None
    try:
        check_deadline(started, timeout_s, stage, path)
        return container, video_stream(container, path, stage, failed_class)
    except BaseException:
        container.close()
        raise


def video_stream(container: Any, path: str, stage: str, failed_class: str):
    """The first video stream that is not a cover picture (the one ffmpeg's `v:0` with pictures dropped means)."""
    av = load_av()
    if not container.streams:
        raise StageError(stage, failed_class, f"{path} holds no media streams")
    attached = int(av.stream.Disposition.attached_pic)
    videos = [s for s in container.streams.video if not int(s.disposition) & attached]
    if not videos:
        kinds = sorted({s.type for s in container.streams})
        raise StageError(stage, "no_video_stream" if stage == "probe" else failed_class,
                         f"{path} has no video stream (streams: {', '.join(kinds)})")
    return videos[0]


def check_deadline(started: float, timeout_s: float, stage: str, path: str) -> None:
    if time.monotonic() - started > timeout_s:
        raise StageError(stage, f"{stage}_timeout", f"{stage} of {path} ran longer than {timeout_s:g}s")


def frame_seconds(frame: Any, time_base: float) -> float | None:
    """A decoded frame's presentation time in stream seconds (`time_base` as a float: Fraction arithmetic
    per frame costs more than the decoding of a small frame); its packet's dts when it has no pts (as
    ffmpeg's best-effort timestamp falls back), None when it has neither."""
    ticks = frame.pts if frame.pts is not None else frame.dts
    return ticks * time_base if ticks is not None else None


def _seconds(ticks: int | None, time_base: Fraction | None) -> float | None:
    # To the microsecond, as ffprobe prints times: both probes then give equal VideoInfos.
    return round(float(ticks * time_base), 6) if ticks is not None and time_base else None


def _codec_name(stream: Any) -> str:
    """The codec's own name (`h264`, `av1`), not the decoder's (`libdav1d`), as ffprobe's codec_name."""
    context = stream.codec_context
    try:
        return str(context.codec.canonical_name) if context is not None else "unknown"
    except Exception:  # noqa: BLE001 - a stream without a usable codec still has a name for the record
        return "unknown"


def _first_frames(container: Any, stream: Any, started: float, cfg: ProbeConfig, path: str):
    """(time of the first presented frame, clockwise rotation from its display matrix), each None when
    no frame decodes. Frames an edit list discards are dropped by the decoder itself, as in a player."""
    av = load_av()
    context = stream.codec_context
    context.thread_count = 1
    times: list[float] = []
    rotation = None
    packets = 0
    try:
        for packet in container.demux(stream):
            check_deadline(started, cfg.timeout_s, "probe", path)
            if packet.size:
                packets += 1
            try:
                frames = context.decode(packet)
            except av.FFmpegError:
                continue  # a broken packet: ffprobe skips it too
            for frame in frames:
                if rotation is None:
                    rotation = clockwise(frame.rotation or 0)
                seconds = frame_seconds(frame, float(stream.time_base))
                if seconds is not None:
                    times.append(seconds)
            if len(times) >= FIRST_FRAMES or packets >= FIRST_PACKETS:
                break
    except av.FFmpegError:
        pass  # a read error after the header: what decoded so far stands; decode fails later if it must
    return (round(min(times), 6) if times else None), rotation


def _scan_duration(path: str, cfg: ProbeConfig) -> float | None:
    """End time of the last video packet, by demuxing (not decoding) the whole stream (own time limit)."""
    av = load_av()
    started = time.monotonic()
    container, stream = open_video(path, cfg.scan_timeout_s, stage="probe", failed_class="not_video",
                                   started=started)
    end = None
    try:
        for packet in container.demux(stream):
            check_deadline(started, cfg.scan_timeout_s, "probe", path)
            pts = _seconds(packet.pts, stream.time_base)
            if pts is not None:
                end = max(end or 0.0, max(pts, 0.0) + (_seconds(packet.duration, stream.time_base) or 0.0))
    except av.FFmpegError:
        pass  # a read error mid-file (a cut-short download): the packets read so far give the end
    finally:
        container.close()
    return end


def probe_pyav(path: str, cfg: ProbeConfig) -> VideoInfo:
    started = time.monotonic()
    container, stream = open_video(path, cfg.timeout_s, stage="probe", failed_class="not_video", started=started)
    try:
        context = stream.codec_context
        coded_w, coded_h = (context.width, context.height) if context is not None else (0, 0)
        if coded_w <= 0 or coded_h <= 0:
            raise StageError("probe", "not_video", f"{path}: video stream has no frame size")
        duration = (positive(_seconds(container.duration, Fraction(1, 1_000_000)))
                    or positive(_seconds(stream.duration, stream.time_base))
                    or tag_duration(stream.metadata) or tag_duration(container.metadata))
        if duration is None:
            duration = _scan_duration(path, cfg)
        if duration is None:
            raise StageError("probe", "no_duration", f"{path}: no duration in the container and no timed packets")
        first_frame, rotation = _first_frames(container, stream, started, cfg, path)
        if rotation is None:
            rotation = legacy_rotation(stream.metadata.get("rotate"))
        audios = list(container.streams.audio)
        return build_info(
            coded_width=coded_w, coded_height=coded_h, rotation=rotation,
            avg_fps=float(stream.average_rate or 0), base_fps=float(stream.base_rate or 0), duration=duration,
            n_frames=stream.frames or None,
            container_start=_seconds(container.start_time, Fraction(1, 1_000_000)) or 0.0,
            stream_start=_seconds(stream.start_time, stream.time_base),
            stream_duration=positive(_seconds(stream.duration, stream.time_base)) or tag_duration(stream.metadata),
            first_frame=first_frame, video_codec=_codec_name(stream),
            audio_codec=_codec_name(audios[0]) if audios else None, format_name=str(container.format.name or ""),
            bit_rate=container.bit_rate or None, size_bytes=max(int(container.size or 0), 0))
    finally:
        container.close()
