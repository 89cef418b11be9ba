"""Inputs of bench/pipeline.py: generated test videos and manifests, cached under .cache/bench.

- `make_testsrc(width, height, minutes)`: a testsrc2 H.264 video (30 fps, GOP 2 s, AAC sine), 1 minute or
  that minute looped (stream copy) to `minutes`; the 1280x720 ones are parts 4-6's inputs.
- `corpus(n, width, height, minutes)`: `n` copies of the 1-minute video (looped to `minutes`) with a speech
  track (real LibriVox speech, see `speech_track`) and a generated VTT each, and their manifest: captioned
  inputs whose audio an ASR pass can transcribe.
- `asr_variant(manifest, fraction, layout)`: the same rows with the captions taken off a `fraction` of them,
  spread evenly (with 0.33 every third row, from the second: with the demo's 3 rows per input shard, every
  shard holds one video that needs ASR, so every shard goes through the ASR actors), or the first rows.
- `demo_manifest(arg)`: the demo corpus (generated when missing), or `arg`.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from common.paths import CACHE_DIR, DATA_DIR

ROOT = Path(__file__).resolve().parent.parent
BENCH = CACHE_DIR / "bench"
# Debian pocketsphinx-testdata (scripts/setup.sh): five LibriVox clips, 24.7 s of read speech in all
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def demo_manifest(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    manifest = DATA_DIR / "demo" / "manifest.jsonl"
    if not manifest.exists():
        made = subprocess.run([sys.executable, "-m", "pipeline.demo", "--out", str(manifest.parent)], cwd=ROOT)
        if made.returncode != 0 or not manifest.exists():  # no demo generator: a generated captioned corpus
            from tests.pipeline.corpus import make_corpus

            return make_corpus(BENCH / "corpus", n=12, duration=48.0)
    return manifest


def make_testsrc(width: int, height: int, minutes: int) -> Path:
    BENCH.mkdir(parents=True, exist_ok=True)
    name = f"{height}p" if width * 9 == height * 16 else f"{width}x{height}"   # 720p_1min.mp4 as before
    one = BENCH / f"{name}_1min.mp4"
    if not one.exists():
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={width}x{height}:rate=30:duration=60", "-f", "lavfi", "-i", "sine=duration=60",
                        "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p", "-c:a", "aac",
                        "-shortest", str(one)], check=True, timeout=1800)
    if minutes == 1:
        return one
    path = BENCH / f"{name}_{minutes}min.mp4"
    if not path.exists():  # the 1-minute file looped, stream copy: same content, `minutes` long
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", str(minutes - 1), "-i", str(one),
                        "-c", "copy", str(path)], check=True, timeout=1800)
    return path


def make_720p(minutes: int) -> Path:
    return make_testsrc(1280, 720, minutes)


def speech_track() -> Path:
    """60 s of real read speech: the LibriVox clips one after another, looped, as 44.1 kHz stereo WAV (what
    a video's AAC track usually is, so the job's resampling to 16 kHz mono is part of the work)."""
    path = BENCH / "librivox_60s.wav"
    if not path.exists():
        clips = sorted(LIBRIVOX.glob("*.wav"))
        if not clips:
            raise SystemExit(f"no speech clips in {LIBRIVOX}: install pocketsphinx-testdata (scripts/setup.sh)")
        BENCH.mkdir(parents=True, exist_ok=True)
        inputs = [a for clip in clips for a in ("-i", str(clip))]
        joined = "".join(f"[{i}:a]" for i in range(len(clips))) + f"concat=n={len(clips)}:v=0:a=1,aloop=loop=-1:size=2e9"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *inputs, "-filter_complex", joined, "-t", "60",
                        "-ar", "44100", "-ac", "2", str(path)], check=True, timeout=300)
    return path


def corpus(n: int, width: int = 1280, height: int = 720, minutes: int = 1) -> Path:
    """`n` captioned videos of `width`x`height` with a speech track, `minutes` long (the minute looped),
    copies of one file (cached), and their manifest."""
    from tests.pipeline.corpus import make_vtt

    tag = f"{width}x{height}" + (f"-{minutes}min" if minutes != 1 else "")
    folder = BENCH / f"corpus-{tag}-speech-{n}"
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        folder.mkdir(parents=True, exist_ok=True)
        narrated = BENCH / f"{width}x{height}_1min_speech.mp4"
        if not narrated.exists():   # the test video's picture (stream copy), the speech as AAC
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(make_testsrc(width, height, 1)),
                            "-i", str(speech_track()), "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
                            "-shortest", str(narrated)], check=True, timeout=300)
        source = narrated
        if minutes != 1:
            source = BENCH / f"{width}x{height}_{minutes}min_speech.mp4"
            if not source.exists():
                subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", str(minutes - 1), "-i",
                                str(narrated), "-c", "copy", str(source)], check=True, timeout=1800)
        rows = []
        for i in range(n):
            video = folder / f"v{i}.mp4"
            shutil.copyfile(source, video)
            vtt = make_vtt(folder / f"v{i}.en.vtt", 60.0 * minutes)
            rows.append({"video_id": f"v{i}", "url": str(video), "captions": str(vtt)})
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def asr_variant(manifest: Path, fraction: float, layout: str = "spread") -> tuple[Path, int]:
    """The manifest with no captions on `fraction` of its rows; (path, rows without). `layout` "spread":
    evenly spread (every input shard gets such a video); "first": the first rows (the input shards of the
    rest have captions only, so the job runs them beside the ASR ones: its union of two branches)."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    dropped = 0
    for i, row in enumerate(rows):
        if layout == "first":
            drop = i < int(len(rows) * fraction + 0.5)
        else:
            drop = int((i + 1) * fraction + 0.5) > int(i * fraction + 0.5)   # 0.33: rows 1, 4, 7, ...
        if drop:
            row.pop("captions", None)
            dropped += 1
    out = manifest.parent / f"manifest-asr-{fraction:g}-{layout}.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out, dropped
