"""Audio for ASR, decoded in-process (PyAV): the first audio stream as 16 kHz mono signed 16-bit samples,
on the caption clock.

No ffmpeg process and no WAV file: the samples go from the decoder into the video's work item (int16, half
the bytes of float32 through Ray's object store) and from there to faster-whisper as a float array.

Caption clock: sample 0 is caption time 0, the video's first presented frame (`VideoInfo.clock_zero`, in
stream seconds). An audio stream that starts later (`-itsoffset`, a recording whose audio begins after the
picture) is preceded by silence, one that starts earlier loses its lead-in, so ASR word times are on the
same clock as the frames they are paired with.

`decode_pcm16(path, clock_zero, sample_rate) -> bytes` raises `StageError("transcript", ...)`:
`no_audio` (no audio stream) or `audio_decode` (the stream cannot be decoded).
"""
from __future__ import annotations

import os

from common.deps import require
from pipeline.errors import StageError

STAGE = "transcript"


def decode_pcm16(path: str | os.PathLike, clock_zero: float = 0.0, sample_rate: int = 16000) -> bytes:
    av = require("av", why="decoding audio in-process")
    np = require("numpy")
    chunks: list[bytes] = []
    first_time: float | None = None
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise StageError(STAGE, "no_audio", f"{path}: no audio stream for ASR")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            for frame in _frames(container, stream, av):
                if first_time is None and frame.pts is not None and frame.time_base is not None:
                    first_time = float(frame.pts * frame.time_base)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().tobytes())
            for out in resampler.resample(None):   # what the resampler still holds
                chunks.append(out.to_ndarray().tobytes())
    except StageError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyAV raises its own error per container and codec
        raise StageError(STAGE, "audio_decode", f"{path}: cannot decode audio ({type(exc).__name__}: "
                                                f"{str(exc)[:200]})") from None
    pcm = b"".join(chunks)
    if not pcm:
        raise StageError(STAGE, "audio_decode", f"{path}: the audio stream decoded to no samples")
    shift = int(round(((first_time if first_time is not None else clock_zero) - clock_zero) * sample_rate))
    if shift > 0:       # the audio starts after caption time 0: silence until it does
        pcm = np.zeros(shift, dtype=np.int16).tobytes() + pcm
    elif shift < 0:     # it starts before: its lead-in has no picture
        pcm = pcm[-shift * 2:]
    return pcm


def _frames(container, stream, av):
    """The stream's decodable frames; a corrupt packet in the middle is skipped, as ffmpeg does."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue
