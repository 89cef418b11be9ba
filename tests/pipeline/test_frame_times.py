"""Frames come from the times the sample says (caption clock: 0 = the first presented frame).

The inputs are generated with ffmpeg so that each picture encodes its own frame number (10 white/black
blocks = 10 bits): a decoded JPEG tells which source frame it is, not just which time ffmpeg reported.
Each container shifts the clock a different way: MPEG-TS `-output_ts_offset`, `-itsoffset` on the video
(the stream starts after the container), an edit list (`-ss` with `-c copy`), audio running on 10 s
after the picture, and an mp4 cut short mid-download. Every test runs on both decoders: the in-process
PyAV one (the default) and the ffmpeg command (the reference), in each of its modes.
"""
from __future__ import annotations

import dataclasses
import io
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import PipelineConfig
from pipeline.media.decode import DecodeConfig, check_frame_times, decode_frames, decode_video
from pipeline.media.probe import ProbeConfig, probe
from pipeline.samples.segment import SegmentConfig, plan_samples
from pipeline.stages import DecodeStage, VideoWork, run_stage
from pipeline.transcripts.types import Word

FPS = 10
# (backend, ffmpeg mode): the PyAV decoder has one way; the ffmpeg one two.
DECODERS = [("pyav", "auto"), ("ffmpeg", "span"), ("ffmpeg", "seek")]
# Frame N shows N in binary: block b (16 px wide) is white when bit b of N is set.
BITS = "geq=lum='if(mod(floor(N/pow(2\\,floor(X/16)))\\,2)\\,235\\,16)':cb=128:cr=128"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


def _numbered(path: Path, video_s: float, audio_s: float | None = None, extra: tuple[str, ...] = ()) -> Path:
    args = ["-f", "lavfi", "-i", f"color=c=black:size=160x32:rate={FPS}:duration={video_s},format=yuv420p,{BITS}"]
    if audio_s:
        args += ["-f", "lavfi", "-i", f"sine=frequency=300:duration={audio_s}", "-c:a", "aac"]
    _ffmpeg(*args, "-c:v", "libx264", "-preset", "ultrafast", "-qp", "5", "-g", str(3 * FPS), *extra, str(path))
    return path


