"""A tiny generated corpus for the pipeline job tests: lavfi videos (ffmpeg) + WebVTT captions + manifest."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

WORDS = ("the quick brown fox jumps over a lazy dog while seven bright birds sing about "
         "rivers mountains clouds and tiny boats drifting slowly toward warm evening light").split()


def make_video(path: Path, duration: float, *, size: str = "128x96", rate: int = 10, audio: bool = True,
               extra: list[str] | None = None, source: str = "testsrc2") -> Path:
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
            "-i", f"{source}=size={size}:rate={rate}:duration={duration}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=300:duration={duration}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-g", str(rate * 3), "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac", "-shortest"] if audio else []
    args += (extra or []) + [str(path)]
    subprocess.run(args, check=True, timeout=120)
    return path


def make_vtt(path: Path, duration: float, step: float = 0.5) -> Path:
    def ts(t: float) -> str:
        return f"{int(t // 3600):02d}:{int(t % 3600 // 60):02d}:{t % 60:06.3f}"

    lines = ["WEBVTT", "Kind: captions", "Language: en", ""]
    t, i = 0.2, 0
    while t + step <= duration:
        lines += [f"{ts(t)} --> {ts(t + step * 0.9)}", WORDS[i % len(WORDS)], ""]
        t += step
        i += 1
    path.write_text("\n".join(lines))
    return path


def bad_media(root: Path) -> dict[str, Path]:
    """Small broken or unusual inputs, by name (each a file under `root`)."""
    root.mkdir(parents=True, exist_ok=True)
    good = make_video(root / "good.mp4", 4.0, audio=True)
    files = {"good": good}
    files["zero_byte"] = root / "zero.mp4"
    files["zero_byte"].write_bytes(b"")
    files["text_mp4"] = root / "text.mp4"
    files["text_mp4"].write_text("this is not a video\n" * 20)
    files["truncated"] = root / "truncated.mp4"
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    files["audio_only"] = root / "audio.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=3",
                    "-c:a", "aac", str(files["audio_only"])], check=True, timeout=60)
    files["one_frame"] = make_video(root / "one_frame.mp4", 0.1, audio=False, extra=["-frames:v", "1"])
    return files


def make_corpus(root: Path, n: int = 4, duration: float = 50.0) -> Path:
    """`n` captioned videos (two samples each with the default segment config); returns the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        video = make_video(root / f"vid{i}.mp4", duration + i)
        captions = make_vtt(root / f"vid{i}.en.vtt", duration + i)
        rows.append({"video_id": f"vid{i}", "url": str(video), "captions": str(captions), "meta": {"n": i}})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def set_mp4_rotation(path: Path, degrees: int) -> Path:
    """Patch the video track's display matrix (tkhd) of an mp4 in place: clockwise 0/90/180/270.

    ffmpeg 5.1 has no option to write a display matrix, so tests write it the way phones do.
    """
    import struct

    one, minus = 0x10000, 0xFFFF0000  # 16.16 fixed point 1 and -1
    abcd = {0: (one, 0, 0, one), 90: (0, one, minus, 0), 180: (minus, 0, 0, minus), 270: (0, minus, one, 0)}[degrees]
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")  # the first track: make_video writes the video first
    assert at != -1, f"{path} has no tkhd box"
    version = data[at + 4]
    matrix = at - 4 + (60 if version == 1 else 48)  # box start + fixed fields before the matrix
    a, b, c, d = abcd
    data[matrix:matrix + 36] = struct.pack(">9I", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    return path
