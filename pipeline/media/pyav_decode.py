"""In-process decode with PyAV (`decode.backend: pyav`): one open container per video, one forward pass.

`decode_video_pyav(path, info, requests, cfg) -> [DecodedFrames | StageError]` takes the frame times of
every sample of a video (caption clock, as in pipeline/media/decode.py) and returns each sample's frames
with the same meaning as the ffmpeg decoder: for each time, the first frame shown at or after it; past
the last frame, the last frame stands in with its real time (check_frame_times refuses it); a sample
with no frame at or after any of its times is `decode_no_frames`.

How the work is kept to what the frames need:
- All samples' times are gathered, mapped to stream time (`clock_zero + t`), sorted and made unique, and
  walked once, front to back, in one open container. A frame that several samples (overlapping spans)
  ask for is converted and encoded once and its JPEG shared.
- Between two wanted times the reader either seeks or reads forward. It seeks when the container's index
  (mp4, Matroska cues) has a keyframe after everything read so far and before the wanted time, or, with
  no such index, when the gap is longer than `seek_gap_s`. Reading forward, packets are demuxed but held
  back, not decoded, until the wanted time is near: a keyframe before the wanted time makes everything
  held before it useless (it is dropped, the decoder restarts at the keyframe), so a gap is never decoded
  past its last keyframe. The packets held are compressed and capped (LOOKAHEAD_BYTES), and released
  packets are decoded one at a time, each frame handed on (or dropped) before the next is decoded, so
  memory does not grow with the video or its GOP length.
- Packets before the wanted time are decoded with `skip_frame = NONREF`: frames no other frame refers to
  (most B-frames) are not decoded at all, since nothing shows them and nothing needs them.
- A seek that lands after the wanted time (MPEG-TS seeks by bytes; an index keyframe whose presentation
  time is later than its decode time) is seen from the first frame it gives and redone from further back
  (SEEK_BACKOFF_S), as in the ffmpeg decoder.
- Only the frames used are converted: swscale (`frame.reformat`, the decoder's own scaler, interpolation
  `scale_flags`, colour matrix from the frame) to RGB at the output size, turned upright by the display
  rotation (numpy, a copy of the small picture), and JPEG-encoded by simplejpeg (libjpeg-turbo, 4:2:0;
  bench/pipeline.py measures it against Pillow). Decoder, scaler and encoder are deterministic, so two
  runs write the same bytes.

Errors: the file cannot be opened -> `decode_failed` (raised: the whole video); the pass runs past
`timeout_s` per sample -> `decode_timeout` (raised; blocking reads are interrupted, the deadline is
checked between packets). A broken packet is skipped, as the ffmpeg command does; a read error ends the
stream where it is (a file cut short), unless nothing was read yet (`decode_failed`).
"""
from __future__ import annotations

import bisect
import math
import os
import time
from collections import deque
from fractions import Fraction
from typing import Any, Sequence

from common.deps import require
from pipeline.errors import StageError
from pipeline.media.frames import (
    SCALE_FLAGS,
    SEEK_BACKOFF_S,
    TIME_TOLERANCE_S,
    DecodeConfig,
    DecodedFrames,
    output_size,
)
from pipeline.media.pyav_probe import check_deadline, frame_seconds, load_av, open_video
from pipeline.media.video_info import VideoInfo

# Compressed packets held back while reading forward to the next keyframe (bounded memory for videos
# with very long GOPs: past this, what is held is decoded and the reading goes on).
LOOKAHEAD_BYTES = 32 * 1024 * 1024
# A seek aims this far before the wanted time: an index gives a keyframe's decode time, and its
# presentation time is later by the reorder delay (a few frames), which must not pass the wanted time.
SEEK_LEAD_S = 0.25
# No frames are skipped this close to the end of the picture: past the last frame the last frame
# stands in for later times, and it must be the real last frame, not the last reference frame.
END_GUARD_S = 1.0
# Below the wanted time by at most this, a time counts as "at" it (float rounding of timebases).
EPS = 1e-6


