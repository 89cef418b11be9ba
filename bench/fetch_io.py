"""Throughput of the fetch stage's HTTP download and of the manifest reader, each against a bare baseline
measured in the same run (127.0.0.1 only).

    python bench/fetch_io.py [--mib 64] [--rows 200000] [--repeats 3]

HTTP: ``pipeline.sources.fetch.fetch`` (retries, Range bookkeeping, sniffing, size cap, .part + rename) versus
``requests.get(stream=True)`` copied straight to a file. Manifest: ``read_manifest`` (validation,
path resolution, ManifestRow) versus ``json.loads`` per line. Prints MB/s and rows/s and the ratios.
"""
from __future__ import annotations

import os
import sys

# `python bench/NAME.py` puts bench/ first on sys.path, where pipeline.py and training.py would shadow the
# installed packages of those names: drop it (the project itself is installed, see pyproject.toml).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
# The local HTTP server fixture lives with the tests (not part of the installed packages).
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from pipeline.sources.fetch import cleanup, fetch
from pipeline.sources.fetch_config import FetchConfig
from pipeline.sources.manifest import read_manifest
from pipeline.sources.rows import ManifestRow
from tests.pipeline.http_fixture import LocalHTTPServer


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_http(mib: int, repeats: int, tmp: Path) -> tuple[float, float]:
    import requests

    data = b"\x00\x00\x00\x18ftypmp42" + os.urandom(mib * 1024 * 1024)
    with LocalHTTPServer() as server:
        url = server.add_file("big.mp4", data)

        def bare():
            with requests.get(url, stream=True, timeout=(10, 60)) as resp, open(tmp / "bare.mp4", "wb") as out:
                shutil.copyfileobj(resp.raw, out, 1024 * 1024)
            assert (tmp / "bare.mp4").stat().st_size == len(data)

        def ours():
            got = fetch(ManifestRow("big", url), tmp / "scratch", FetchConfig())
            assert os.path.getsize(got.video_path) == len(data)
            cleanup(got, FetchConfig())

        t_bare = best_of(repeats, bare)
        t_ours = best_of(repeats, ours)
    mb = len(data) / 1e6
    return mb / t_ours, mb / t_bare


def bench_manifest(rows: int, repeats: int, tmp: Path) -> tuple[float, float]:
    path = tmp / "m.jsonl"
    with open(path, "w") as out:
        for i in range(rows):
            out.write(json.dumps({"video_id": f"vid{i:08d}", "url": f"videos/{i}.mp4", "captions": f"caps/{i}.vtt",
                                  "meta": {"split": "train", "n": i}}) + "\n")

    def bare():
        with open(path, "rb") as handle:
            n = sum(1 for line in handle if json.loads(line))
        assert n == rows

    def ours():
        n = sum(1 for item in read_manifest(path) if isinstance(item, ManifestRow))
        assert n == rows

    return rows / best_of(repeats, ours), rows / best_of(repeats, bare)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours, bare = bench_http(args.mib, args.repeats, Path(tmp))
        print(f"http download {args.mib} MiB: fetch {ours:8.1f} MB/s   bare requests {bare:8.1f} MB/s   "
              f"ratio {ours / bare:.2f}")
        ours, bare = bench_manifest(args.rows, args.repeats, Path(tmp))
        print(f"manifest jsonl {args.rows} rows: read_manifest {ours:10.0f} rows/s   bare json.loads {bare:10.0f} "
              f"rows/s   ratio {ours / bare:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
