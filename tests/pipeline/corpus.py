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