class _Reader:
    """Frames of one video stream in presentation order, decoding only what the next wanted time needs."""

    def __init__(self, container: Any, stream: Any, info: VideoInfo, cfg: DecodeConfig, deadline):
        self.av = load_av()
        self.container, self.stream = container, stream
        self.ticks: Fraction = stream.time_base
        self.time_base = float(stream.time_base)  # floats per packet: Fraction arithmetic costs more than decoding
        self.deadline = deadline
        self.context = stream.codec_context
        self.context.thread_count = cfg.threads
        if cfg.threads != 1:
            self.context.thread_type = "AUTO"  # frame threads too; bit-exact, so the bytes do not change
        self.skip_mode = "DEFAULT"
        self.skip_limit = (info.video_end if info.video_end is not None else math.inf) - END_GUARD_S
        self.start = info.clock_zero
        self.seek_gap = cfg.seek_gap_s
        self.keyframes, self.index_complete = _indexed_keyframes(stream)
        self.can_seek = True
        self.seek_target = -math.inf  # where the last seek aimed (stream seconds)
        self.seeks = 0
        self.frames_decoded = 0
        self.packets_read = 0
        self._reset()

    def _reset(self) -> None:
        self.packets = self.container.demux(self.stream)
        self.held: list[Any] = []     # packets read, not yet decoded (all before the wanted time)
        self.held_bytes = 0
        self.queue: deque = deque()   # packets released for decoding, in order (None: drain at the end)
        self.restart = False          # held[0] is a keyframe: flush the decoder before decoding them
        self.ready: deque = deque()   # (time, frame) decoded, not yet handed out
        self.eof = False
        self.horizon: float | None = None  # the latest packet time read since the open or the last seek
        self.seeked = False           # set on a seek until the first frame after it is handed out

    # -- where to read from -------------------------------------------------------------------------
    def approach(self, want: float) -> None:
        """Seek towards `want` when that skips reading or decoding that going forward would do."""
        if not self.can_seek:
            return
        horizon = self.horizon if self.horizon is not None else -math.inf
        if self.keyframes:
            at = bisect.bisect_right(self.keyframes, want - SEEK_LEAD_S) - 1
            if at >= 0 and self.keyframes[at] > horizon + EPS and not (self.horizon is None and at == 0):
                self.seek(self.keyframes[at])
                return
            if self.index_complete:
                return  # every keyframe is listed: none lies ahead before `want`, so read on
        if want - (self.horizon if self.horizon is not None else self.start) > self.seek_gap:
            self.seek(want - SEEK_LEAD_S)

    def seek(self, target: float) -> bool:
        """Seek to the keyframe at or before `target` (stream seconds); False when the container cannot."""
        ticks = math.floor(Fraction(target) / self.ticks)
        try:
            self.container.seek(ticks, stream=self.stream, backward=True)  # also flushes the decoder
        except self.av.FFmpegError:
            self.can_seek = False
            return False
        self.seeks += 1
        self._reset()
        self.skip_mode = None  # the decoder was flushed: set the skip mode again before the next packet
        self.horizon = self.seek_target = target
        self.seeked = True
        return True

    # -- frames out -----------------------------------------------------------------------------------
    def next_frame(self, want: float) -> tuple[float, Any] | None:
        """The next frame (time, frame) in presentation order; frames before `want` may never be decoded.
        None at the end of the stream."""
        while not self.ready:
            if self.queue:
                # One packet at a time: a GOP of held packets decoded at once would keep all its
                # reference frames alive together (tens of MB at 720p) before the caller drops them.
                self._decode(self.queue.popleft(), want)
                continue
            if self.eof:
                return None
            self.deadline()
            packet = self._read()
            if packet is None or not packet.size:  # the end (or PyAV's empty flush packet)
                self._release(None)  # None: drain the decoder's delayed frames
                self.eof = True
                continue
            pts = _seconds(packet.pts, self.time_base)
            seen = pts if pts is not None else _seconds(packet.dts, self.time_base)
            if seen is not None:
                self.horizon = seen if self.horizon is None else max(self.horizon, seen)
            if pts is not None and pts < want - EPS:
                if packet.is_keyframe:
                    # Everything held or still in the decoder only leads to frames before this keyframe,
                    # which is before `want`: start over from it.
                    self.held, self.held_bytes, self.restart = [packet], packet.size, True
                    continue
                if self.held_bytes + packet.size <= LOOKAHEAD_BYTES:
                    self.held.append(packet)
                    self.held_bytes += packet.size
                    continue
            self._release(packet)
        return self.ready.popleft()

    def _release(self, packet: Any) -> None:
        """Queue the held packets, then `packet`, for decoding (the wanted time is near, or the end)."""
        if self.restart:
            self.context.flush_buffers()  # what it holds is older than the keyframe held[0]
            self.restart = False
        self.queue.extend(self.held)
        self.queue.append(packet)
        self.held, self.held_bytes = [], 0

    def _read(self):
        try:
            packet = next(self.packets, None)
        except self.av.FFmpegError as exc:
            if not self.packets_read:
                raise StageError("decode", "decode_failed", f"cannot read {self.container.name}: {exc}"[:500]) from None
            return None  # a file cut short: the stream ends where the data does, as with ffmpeg
        if packet is not None and packet.size:
            self.packets_read += 1
        return packet

    def _decode(self, packet: Any, want: float) -> None:
        pts = _seconds(packet.pts, self.time_base) if packet is not None else None
        # A frame before `want` that no other frame refers to is never shown and never needed.
        skip = "NONREF" if pts is not None and pts < want - EPS and pts < self.skip_limit else "DEFAULT"
        if skip != self.skip_mode:
            self.context.skip_frame = skip
            self.skip_mode = skip
        try:
            frames = self.context.decode(packet)
        except self.av.FFmpegError:
            return  # a broken packet (or a decoder already drained): skipped, as the ffmpeg command does
        for frame in frames:
            self.frames_decoded += 1
            seconds = frame_seconds(frame, self.time_base)
            if seconds is not None:
                self.ready.append((seconds, frame))


