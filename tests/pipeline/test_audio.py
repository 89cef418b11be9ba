"""ASR audio decoded in-process (pipeline.media.audio): 16 kHz mono int16 on the caption clock, the same
samples the ffmpeg command line gives, silence before an audio stream that starts late, a late picture's
lead-in cut, and classified failures."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from pipeline.errors import StageError
from pipeline.media.audio import decode_pcm16
from pipeline.media.probe import probe
from tests.pipeline.corpus import make_video

RATE = 16000


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    src = root / "src.mp4"   # 10 s of picture and a 10 s 440 Hz tone
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=10", "-f", "lavfi", "-i",
            "sine=frequency=440:duration=10:sample_rate=44100", "-c:v", "libx264", "-preset", "ultrafast",
            "-c:a", "aac", "-shortest", str(src))
    late_audio = root / "late_audio.mp4"   # the tone starts 2 s after the first frame
    _ffmpeg("-i", str(src), "-itsoffset", "2", "-i", str(src), "-map", "0:v", "-map", "1:a", "-c", "copy",
            str(late_audio))
    late_video = root / "late_video.mp4"   # the first frame comes 2 s after the tone starts
    _ffmpeg("-itsoffset", "2", "-i", str(src), "-i", str(src), "-map", "0:v", "-map", "1:a", "-c", "copy",
            str(late_video))
    silent = make_video(root / "silent.mp4", 1.0, audio=False)
    broken = root / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(4000))
    return {"src": src, "late_audio": late_audio, "late_video": late_video, "silent": silent, "broken": broken}


def _samples(path, clock_zero=None) -> np.ndarray:
    if clock_zero is None:
        clock_zero = probe(path).clock_zero
    return np.frombuffer(decode_pcm16(path, clock_zero, RATE), dtype=np.int16)


def _loud(samples: np.ndarray, start_s: float, end_s: float) -> float:
    part = samples[int(start_s * RATE):int(end_s * RATE)].astype(np.float64)
    return float(np.sqrt(np.mean(part ** 2))) if part.size else 0.0


def test_same_samples_as_the_ffmpeg_command_line(media):
    ours = _samples(media["src"])
    cli = np.frombuffer(subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(media["src"]), "-vn", "-ac", "1", "-ar", str(RATE), "-f", "s16le", "-"],
        capture_output=True, check=True, timeout=60).stdout, dtype=np.int16)
    assert abs(len(ours) - len(cli)) <= RATE // 100, (len(ours), len(cli))
    n = min(len(ours), len(cli))
    assert abs(len(ours) / RATE - 10.0) < 0.1
    diff = np.abs(ours[:n].astype(np.int32) - cli[:n].astype(np.int32))
    assert np.percentile(diff, 99) <= 2, np.percentile(diff, 99)   # the same resampler, in-process


def test_audio_that_starts_late_is_preceded_by_silence(media):
    samples = _samples(media["late_audio"])
    assert _loud(samples, 0.0, 1.9) == 0.0
    assert _loud(samples, 2.2, 9.0) > 1000
    assert abs(len(samples) / RATE - 12.0) < 0.1


def test_a_late_pictures_lead_in_is_cut(media):
    info = probe(media["late_video"])
    assert info.clock_zero == pytest.approx(2.0, abs=0.05)
    samples = _samples(media["late_video"])
    assert abs(len(samples) / RATE - 8.0) < 0.1   # the 2 s of tone before the first frame are gone
    assert _loud(samples, 0.0, 7.5) > 1000


def test_no_audio_and_broken_files_are_classified(media):
    with pytest.raises(StageError) as caught:
        decode_pcm16(media["silent"])
    assert (caught.value.stage, caught.value.error_class) == ("transcript", "no_audio")
    with pytest.raises(StageError) as caught:
        decode_pcm16(media["broken"])
    assert caught.value.error_class == "audio_decode"
