"""Decode stage: only the frames a sample needs, resized and JPEG-encoded; audio for ASR.

`decode_video(path, info, requests, cfg) -> [DecodedFrames | StageError]` decodes the frames of every
sample of one video (one list of times per sample); `decode_frames(path, info, times, cfg)` one sample.
Each returns one JPEG per requested time: the first frame shown at or after that time (a time past the
last frame gets the last frame of the span). Times are on the caption clock: 0 is the video's first
presented frame (`VideoInfo.clock_zero` in stream time; not 0 for MPEG-TS recordings, edit lists,
`-itsoffset`, negative starts), as players and caption files count; the reported times
(`DecodedFrames.times`, the shard's `frames.decoded_times`) are on the same clock. `check_frame_times`
(pipeline/media/frames.py) tells whether the frames are the requested ones (within one frame interval,
no frame repeated across distinct times).

`cfg.backend` picks the decoder:
- `pyav` (default): in-process, one open container per video, all its samples' frames in one forward
  pass with seeks across gaps, each frame converted once (pipeline/media/pyav_decode.py).
- `ffmpeg`: the ffmpeg command, one process per sample (this module), the reference the PyAV decoder
  is tested against (tests/pipeline/test_frame_times.py runs both).

The ffmpeg decoder: a requested time t is decoded at stream time clock_zero + t, with `-copyts` so the
frames keep their stream timestamps whatever the container's start, and the reported times are mapped
back. A seek that lands after the requested time (MPEG-TS seeks by bytes) is detected from the first
frame's time and redone from further back (SEEK_BACKOFF_S), in both modes.
Two ways, chosen per sample (`mode`):
- `span`: one ffmpeg process seeks (`-ss` before `-i`: demuxer seek to the keyframe before the span,
  then exact) to the span start, reads only the span (`-t` as an input option), and a `select` filter
  keeps just the frames at the requested times; only those are scaled and converted. Decodes the span
  once: right for TVTS samples (16 frames over 15-23 s).
- `seek`: one short ffmpeg process per frame (`-ss t -i ... -frames:v 1`): right when frames are far
  apart (e.g. one window over a whole long video), where decoding everything between them would waste
  work. `auto` picks `seek` when requested frames are more than `seek_min_gap_s` apart on average.
Either way nothing outside the requested span is decoded, so memory and time do not grow with the
length of the video. ffmpeg's default autorotation applies the display matrix (pipeline/media/probe.py gives
the displayed size); frames are scaled so the short side is `short_side`, read as raw RGB from a pipe and
encoded with Pillow (`jpeg_quality`). Every ffmpeg call goes through pipeline.media.proc (argument list, hard
timeout that kills the process tree).


Errors: StageError("decode", "decode_timeout" | "decode_failed" | "decode_no_frames" | "tool_missing");
the decode stage adds "frame_time_mismatch" (check_frame_times) for samples it drops.
"""
from __future__ import annotations

import io
import math
import os
import re
from typing import Sequence

from common.deps import require
from pipeline.errors import StageError
from pipeline.media.frames import (
    FRAME_CHECK_EPSILON_S,
    SEEK_BACKOFF_S,
    TIME_TOLERANCE_S,
    VFR_GAP_S,
    DecodeConfig,
    DecodedFrames,
    check_frame_times,
    output_size,
)
from pipeline.media.proc import run_media_tool
from pipeline.media.video_info import VideoInfo

__all__ = ["DecodeConfig", "DecodedFrames", "check_frame_times", "choose_mode", "decode_frames", "decode_video",
           "output_size", "FRAME_CHECK_EPSILON_S", "SEEK_BACKOFF_S", "TIME_TOLERANCE_S", "VFR_GAP_S"]

PTS_TIME = re.compile(rb"\bn:\s*\d+\s+pts:\s*-?\d+\s+pts_time:(-?[0-9.eE+-]+)")


def _local(path: str | os.PathLike) -> str:
    """An input name ffmpeg reads as this file, never as an option or a protocol (`-x`, `a:b`)."""
    text = os.fspath(path)
    if "://" in text:
        return text
    return os.path.abspath(text)