def _seconds(ticks: int | None, time_base: float) -> float | None:
    return ticks * time_base if ticks is not None else None


def _indexed_keyframes(stream: Any) -> tuple[list[float], bool]:
    """(sorted keyframe times of the container's index, whether the index lists every packet).

    mp4 lists every sample (so "no keyframe listed in a gap" means there is none); Matroska cues list
    some keyframes; MPEG-TS and cue-less WebM list none when opened (the gap rule decides there).
    """
    time_base = float(stream.time_base)
    try:
        entries = stream.index_entries
        times, every = [], False
        for entry in entries:
            if entry.is_keyframe and not entry.is_discard:
                times.append(entry.timestamp * time_base)
            else:
                every = True
    except Exception:  # noqa: BLE001 - no index is a normal case: read forward
        return [], False
    return sorted(set(times)), every and bool(times)


class _Encoder:
    """A decoded frame -> JPEG bytes: scaled by swscale to the output size, upright, libjpeg-turbo."""

    def __init__(self, info: VideoInfo, cfg: DecodeConfig):
        self.simplejpeg = require("simplejpeg", "simplejpeg", why="JPEG-encoding frames (decode.backend: pyav)")
        self.np = require("numpy")
        self.width, self.height = output_size(info.width, info.height, cfg)
        # swscale works on the coded picture; the display rotation is applied after, on the small one.
        self.coded = (self.height, self.width) if info.rotation in (90, 270) else (self.width, self.height)
        self.turns = {0: 0, 90: -1, 180: 2, 270: 1}[info.rotation]  # np.rot90: -1 is a clockwise quarter
        self.interpolation = SCALE_FLAGS[cfg.scale_flags]
        self.quality = cfg.jpeg_quality
        self.encoded = 0

    def __call__(self, frame: Any) -> bytes:
        rgb = frame.reformat(*self.coded, format="rgb24", interpolation=self.interpolation, threads=1).to_ndarray()
        if self.turns:
            rgb = self.np.ascontiguousarray(self.np.rot90(rgb, self.turns))
        self.encoded += 1
        return self.simplejpeg.encode_jpeg(rgb, quality=self.quality, colorspace="RGB", colorsubsampling="420")


