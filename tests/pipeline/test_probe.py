"""pipeline.media.probe on real and generated files: duration, fps, display size, rotation, audio, failures.
The default probe is in-process (PyAV); the ffprobe one is the reference it must agree with."""
from __future__ import annotations

import dataclasses

import pytest

from pipeline.errors import StageError
from pipeline.media.probe import ProbeConfig, probe, rotation_of
from tests.pipeline.corpus import bad_media, make_video, set_mp4_rotation


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return bad_media(tmp_path_factory.mktemp("probe"))


def test_real_videos(shared_data):
    videos = shared_data / "videos"
    big = probe(videos / "v2d_test_video.mp4")
    assert (big.width, big.height, big.rotation, big.has_audio) == (1920, 1080, 0, True)
    assert big.duration == pytest.approx(122.67, abs=0.01) and big.fps == pytest.approx(30.0)
    assert big.video_codec == "h264" and big.audio_codec == "aac"

    rotated = probe(videos / "moviepy_fire2_rotated180.mp4")
    assert rotated.rotation == 180 and (rotated.width, rotated.height) == (1280, 720)
    assert 5 < rotated.fps < 20  # VFR phone video: the average rate, not the 90000/1 timebase

    no_duration = probe(videos / "moviepy_no_duration.webm")  # the container has no duration
    assert no_duration.video_codec == "vp9" and no_duration.duration == pytest.approx(4.9, abs=0.15)

    odd = probe(videos / "human2bot_task5_1.webm")
    assert (odd.width, odd.height, odd.has_audio) == (427, 240, False)


def test_rotation_90_swaps_the_displayed_size(tmp_path):
    video = set_mp4_rotation(make_video(tmp_path / "r.mp4", 2.0, audio=False), 90)
    info = probe(video)
    assert info.rotation == 90
    assert (info.coded_width, info.coded_height) == (128, 96)
    assert (info.width, info.height) == (96, 128)


def test_rotation_from_side_data_and_legacy_tag():
    assert rotation_of({"side_data_list": [{"rotation": -90}]}) == 90
    assert rotation_of({"side_data_list": [{"rotation": 90}]}) == 270
    assert rotation_of({"side_data_list": [{"rotation": -180}]}) == 180
    assert rotation_of({"tags": {"rotate": "270"}}) == 270
    assert rotation_of({}) == 0


BACKENDS = ["pyav", "ffprobe"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, error_class", [
    ("zero_byte", "empty_file"),
    ("text_mp4", "not_video"),
    ("truncated", "not_video"),
    ("audio_only", "no_video_stream"),
])
def test_bad_files_are_classified(media, name, error_class, backend):
    with pytest.raises(StageError) as caught:
        probe(media[name], ProbeConfig(backend=backend))
    assert caught.value.stage == "probe"
    assert caught.value.error_class == error_class
    assert str(media[name]) in caught.value.message


def test_missing_file_and_dash_name(tmp_path, media):
    with pytest.raises(StageError) as caught:
        probe(tmp_path / "nope.mp4")
    assert caught.value.error_class == "missing_file"
    dash = tmp_path / "-i.mp4"  # would be an option if passed bare to ffprobe
    dash.write_bytes(media["good"].read_bytes())
    import os
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert probe("-i.mp4").duration == pytest.approx(4.0, abs=0.1)
        (tmp_path / "a:b.mp4").write_bytes(media["good"].read_bytes())  # not the protocol "a:"
        assert probe("a:b.mp4").duration == pytest.approx(4.0, abs=0.1)
    finally:
        os.chdir(cwd)


def test_one_frame_video_has_a_tiny_duration(media):
    info = probe(media["one_frame"])
    assert 0 < info.duration <= 0.2


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeout_is_a_classified_failure(media, backend):
    with pytest.raises(StageError) as caught:
        probe(media["good"], ProbeConfig(backend=backend, timeout_s=0.0001))
    assert caught.value.error_class == "probe_timeout"


def test_pyav_probe_equals_ffprobe(shared_data, tmp_path, media):
    """The in-process probe reads the same facts by the same rules. The two FFmpeg builds (PyAV's own,
    the system's ffprobe) may estimate a container's duration a fraction of a millisecond apart (a VFR
    phone video) and its bit rate a few bits/s apart; everything else is equal."""
    files = [media["good"], media["one_frame"], *sorted((shared_data / "videos").iterdir()),
             set_mp4_rotation(make_video(tmp_path / "r270.mp4", 2.0, audio=False), 270),
             make_video(tmp_path / "vp9.webm", 2.0, audio=False,
                        extra=["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"])]
    for path in files:
        ours, reference = probe(path), probe(path, ProbeConfig(backend="ffprobe"))
        assert abs((ours.bit_rate or 0) - (reference.bit_rate or 0)) <= max(1000, (reference.bit_rate or 0) // 1000)
        ours.bit_rate = reference.bit_rate
        expected = {k: pytest.approx(v, abs=1e-3) if isinstance(v, float) else v
                    for k, v in dataclasses.asdict(reference).items()}
        assert dataclasses.asdict(ours) == expected, path.name