def _ffmpeg_args(cfg: DecodeConfig, stream) -> list[str]:
    # Global options first (ffmpeg ignores trailing ones); -v info so showinfo reaches stderr.
    return stream.compile(cmd=[cfg.ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-v", "info"])


def _run_ffmpeg(args: list[str], cfg: DecodeConfig, path: str, timeout: float) -> bytes:
    return run_media_tool(args, timeout, stage="decode", path=path, failed_class="decode_failed",
                          failed_what="ffmpeg failed on")


def _split_frames(raw: bytes, width: int, height: int) -> list[bytes]:
    frame_bytes = width * height * 3
    count = len(raw) // frame_bytes
    return [raw[i * frame_bytes:(i + 1) * frame_bytes] for i in range(count)]


def _encode_jpegs(frames: Sequence[bytes], width: int, height: int, quality: int) -> list[bytes]:
    image_mod = require("PIL.Image", "pillow", why="JPEG-encoding frames")
    out = []
    for frame in frames:
        buffer = io.BytesIO()
        image_mod.frombuffer("RGB", (width, height), frame, "raw", "RGB", 0, 1).save(
            buffer, format="JPEG", quality=quality)
        out.append(buffer.getvalue())
    return out


def choose_mode(times: Sequence[float], cfg: DecodeConfig) -> str:
    if cfg.mode != "auto":
        return cfg.mode
    if len(times) < 2:
        return "seek"
    gap = (max(times) - min(times)) / (len(times) - 1)
    return "seek" if gap > cfg.seek_min_gap_s else "span"


def _seek_arg(info: VideoInfo, stream_time: float) -> str:
    # ffmpeg's input -ss counts from the container's start_time (it adds it before seeking, and its
    # accurate-seek trim uses the same point, -copyts or not); the container may start before the video.
    return f"{max(0.0, stream_time - info.container_start):.6f}"


def _span_pass(path: str, info: VideoInfo, times: list[float], size: tuple[int, int], cfg: DecodeConfig,
               back: float) -> tuple[list[bytes], list[float], str]:
    ffmpeg = require("ffmpeg", "ffmpeg-python", why="building ffmpeg commands")
    start = min(times) - 0.01 - back
    seek = _seek_arg(info, start)
    length = max(times) - start + 1.0  # one second of slack so the last request always has a frame
    rel = sorted({round(t - TIME_TOLERANCE_S, 6) for t in times})
    # prev_pts*TB is the previous decoded frame's time (NAN for the first one, and NAN >= x is false):
    # a frame is kept when a requested time lies in (previous frame, this frame].
    expr = "+".join(f"gte(t,{r:.6f})*not(gte(prev_pts*TB,{r:.6f}))" for r in rel)
    stream = ffmpeg.input(_local(path), ss=seek, t=f"{length:.6f}", threads=cfg.threads, copyts=None)
    stream = (stream.video.filter("select", expr).filter("showinfo")
              .filter("scale", size[0], size[1], flags=cfg.scale_flags))
    out = ffmpeg.output(stream, "pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough", an=None, sn=None)
    result = _run_ffmpeg(_ffmpeg_args(cfg, out), cfg, path, cfg.timeout_s)
    frames = _split_frames(result.stdout, *size)
    pts = [float(m.group(1)) for m in PTS_TIME.finditer(result.stderr or b"")]
    if len(pts) != len(frames):  # showinfo must describe every frame we got; otherwise trust nothing
        pts = pts[: len(frames)] if len(pts) > len(frames) else pts + [math.nan] * (len(frames) - len(pts))
    return frames, pts, seek


def _decode_span(path: str, info: VideoInfo, times: list[float], size: tuple[int, int],
                 cfg: DecodeConfig) -> tuple[list[bytes], list[float], int]:
    """One process: seek to the first time, read up to the last, keep the first frame at/after each time.

    `times` are stream times. -copyts keeps the frames' own timestamps, so the select filter's `t` and
    showinfo's pts_time are stream times too, whatever the container's or the stream's start. When the
    first frame kept is later than the first request by more than a frame, the seek overshot (MPEG-TS)
    and the span is read again from further back (SEEK_BACKOFF_S).
    """
    interval = 1.0 / info.fps if info.fps and info.fps > 0 else 1.0
    processes = 0
    for back in SEEK_BACKOFF_S:
        frames, pts, seek = _span_pass(path, info, times, size, cfg, back)
        processes += 1
        if not frames or (math.isfinite(pts[0]) and pts[0] <= min(times) + interval) or seek == "0.000000":
            break
    if not frames:
        raise StageError("decode", "decode_no_frames",
                         f"no frame of {path} at {min(times):.3f}..{max(times):.3f}s (past the end of the video?)")
    chosen, chosen_times = [], []
    for t in times:
        index = next((i for i, p in enumerate(pts) if not math.isnan(p) and p >= t - TIME_TOLERANCE_S - 1e-6), None)
        if index is None:
            # Past the last frame read: the last frame of the span stands in (the video ended early);
            # its real time is reported, so check_frame_times sees the gap.
            index = len(frames) - 1
        chosen.append(frames[index])
        chosen_times.append(pts[index])
    return chosen, chosen_times, processes


def _decode_seek(path: str, info: VideoInfo, times: list[float], size: tuple[int, int],
                 cfg: DecodeConfig) -> tuple[list[bytes], list[float], int]:
    """One short process per requested (stream) time: seek, decode one frame (-copyts: stream times)."""
    ffmpeg = require("ffmpeg", "ffmpeg-python", why="building ffmpeg commands")
    interval = 1.0 / info.fps if info.fps and info.fps > 0 else 1.0
    chosen, chosen_times, last = [], [], None
    processes = 0
    for t in times:
        got, seek = None, None
        target = t - TIME_TOLERANCE_S
        for back in SEEK_BACKOFF_S:
            if seek == "0.000000":
                break  # the last try already read from the start of the file
            seek = _seek_arg(info, target - back)
            stream = ffmpeg.input(_local(path), ss=seek, threads=cfg.threads,
                                  copyts=None)
            # select: the first frame at/after the request, also when the seek point is earlier than it.
            stream = (stream.video.filter("select", f"gte(t,{target:.6f})").filter("showinfo")
                      .filter("scale", size[0], size[1], flags=cfg.scale_flags))
            out = ffmpeg.output(stream, "pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough",
                                an=None, sn=None, **{"frames:v": 1})
            result = _run_ffmpeg(_ffmpeg_args(cfg, out), cfg, path, cfg.timeout_s)
            processes += 1
            frames = _split_frames(result.stdout, *size)
            pts = [float(m.group(1)) for m in PTS_TIME.finditer(result.stderr or b"")]
            if not frames:
                break  # past the last frame: seeking earlier cannot help
            got = (frames[0], pts[0] if pts else math.nan)
            if math.isfinite(got[1]) and got[1] <= t + interval:
                break  # the frame shown at t (a later one means the seek overshot it)
        if got is not None:
            last = got
        elif last is None:
            raise StageError("decode", "decode_no_frames", f"no frame of {path} at {t:.3f}s (past the end?)")
        chosen.append(last[0])
        chosen_times.append(last[1])
    return chosen, chosen_times, processes


def decode_video(path: str | os.PathLike, info: VideoInfo, requests: Sequence[Sequence[float]],
                 cfg: DecodeConfig | None = None) -> list[DecodedFrames | StageError]:
    """The frames of each sample of one video (`requests`: one list of caption-clock times per sample),
    in order: each a DecodedFrames or the StageError that sample got (e.g. `decode_no_frames`). A failure
    of the whole video (unreadable, past its time limit) is raised instead."""
    cfg = cfg or DecodeConfig()
    if cfg.backend == "pyav":
        from pipeline.media.pyav_decode import decode_video_pyav

        return decode_video_pyav(path, info, requests, cfg)
    out: list[DecodedFrames | StageError] = []
    for times in requests:
        try:
            out.append(decode_frames_ffmpeg(path, info, times, cfg))
        except StageError as exc:
            out.append(exc)
    return out


def decode_frames(path: str | os.PathLike, info: VideoInfo, times: Sequence[float],
                  cfg: DecodeConfig | None = None) -> DecodedFrames:
    """One sample's JPEGs of the frames at `times` (seconds on the caption clock: 0 = the first presented
    frame, `info.clock_zero` in stream time), resized per `cfg`; `DecodedFrames.times` are on the same clock."""
    if not times:
        raise ValueError("decode_frames needs at least one time")
    (result,) = decode_video(path, info, [times], cfg)
    if isinstance(result, StageError):
        raise result
    return result


def decode_frames_ffmpeg(path: str | os.PathLike, info: VideoInfo, times: Sequence[float],
                         cfg: DecodeConfig | None = None) -> DecodedFrames:
    """`decode_frames` by the ffmpeg command: one process per sample (`span`) or per frame (`seek`)."""
    cfg = cfg or DecodeConfig()
    path = os.fspath(path)
    times = [float(t) for t in times]
    if not times:
        raise ValueError("decode_frames needs at least one time")
    size = output_size(info.width, info.height, cfg)
    mode = choose_mode(times, cfg)
    zero = info.clock_zero
    stream_times = [zero + t for t in times]
    if mode == "span":
        frames, used, processes = _decode_span(path, info, stream_times, size, cfg)
    else:
        frames, used, processes = _decode_seek(path, info, stream_times, size, cfg)
    jpegs = _encode_jpegs(frames, size[0], size[1], cfg.jpeg_quality)
    return DecodedFrames(jpegs=jpegs, times=[round(u - zero, 3) for u in used], width=size[0], height=size[1],
                         processes=processes)
