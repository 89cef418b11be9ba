"""One measurement in a fresh process, for bench/pipeline.py (parts 4-6); prints one JSON line.

    decode_probe.py WAY VIDEO WIDTH HEIGHT REQUESTS_JSON   one decode of the requested frames (REQUESTS_JSON:
                                                            a list of samples, each a list of caption-clock
                                                            times); WAY: pyav | ffmpeg (decode.backend),
                                                            pyav_seek_loop, ffmpeg_fps_filter
    decode_probe.py jpeg VIDEO                              the JPEG encoders on the same RGB frames

A fresh process per run: its peak RSS is its own, and nothing is cached from an earlier run.
"""
from __future__ import annotations

import os
import sys

# `python bench/decode_probe.py` puts bench/ first on sys.path, where pipeline.py would shadow the package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import io
import json
import resource
import subprocess
import time


def cpu() -> float:
    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))


def seek_loop(path: str, zero: float, requests: list[list[float]], size: tuple[int, int],
              encode: bool = False) -> int:
    """The simplest in-process decode: a keyframe seek and decoding to the frame, for every time, swscale
    to `size`; returns the frames made, or with `encode` the JPEG bytes (simplejpeg) made of them.
    bench/pipeline.py's bare PyAV baseline calls it too."""
    import av

    if encode:
        import simplejpeg
    made = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for times in requests:
            for t in times:
                target = zero + t - 0.002
                container.seek(int(target / stream.time_base), stream=stream, backward=True)
                for frame in container.decode(stream):
                    if frame.time is not None and frame.time >= target:
                        rgb = frame.reformat(*size, format="rgb24", interpolation="BICUBIC", threads=1)
                        made += (len(simplejpeg.encode_jpeg(rgb.to_ndarray(), quality=90, colorsubsampling="420"))
                                 if encode else 1)
                        break
    return made


def fps_filter(path: str, duration: float, size: tuple[int, int]) -> int:
    """One bare ffmpeg command with an fps filter: decodes every frame, keeps 16 over the video."""
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", path, "-an", "-vf",
                          f"fps={16 / duration:.6f},scale={size[0]}:{size[1]}", "-f", "image2pipe", "-c:v", "mjpeg",
                          "-"], capture_output=True, check=True).stdout
    return out.count(b"\xff\xd9")  # JPEG end markers (0xFF inside the data is always stuffed)


def decode(way: str, path: str, size: tuple[int, int], requests: list[list[float]]) -> dict:
    from pipeline.media.decode import DecodeConfig, decode_video
    from pipeline.media.probe import probe

    info = probe(path)
    c0, w0 = cpu(), time.perf_counter()
    if way in ("pyav", "ffmpeg"):
        got = decode_video(path, info, requests, DecodeConfig(backend=way))
        frames = sum(len(g.jpegs) for g in got if not isinstance(g, Exception))
    elif way == "pyav_seek_loop":
        frames = seek_loop(path, info.clock_zero, requests, size)
    else:
        frames = fps_filter(path, info.duration, size)
    return {"frames": frames, "cpu_s": round(cpu() - c0, 3), "wall_s": round(time.perf_counter() - w0, 3),
            "worker_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "ffmpeg_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}


def jpeg(path: str, n_frames: int = 24, repeats: int = 5) -> dict:
    """CPU ms per frame to encode the same 455x256 RGB frames, quality 90, 4:2:0, by each encoder found."""
    import av
    from PIL import Image

    with av.open(path) as container:
        frames = [f.reformat(455, 256, format="rgb24", interpolation="BICUBIC").to_ndarray()
                  for i, f in zip(range(n_frames * 30), container.decode(video=0)) if i % 30 == 0]

    def pillow(a) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(a).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()

    encoders = {"pillow": pillow}
    try:
        import simplejpeg

        encoders["simplejpeg"] = lambda a: simplejpeg.encode_jpeg(a, quality=90, colorspace="RGB",
                                                                 colorsubsampling="420")
    except ImportError:
        print("jpeg: simplejpeg not installed")
    try:
        from turbojpeg import TJSAMP_420, TurboJPEG

        turbo = TurboJPEG()
        encoders["pyturbojpeg"] = lambda a: turbo.encode(a, quality=90, jpeg_subsample=TJSAMP_420, pixel_format=0)
    except Exception as exc:  # noqa: BLE001 - not installed, or its system libturbojpeg is missing or too old
        print(f"jpeg: PyTurboJPEG not measured ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})")
    out = {}
    for name, encode in encoders.items():
        started = time.process_time()
        for _ in range(repeats):
            sizes = [len(encode(a)) for a in frames]
        out[name] = {"ms_per_frame": round((time.process_time() - started) * 1000 / (repeats * len(frames)), 3),
                     "bytes": int(sum(sizes) / len(sizes))}
    return out


def main() -> None:
    if sys.argv[1] == "jpeg":
        result = jpeg(sys.argv[2])
    else:
        way, path, width, height, requests = sys.argv[1:6]
        result = decode(way, path, (int(width), int(height)), json.loads(requests))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
