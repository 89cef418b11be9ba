"""Draw a demo video's frames and encode them, with its narration, into an mp4 (H.264 + AAC).

Frames are drawn with Pillow (circles, triangles, diamonds and stars need more than ffmpeg's drawbox)
on a static per-video background (gradient + stripes, optionally a grid, so that every video's frames
look different from every other's) and streamed as raw RGB into one ffmpeg process, which muxes the
narration WAV beside them. x264 runs single-threaded with bit-exact flags, so the same script gives
the same bytes. `encode_lavfi` makes the unrelated downstream clips from ffmpeg's own test sources.
"""
from __future__ import annotations

import contextlib
import math
import os
import subprocess
import tempfile
import threading
import wave
from pathlib import Path

import numpy as np

from common.atomic import atomic_path
from common.deps import require
from pipeline.demo.script import COLOURS, FPS, HEIGHT, MOVES, POSITIONS, SAMPLE_RATE, WIDTH, Scene, VideoScript
from pipeline.media.proc import ProcFailed, ProcTimeout, kill_tree, run

BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1"]
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-pix_fmt", "yuv420p", "-g", str(FPS),
        "-threads", "1", "-x264-params", "threads=1:sliced-threads=0"]
AAC = ["-c:a", "aac", "-aac_coder", "fast", "-b:a", "48k", "-ac", "1", "-ar", str(SAMPLE_RATE)]


def background(params: dict) -> np.ndarray:
    """The static [H, W, 3] uint8 background of one video."""
    y = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    top, bottom = np.array(params["top"], float), np.array(params["bottom"], float)
    image = top * (1 - y) + bottom * y + np.zeros((HEIGHT, WIDTH, 3))
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    angle = math.radians(params["stripe_angle"])
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / params["stripe_period"]
    image += params["stripe_strength"] * np.sin(phase)[..., None]
    if params.get("grid"):
        image[(yy % 40 == 0) | (xx % 40 == 0)] += 25
    return np.clip(image, 0, 255).astype(np.uint8)


def _layout(scene: Scene, centre: tuple[float, float], radius: float) -> list[tuple[float, float]]:
    """Centres of `scene.count` shapes: rows of up to 3 around `centre`, kept inside the frame."""
    cols = min(scene.count, 3)
    rows = math.ceil(scene.count / 3)
    gap = radius * 2.6
    cx = min(max(centre[0], radius + 4 + gap * (cols - 1) / 2), WIDTH - radius - 4 - gap * (cols - 1) / 2)
    cy = min(max(centre[1], radius + 4 + gap * (rows - 1) / 2), HEIGHT - radius - 4 - gap * (rows - 1) / 2)
    points = []
    for k in range(scene.count):
        row, col = divmod(k, 3)
        in_row = min(3, scene.count - row * 3)
        points.append((cx + (col - (in_row - 1) / 2) * gap, cy + (row - (rows - 1) / 2) * gap))
    return points


def _shape_points(shape: str, x: float, y: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.85
        return [(x - s, y - s), (x + s, y - s), (x + s, y + s), (x - s, y + s)]
    if shape == "triangle":
        return [(x, y - r), (x + r * 0.95, y + r * 0.75), (x - r * 0.95, y + r * 0.75)]
    if shape == "diamond":
        return [(x, y - r), (x + r * 0.75, y), (x, y + r), (x - r * 0.75, y)]
    if shape == "star":
        return [
            (x + (r if k % 2 == 0 else r * 0.45) * math.sin(k * math.pi / 5),
             y - (r if k % 2 == 0 else r * 0.45) * math.cos(k * math.pi / 5))
            for k in range(10)
        ]
    raise ValueError(f"unknown shape {shape!r}")


def scene_at(scene: Scene, u: float) -> tuple[tuple[float, float], float]:
    """Cluster centre (pixels) and shape radius at fraction `u` (0..1) of the step."""
    (ex, ey), _ = POSITIONS[scene.position]
    end = (ex * WIDTH, ey * HEIGHT)
    radius = float(scene.size)
    if scene.motion in MOVES:
        (sx, sy), _ = POSITIONS[MOVES[scene.motion][0]]
        start = (sx * WIDTH, sy * HEIGHT)
        return (start[0] + (end[0] - start[0]) * u, start[1] + (end[1] - start[1]) * u), radius
    if scene.motion == "grow":
        return end, radius * (0.6 + 0.8 * u)
    if scene.motion == "shrink":
        return end, radius * (1.4 - 0.8 * u)
    return end, radius


def draw_scene(base, scene: Scene, u: float):
    """A PIL image: `base` (PIL RGB) with the scene's shapes drawn as they are at fraction `u`."""
    image_draw = require("PIL.ImageDraw", "pillow", "drawing the demo corpus")
    image = base.copy()
    draw = image_draw.Draw(image)
    centre, radius = scene_at(scene, u)
    fill = COLOURS[scene.colour]
    for x, y in _layout(scene, centre, radius):
        if scene.shape == "circle":
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill, outline=(0, 0, 0), width=2)
        else:
            draw.polygon(_shape_points(scene.shape, x, y, radius), fill=fill, outline=(0, 0, 0), width=2)
    return image


