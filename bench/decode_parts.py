"""Parts 4-6 of bench/pipeline.py (decode ways, JPEG encoders, decode peak memory): each measurement runs
bench/decode_probe.py in a fresh process (its own peak RSS, nothing cached from an earlier one) on the
generated 1280x720 test video (bench/corpora.py). bench/pipeline.py's docstring says what each part does.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Each part takes `make_720p(minutes) -> Path` (bench/corpora.py): bench/ is no package, so bench/pipeline.py
# loads both modules by path and passes it in.


DECODE_SCRIPT = HERE / "decode_probe.py"


def run_decode_probe(path: Path, way: str, requests: list[list[float]], size=(455, 256)) -> dict:
    """One decode in a fresh process (its own peak RSS, nothing cached from an earlier one)."""
    result = subprocess.run([sys.executable, str(DECODE_SCRIPT), way, str(path), str(size[0]), str(size[1]),
                             json.dumps(requests)], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _span(start: float, length: float = 19.0) -> list[float]:
    return [round(start + (i + 0.5) * length / 16, 6) for i in range(16)]


def decode_speed(repeats: int, make_720p) -> dict:
    """The same frames of the 60 s 720p video by each way; best CPU time of `repeats` runs."""
    path = make_720p(1)
    cases = {"16 over 60 s": [_span(0.0, 60.0)], "one 19 s span": [_span(20.0)],
             "8 overlapping spans": [_span(s) for s in (1, 5, 9, 13, 21, 25, 29, 33)]}
    out = {}
    for case, requests in cases.items():
        ways = ["pyav", "ffmpeg", "pyav_seek_loop"] + (["ffmpeg_fps_filter"] if case == "16 over 60 s" else [])
        rows = {}
        for way in ways:
            runs = [run_decode_probe(path, way, requests) for _ in range(repeats)]
            rows[way] = min(runs, key=lambda r: r["cpu_s"])
        for way, row in rows.items():
            row["pyav_cpu_speedup"] = round(row["cpu_s"] / rows["pyav"]["cpu_s"], 2)
            row["pyav_wall_speedup"] = round(row["wall_s"] / rows["pyav"]["wall_s"], 2)
        out[case] = rows
    return out


def jpeg_speed(make_720p) -> dict:
    """ms per frame to encode the same 455x256 RGB frames (quality 90, 4:2:0) by each encoder found."""
    result = subprocess.run([sys.executable, str(DECODE_SCRIPT), "jpeg", str(make_720p(1))], cwd=ROOT, check=True,
                            capture_output=True, text=True)
    *notes, last = result.stdout.strip().splitlines()
    for note in notes:  # encoders that could not be measured
        print(note)
    return json.loads(last)


def memory(make_720p) -> dict:
    out = {}
    for minutes in (1, 20):
        path = make_720p(minutes)
        length = minutes * 60.0
        cases = {"span": [_span(length / 2)], "whole": [_span(0.0, length)],
                 "16 spans": [_span(k * (length - 20.0) / 15) for k in range(16)]}
        for backend in ("pyav", "ffmpeg"):
            for case, requests in cases.items():
                if backend == "ffmpeg" and case == "16 spans":
                    continue  # 16 commands; each is one "span" run
                out[f"{minutes}min_{backend}_{case}"] = run_decode_probe(path, backend, requests)
    return out


def print_decode(rows: dict) -> None:
    for case, ways in rows.items():
        for way, r in ways.items():
            print(f"decode {case:>19} {way:>17}: {r['frames']:3d} frames, CPU {r['cpu_s']:6.2f} s, wall "
                  f"{r['wall_s']:6.2f} s; pyav backend faster by {r['pyav_cpu_speedup']}x CPU, "
                  f"{r['pyav_wall_speedup']}x wall")


def print_memory(mem: dict) -> None:
    for name, row in mem.items():
        print(f"decode memory {name:>20}: worker peak {row['worker_kb'] / 1024:7.1f} MiB, ffmpeg peak "
              f"{row['ffmpeg_kb'] / 1024:7.1f} MiB, CPU {row['cpu_s']} s")
    for key in sorted({k.split("_", 1)[1] for k in mem}):
        one, twenty = mem[f"1min_{key}"], mem[f"20min_{key}"]
        peak = [max(r["worker_kb"], r["ffmpeg_kb"]) for r in (one, twenty)]
        print(f"peak RSS 20-min / 1-min, {key}: {peak[1] / peak[0]:.2f}x (issue goal <= 1.3x)")