def _pick(reader: _Reader, targets: list[float], encode: _Encoder) -> dict[float, tuple[float, Any]]:
    """Stream time wanted -> (stream time of the frame used, its JPEG, or a `_StandIn` for the times past
    the last frame)."""
    picked: dict[float, tuple[float, Any]] = {}
    last: tuple[float, Any] | None = None      # the latest frame seen, for times past the end
    jpeg_of: dict[float, bytes] = {}           # frame time -> JPEG, for the frames already encoded
    i, approached, backoff = 0, -1, 0
    while i < len(targets):
        want = targets[i] - TIME_TOLERANCE_S
        if approached != i:
            reader.approach(want)
            approached, backoff = i, 0
        got = reader.next_frame(want)
        if got is None:
            break
        seconds, frame = got
        if reader.seeked:
            reader.seeked = False
            if seconds > want + EPS and backoff + 1 < len(SEEK_BACKOFF_S) and reader.seek_target > reader.start:
                # The seek landed after the wanted time: the frame shown at it may lie before this one.
                backoff += 1
                if reader.seek(max(reader.start, want - SEEK_LEAD_S - SEEK_BACKOFF_S[backoff])):
                    continue
        last = (seconds, frame)
        if seconds < want - EPS:
            continue
        if seconds not in jpeg_of:
            jpeg_of[seconds] = encode(frame)
        while i < len(targets) and seconds >= targets[i] - TIME_TOLERANCE_S - EPS:
            picked[targets[i]] = (seconds, jpeg_of[seconds])
            i += 1
    if i < len(targets) and last is not None:
        # Past the last frame: it stands in, with its real time, so the check sees the gap. It is encoded
        # only for a sample that also has real frames (a sample wholly past the end is refused anyway).
        seconds, frame = last
        stand_in = _StandIn(seconds, jpeg_of.get(seconds), frame, encode)
        for target in targets[i:]:
            picked[target] = (seconds, stand_in)
    return picked


class _StandIn:
    """The last frame, encoded when a sample that also has real frames asks for it."""

    def __init__(self, seconds: float, jpeg: bytes | None, frame: Any, encode: _Encoder):
        self.seconds, self.jpeg, self.frame, self.encode = seconds, jpeg, frame, encode

    def get(self) -> bytes:
        if self.jpeg is None:
            self.jpeg, self.frame = self.encode(self.frame), None
        return self.jpeg


def decode_video_pyav(path: str | os.PathLike, info: VideoInfo, requests: Sequence[Sequence[float]],
                      cfg: DecodeConfig) -> list[DecodedFrames | StageError]:
    path = os.fspath(path)
    started = time.monotonic()
    budget = cfg.timeout_s * max(1, len(requests))

    def deadline() -> None:
        check_deadline(started, budget, "decode", path)

    zero = info.clock_zero
    wanted = [[zero + float(t) for t in times] for times in requests]
    targets = sorted({t for times in wanted for t in times})
    encode = _Encoder(info, cfg)
    if not targets:
        return [_no_frames(path, times) for times in requests]
    container, stream = open_video(path, budget, stage="decode", failed_class="decode_failed", started=started)
    try:
        picked = _pick(_Reader(container, stream, info, cfg, deadline), targets, encode)
        out: list[DecodedFrames | StageError] = []
        for times, stream_times in zip(requests, wanted):
            used = [picked.get(t) for t in stream_times]
            if not stream_times or all(u is None or isinstance(u[1], _StandIn) for u in used):
                out.append(_no_frames(path, times))
                continue
            out.append(DecodedFrames(jpegs=[u[1].get() if isinstance(u[1], _StandIn) else u[1] for u in used],
                                     times=[round(u[0] - zero, 3) for u in used],
                                     width=encode.width, height=encode.height, processes=0))
        return out
    finally:
        container.close()


def _no_frames(path: str, times: Sequence[float]) -> StageError:
    return StageError("decode", "decode_no_frames", f"no frame of {path} at {min(times, default=0):.3f}.."
                      f"{max(times, default=0):.3f}s (past the end of the video?)")