def frames(script: VideoScript, background_params: dict | None = None):
    """Yield the raw RGB bytes of every frame of the video, in order."""
    pil_image = require("PIL.Image", "pillow", "drawing the demo corpus")
    base = pil_image.fromarray(background(background_params or script.background))
    for step in script.steps:
        first, last = round(step.start * FPS), round(step.end * FPS)
        n = last - first
        if step.scene.motion == "still":
            still = draw_scene(base, step.scene, 0.0).tobytes()
            for _ in range(n):
                yield still
        else:
            for k in range(n):
                yield draw_scene(base, step.scene, (k + 0.5) / n).tobytes()


def write_wav(path: Path, audio: np.ndarray) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(audio.astype("<i2").tobytes())


def encode_stream(frame_iter, out: Path, timeout: float, audio: np.ndarray | None = None,
                  extra: list[str] | None = None, codec: list[str] | None = None) -> None:
    """Encode raw RGB frames (and optional mono audio) into `out`, atomically (temp file + rename).
    `codec`: the video encoder arguments (default X264; e.g. MPEG-4 Part 2 for an AVI)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".render-", dir=out.parent)))
        tmp_out = scratch / f"out{out.suffix}"
        args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "pipe:0"]
        if audio is not None:
            wav = scratch / "narration.wav"
            write_wav(wav, audio)
            args += ["-i", str(wav), "-map", "0:v", "-map", "1:a"] + AAC
        mp4 = ["-movflags", "+faststart"] if out.suffix.lower() in (".mp4", ".mov", ".m4v") else []
        args += (codec or X264) + (extra or []) + BITEXACT + mp4 + [str(tmp_out)]
        err = stack.enter_context(open(scratch / "stderr.txt", "w+b"))
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        fired = threading.Event()

        def on_timeout() -> None:
            fired.set()
            kill_tree(proc)

        timer = threading.Timer(timeout, on_timeout)
        timer.start()
        try:
            try:
                for frame in frame_iter:
                    proc.stdin.write(frame)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg died; its stderr says why
            code = proc.wait()
        except BaseException:
            kill_tree(proc)
            raise
        finally:
            timer.cancel()
        err.seek(0)
        message = err.read()
        if fired.is_set():
            raise ProcTimeout(args, timeout, None, message)
        if code != 0:
            raise ProcFailed(code, args, None, message)
        os.replace(tmp_out, out)


def render_video(script: VideoScript, out: Path) -> Path:
    """Encode one corpus video (frames + narration) to `out` unless it is already there."""
    if out.is_file():
        return out
    encode_stream(frames(script), out, timeout=120 + 4 * script.duration, audio=script.audio)
    return out


def render_corpus_video(seed: int, index: int, out_dir: str | Path, narration: str) -> VideoScript:
    """Pool job: plan and speak video `index`, encode it unless it exists; its script without the audio."""
    from pipeline.demo.script import make_script

    script = make_script(seed, index, narration=narration)
    render_video(script, Path(out_dir) / "videos" / f"{script.video_id}.mp4")
    script.audio = None
    return script


def encode_lavfi(source: str, seconds: float, out: Path, extra_filters: str = "", codec: list[str] | None = None,
                 size: str = f"{WIDTH}x{HEIGHT}", fps: int = FPS, timeout: float = 120) -> Path:
    """An unrelated clip from an ffmpeg test source (e.g. "testsrc2", "mandelbrot"), with a sine tone."""
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    video = f"{source}=size={size}:rate={fps}" if "=" not in source else f"{source}:size={size}:rate={fps}"
    chain = video + (f",{extra_filters}" if extra_filters else "") + f",trim=duration={seconds}"
    codec = codec or X264 + AAC
    with atomic_path(out) as tmp:
        args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", chain]
        if "-an" not in codec:
            args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={SAMPLE_RATE}:duration={seconds}",
                     "-map", "0:v", "-map", "1:a"]
        args += ["-t", str(seconds)] + codec + BITEXACT + [str(tmp)]
        run(args, timeout, check=True)
    return out


def transcode(src: Path, out: Path, start: float, seconds: float, video_filters: str, codec: list[str],
              fps: int | None = None, timeout: float = 120) -> Path:
    """A transformed copy of [start, start+seconds) of `src` (re-encoded, resized, cropped, ...)."""
    if out.is_file():
        return out
    with atomic_path(out) as tmp:
        args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                "-ss", f"{start:.3f}", "-t", f"{seconds:.3f}", "-i", str(src)]
        if video_filters:
            args += ["-vf", video_filters]
        if fps:
            args += ["-r", str(fps)]
        args += codec + BITEXACT + [str(tmp)]
        run(args, timeout, check=True)
    return out


__all__ = ["background", "draw_scene", "frames", "render_video", "render_corpus_video", "encode_lavfi", "transcode"]
