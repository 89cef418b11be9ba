"""pipeline.media.decode: only the requested frames, resized, rotated as displayed, JPEG; audio for ASR.
Both decoders (`decode.backend`: the in-process PyAV one and the ffmpeg command) where both apply."""
from __future__ import annotations

import io
import subprocess

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import StageError
from pipeline.media.decode import DecodeConfig, choose_mode, decode_frames, output_size
from pipeline.media.probe import probe
from tests.pipeline.corpus import bad_media, make_video, set_mp4_rotation


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    files = bad_media(root)
    files["long"] = make_video(root / "long.mp4", 30.0, audio=True)
    return files


BACKENDS = ["pyav", "ffmpeg"]


def _image(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.int16)


def test_output_size():
    cfg = DecodeConfig(short_side=256)
    assert output_size(1920, 1080, cfg) == (455, 256)
    assert output_size(720, 1280, cfg) == (256, 455)
    assert output_size(427, 240, cfg) == (455, 256)
    assert output_size(427, 240, DecodeConfig(short_side=256, upscale=False)) == (427, 240)


def test_span_seek_and_pyav_give_the_same_frames(media):
    info = probe(media["long"])
    times = [2.0 + 0.8 * i for i in range(16)]
    span = decode_frames(media["long"], info, times, DecodeConfig(backend="ffmpeg", mode="span"))
    seek = decode_frames(media["long"], info, times, DecodeConfig(backend="ffmpeg", mode="seek"))
    pyav = decode_frames(media["long"], info, times, DecodeConfig(backend="pyav"))
    assert len(span.jpegs) == len(seek.jpegs) == len(pyav.jpegs) == 16
    assert span.processes == 1 and seek.processes == 16 and pyav.processes == 0
    assert span.times == seek.times == pyav.times
    for t, used in zip(times, span.times):  # 10 fps: the frame shown at t starts within 0.1 s before it
        assert t - 0.002 <= used < t + 0.1
    for k, (a, b, c) in enumerate(zip(span.jpegs, seek.jpegs, pyav.jpegs)):
        assert np.abs(_image(a) - _image(b)).mean() < 1.0
        # PyAV's own FFmpeg (another swscale) and JPEG encoder: not the same pixels, but the same picture,
        # far closer to ffmpeg's than ffmpeg's neighbouring frame is.
        neighbour = span.jpegs[k - 1] if k else span.jpegs[1]
        assert np.abs(_image(a) - _image(c)).mean() < np.abs(_image(a) - _image(neighbour)).mean() / 4
    assert pyav.jpegs == decode_frames(media["long"], info, times, DecodeConfig(backend="pyav")).jpegs
    assert (pyav.width, pyav.height) == (span.width, span.height)
    first = Image.open(io.BytesIO(span.jpegs[0]))
    assert first.format == "JPEG" and first.size == (341, 256) == (span.width, span.height)


def test_auto_mode():
    assert choose_mode([0, 1, 2, 3], DecodeConfig()) == "span"
    assert choose_mode([0, 100, 200, 300], DecodeConfig()) == "seek"


def test_only_the_span_is_read(media, monkeypatch):
    """-ss and -t are input options (before -i): ffmpeg demuxes from the keyframe before the span, no more."""
    import pipeline.media.proc as proc_mod

    info = probe(media["long"])
    calls = []
    real_run = proc_mod.run

    def spy(args, timeout, **kw):
        calls.append(list(args))
        return real_run(args, timeout, **kw)

    monkeypatch.setattr(proc_mod, "run", spy)
    decode_frames(media["long"], info, [20.0 + i * 0.5 for i in range(16)], DecodeConfig(backend="ffmpeg", mode="span"))
    (args,) = calls
    i = args.index("-i")
    assert args.index("-ss") < i and args.index("-t") < i
    assert float(args[args.index("-ss") + 1]) == pytest.approx(19.99, abs=0.01)
    assert float(args[args.index("-t") + 1]) < 10.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotation_is_applied(shared_data, tmp_path, backend):
    video = shared_data / "videos" / "moviepy_fire2_rotated180.mp4"
    info = probe(video)
    got = decode_frames(video, info, [1.0], DecodeConfig(backend=backend, short_side=128, mode="seek"))
    raw = subprocess.run(["ffmpeg", "-v", "error", "-noautorotate", "-ss", "1.0", "-i", str(video), "-frames:v", "1",
                          "-vf", f"scale={got.width}:{got.height}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True, timeout=60).stdout
    upright = np.frombuffer(raw, np.uint8).reshape(got.height, got.width, 3).astype(np.int16)
    decoded = _image(got.jpegs[0])
    assert np.abs(decoded - upright[::-1, ::-1]).mean() < np.abs(decoded - upright).mean() / 2


@pytest.mark.parametrize("degrees", [90, 270])
def test_rotation_90_gives_portrait_frames(tmp_path, degrees):
    video = set_mp4_rotation(make_video(tmp_path / "r.mp4", 3.0, audio=False), degrees)
    got = {b: decode_frames(video, probe(video), [0.5, 1.0, 1.5], DecodeConfig(backend=b)) for b in BACKENDS}
    for frames in got.values():
        assert (frames.width, frames.height) == (256, 341)
        assert Image.open(io.BytesIO(frames.jpegs[0])).size == (256, 341)
    # Turned the same way as ffmpeg's autorotation (testsrc2 is not symmetric).
    a, b = _image(got["pyav"].jpegs[1]), _image(got["ffmpeg"].jpegs[1])
    assert np.abs(a - b).mean() < np.abs(a - b[::-1, ::-1]).mean() / 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_vp9_odd_size_and_no_duration(shared_data, backend):
    for name in ("human2bot_task5_1.webm", "moviepy_no_duration.webm"):
        video = shared_data / "videos" / name
        info = probe(video)
        times = [info.duration * (i + 0.5) / 16 for i in range(16)]
        got = decode_frames(video, info, times, DecodeConfig(backend=backend))
        assert len(got.jpegs) == 16 and min(got.width, got.height) == 256
        assert got.times == sorted(got.times)


@pytest.mark.parametrize("backend", BACKENDS)
def test_times_past_the_end(media, backend):
    info = probe(media["good"])  # 4 s
    got = decode_frames(media["good"], info, [3.5, 3.9, 4.5, 9.0], DecodeConfig(backend=backend, mode="span"))
    assert len(got.jpegs) == 4 and got.times[2] == got.times[3] <= 4.0
    with pytest.raises(StageError) as caught:
        decode_frames(media["good"], info, [50.0, 51.0], DecodeConfig(backend=backend, mode="span"))
    assert caught.value.error_class == "decode_no_frames"


@pytest.mark.parametrize("backend", BACKENDS)
def test_broken_input_and_timeout(media, backend):
    info = probe(media["good"])
    for broken in ("text_mp4", "truncated"):  # not media at all; an mp4 whose index is gone
        with pytest.raises(StageError) as caught:
            decode_frames(media[broken], info, [0.5, 1.0], DecodeConfig(backend=backend))
        assert caught.value.stage == "decode" and caught.value.error_class == "decode_failed", broken
    with pytest.raises(StageError) as caught:
        decode_frames(media["good"], info, [0.5, 1.0], DecodeConfig(backend=backend, timeout_s=0.0001))
    assert caught.value.error_class == "decode_timeout"