def frame_number(jpeg: bytes) -> int:
    picture = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"))
    height, width = picture.shape
    block = width / 10
    return sum(1 << b for b in range(10) if picture[height // 2, int(block * (b + 0.5))] > 128)


def first_presented(path: Path) -> int:
    """The frame number a player shows first (plain ffmpeg decode, default timestamp handling)."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "gray", "-"], capture_output=True, check=True, timeout=60).stdout
    row = np.frombuffer(raw, np.uint8).reshape(32, 160)[16]
    return sum(1 << b for b in range(10) if row[b * 16 + 8] > 128)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("frame-times")
    src = _numbered(root / "src.mp4", 40.0, 40.0)
    files = {"plain": src}
    files["ts_offset"] = root / "offset.ts"
    _ffmpeg("-i", str(src), "-c", "copy", "-f", "mpegts", "-output_ts_offset", "30", str(files["ts_offset"]))
    files["itsoffset"] = root / "itsoffset.mp4"  # the video starts 2 s after the container (and audio)
    _ffmpeg("-itsoffset", "2", "-i", str(src), "-i", str(src), "-map", "0:v", "-map", "1:a", "-c", "copy",
            str(files["itsoffset"]))
    files["edit_list"] = root / "edit.mp4"  # cut between keyframes: an edit list hides frames 0..13
    _ffmpeg("-ss", "1.35", "-i", str(src), "-c", "copy", str(files["edit_list"]))
    files["long_audio"] = _numbered(root / "long_audio.mp4", 20.0, 30.0)  # no -shortest: audio runs on
    fast = root / "fast.mp4"
    _ffmpeg("-i", str(src), "-c", "copy", "-movflags", "+faststart", str(fast))
    files["cut_short"] = root / "cut.mp4"  # index intact (faststart), second half of the data missing
    files["cut_short"].write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    return files


@pytest.mark.parametrize("name", ["plain", "ts_offset", "itsoffset", "edit_list"])
@pytest.mark.parametrize("backend, mode", DECODERS)
def test_frames_are_from_the_requested_times(inputs, name, backend, mode):
    path = inputs[name]
    info = probe(path)
    assert info == probe(path, ProbeConfig(backend="ffprobe"))  # the PyAV probe reads the same clock
    assert info.video_duration == pytest.approx({"edit_list": 38.65}.get(name, 40.0), abs=0.05)
    if name == "ts_offset":
        assert info.video_start == pytest.approx(31.4, abs=0.01)  # 30 s offset + the muxer's 1.4 s delay
    if name == "itsoffset":
        assert (info.container_start, info.video_start) == (pytest.approx(0.0), pytest.approx(2.0))
    first = first_presented(path)
    times = [0.0, 0.55, 4.5, 5.5, 12.3, 17.0, 30.05]
    got = decode_frames(path, info, times, DecodeConfig(backend=backend, mode=mode))
    assert check_frame_times(times, got.times, info.fps) is None
    for t, used, jpeg in zip(times, got.times, got.jpegs):
        assert t - 0.002 <= used < t + 1.0 / FPS  # the frame shown at t
        assert frame_number(jpeg) == first + round(used * FPS), (t, used)
    assert len({frame_number(j) for j in got.jpegs}) == len(times)


@pytest.mark.parametrize("backend", ["pyav", "ffmpeg"])
def test_spans_stay_within_the_picture(inputs, backend):
    info = probe(inputs["long_audio"])
    assert info.duration == pytest.approx(30.0, abs=0.1)
    assert info.video_end == pytest.approx(20.0, abs=0.01) and info.video_duration == pytest.approx(20.0, abs=0.01)
    words = [Word(f"w{i}", i * 0.25, i * 0.25 + 0.2) for i in range(120)]  # speech over all 30 s
    cfg = SegmentConfig(span_choices=[8.0], max_samples_per_video=4, max_silence=None, min_words_per_window=1)
    plans, _ = plan_samples("v", info.video_duration, words, cfg)
    assert plans and all(p.end <= info.video_duration - 1.0 for p in plans)
    # Times past the picture get its last frame: the check refuses such a sample.
    times = [17.0, 18.5, 19.95, 22.0, 25.0]
    got = decode_frames(inputs["long_audio"], info, times, DecodeConfig(backend=backend, mode="span"))
    assert got.times[-1] == got.times[-2] < 19.95  # a repeated stand-in frame
    assert "away" in check_frame_times(times, got.times, info.fps)


def test_check_frame_times():
    assert check_frame_times([1.0, 2.0], [1.0, 2.05], 10) is None
    assert check_frame_times([1.0, 2.0], [1.0, 1.85], 10) is not None     # a stand-in from before 2.0
    assert check_frame_times([1.0, 2.0], [1.0, 2.8], 10) is None          # a VFR gap (< VFR_GAP_S)
    assert check_frame_times([1.0, 2.0], [1.0, 3.5], 10) is not None      # the wrong picture
    assert check_frame_times([1.0, 1.05], [1.1, 1.1], 10) is None         # within one frame: may share
    assert check_frame_times([1.0, 1.6], [1.0, 1.0], 1.0) is None          # 1 fps: one frame covers both
    assert "same frame" in check_frame_times([1.0, 3.5], [3.0, 3.0], 0.5)  # 0.5 fps: 2.5 s apart is not
    assert "same frame" in check_frame_times([1.0, 2.05], [1.99, 1.99], 10)
    assert check_frame_times([1.0, 1.2], [1.0, math.nan], 10) is not None


def _decode_item(path: Path, starts: list[float], cfg: PipelineConfig) -> VideoWork:
    info = probe(path)
    seg = SegmentConfig(span_choices=[8.0])
    from pipeline.samples.segment import SamplePlan, frame_times

    plans = [SamplePlan(f"v_{int(s * 1000)}", "v", s, s + 8.0, [], frame_times(s, 8.0, seg)) for s in starts]
    item = VideoWork(order=0, row={"video_id": "v", "url": str(path)}, info=dataclasses.asdict(info),
                     fetched={"video_path": str(path), "captions_path": None}, plans=plans)
    return run_stage("decode", [item], DecodeStage(cfg).one, cfg)[0]


@pytest.mark.parametrize("backend", ["pyav", "ffmpeg"])
def test_samples_past_the_end_are_counted_not_written(inputs, backend):
    cfg = PipelineConfig()
    cfg.decode.backend = backend
    cfg.fetch.keep_downloads = True
    # Spans that run past the last frame (about 19 s of the cut file survives; the picture of long_audio
    # ends at 20 s). A span wholly past it has no frame at all: decode_no_frames, also counted.
    for name, bad_start in (("cut_short", 14.0), ("long_audio", 15.0)):
        item = _decode_item(inputs[name], [2.0, bad_start], cfg)
        assert item.ok and [s.key for s in item.samples] == ["v_2000"], name
        assert item.dropped_samples == 1 and item.dropped_reasons == {"frame_time_mismatch": 1}
        numbers = [frame_number(item.samples[0].members[f"{i:03d}.jpg"]) for i in range(16)]
        assert len(set(numbers)) == 16  # 16 distinct pictures, from the sample's own times
    item = _decode_item(inputs["cut_short"], [14.0, 15.0], cfg)  # every sample runs past the real end
    assert item.status == "failed" and (item.stage, item.error_class) == ("decode", "frame_time_mismatch")


@pytest.mark.parametrize("name", ["ts_offset", "itsoffset", "long_audio", "cut_short"])
def test_leakage_frames_use_the_same_clock_and_check(inputs, name):
    """dedup's frame decoder (the leakage check's features) spreads frames over the picture on the caption
    clock and rejects frames from other times, as the pipeline does."""
    from dedup.frames import bin_centres, decode_frames
    from pipeline.errors import StageError
    from pipeline.media.probe import probe

    if name == "cut_short":   # its index claims 40 s; half the data is gone, so late frames are stand-ins
        with pytest.raises(StageError) as caught:
            decode_frames(inputs[name], n_frames=8, short_side=32)
        assert (caught.value.stage, caught.value.error_class) == ("decode", "frame_time_mismatch")
        return
    video = decode_frames(inputs[name], n_frames=8, short_side=32)
    info = probe(inputs[name])
    assert video.duration == pytest.approx(info.video_duration)
    expected = bin_centres(info.video_duration, 8)
    first = first_presented(inputs[name])
    for t, decoded, picture in zip(expected, video.times, video.frames):
        assert abs(decoded - t) <= 1 / FPS + 1e-3
        jpeg = io.BytesIO()
        Image.fromarray(picture).save(jpeg, format="JPEG", quality=95)
        assert abs(frame_number(jpeg.getvalue()) - first - round(decoded * FPS)) <= 1, (name, t)


@pytest.mark.parametrize("name", ["plain", "ts_offset", "edit_list"])
def test_one_pass_for_all_samples_of_a_video(inputs, name, monkeypatch):
    """Overlapping spans in one pass: the same pictures as one sample at a time (and as ffmpeg), each
    shared frame converted once, and a sample past the end refused on its own."""
    import pipeline.media.pyav_decode as pyav_decode

    path = inputs[name]
    info = probe(path)
    starts = [1.0, 3.5, 6.0, 14.0, 30.0, 45.0]  # overlapping spans, a long gap, one wholly past the end
    requests = [[s + 0.5 * i for i in range(16)] for s in starts]
    encoded = []
    real = pyav_decode._Encoder.__call__
    monkeypatch.setattr(pyav_decode._Encoder, "__call__", lambda self, frame: encoded.append(frame.pts) or real(self, frame))
    together = decode_video(path, info, requests, DecodeConfig(backend="pyav"))
    assert len(encoded) == len(set(encoded))                     # no frame converted twice
    distinct = {round(t, 3) for times in requests[:-1] for t in times}
    assert len(encoded) == len(distinct)                         # ... and only the frames used
    assert together[-1].error_class == "decode_no_frames"
    for times, got in zip(requests[:-1], together[:-1]):
        alone = decode_frames(path, info, times, DecodeConfig(backend="pyav"))
        reference = decode_frames(path, info, times, DecodeConfig(backend="ffmpeg", mode="span"))
        assert got.times == alone.times == reference.times
        assert got.jpegs == alone.jpegs                          # the same bytes, whichever way it is read
        numbers = [frame_number(j) for j in got.jpegs]
        assert numbers == [frame_number(j) for j in reference.jpegs]
        assert numbers == [first_presented(path) + round(u * FPS) for u in got.times]


@pytest.mark.parametrize("name", ["plain", "ts_offset"])  # mp4: seeks by its index; MPEG-TS: none, the gap rule
def test_how_pyav_reaches_a_frame_does_not_change_it(inputs, name, monkeypatch):
    """Threads, the seek gap, and a capped read-ahead change the work, not the bytes (so they stay out of
    the output fingerprint, pipeline/config.py)."""
    import pipeline.media.pyav_decode as pyav_decode

    path = inputs[name]
    info = probe(path)
    requests = [[s + 0.5 * i for i in range(16)] for s in (1.0, 3.5, 14.0, 30.0)]
    reference = decode_video(path, info, requests, DecodeConfig())
    variants = [DecodeConfig(threads=2), DecodeConfig(threads=0), DecodeConfig(seek_gap_s=0.5),
                DecodeConfig(seek_gap_s=1000.0)]
    for cfg in variants:
        got = decode_video(path, info, requests, cfg)
        assert [g.jpegs for g in got] == [r.jpegs for r in reference], cfg
    monkeypatch.setattr(pyav_decode, "LOOKAHEAD_BYTES", 2000)  # a few packets: the cap is hit all the time
    got = decode_video(path, info, requests, DecodeConfig(seek_gap_s=1000.0))
    assert [g.jpegs for g in got] == [r.jpegs for r in reference]
