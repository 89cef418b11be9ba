"""How long the leakage review page takes to open in headless Chromium with thousands of flagged pairs.

A synthetic report folder (default 2,000 flagged video pairs of 2 sample pairs each, 4 frame matches per row,
so 16,000 thumbnail files; some decisions) is rendered by the real dedup/report.py, then opened from disk in
headless Chromium (playwright driving /usr/bin/chromium) a few times in fresh contexts. Measured: the load
event and the moment the page's script is ready for keys (`performance.mark("review-ready")`).
Baseline, same run: the same rows as a plain page would have them: every row's frames in the HTML, every
thumbnail loaded at once, every row laid out (no strips built on scroll, no `loading=lazy`, no
`content-visibility`).

    .venv/bin/python bench/report_load.py                  # 2,000 rows
    .venv/bin/python bench/report_load.py --rows 500 --runs 2
"""
from __future__ import annotations

import os
import sys

# `python bench/NAME.py` puts bench/ first on sys.path, where pipeline.py and training.py would shadow the
# installed packages of those names: drop it (the project itself is installed, see pyproject.toml).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_report(out: Path, rows: int, samples_per_row: int, seed: int = 0) -> dict:
    """summary.json + report.json + thumbs/ + decisions.json like the leakage job's, of `rows` video pairs."""
    from PIL import Image

    from common import storage
    from dedup import decisions as dec
    from dedup.match import HIST_BINS
    from dedup.rows import video_rows
    from dedup.thumbs import strip

    rng = np.random.default_rng(seed)
    pairs = []
    for r in range(rows):
        corpus_video, dataset, video = f"yt-{r // 3:05d}", ("msrvtt", "kinetics400", "ucf101")[r % 3], f"v{r:05d}"
        for s in range(samples_per_row):
            start = 20.0 * s
            matches = [{"corpus_frame_index": f, "corpus_time": round(start + 1.25 * f, 3), "downstream_frame_index": f,
                        "downstream_time": round(1.1 * f, 3), "similarity": round(0.999 - 0.0001 * r - 0.001 * f, 5)}
                       for f in range(4)]
            pairs.append({"corpus_key": f"{corpus_video}_{int(start * 1000)}", "corpus_video_id": corpus_video,
                          "corpus_shard": f"shards/shard-{r // 50:06d}.tar", "downstream_dataset": dataset,
                          "downstream_video_id": video, "similarity": matches[0]["similarity"], "matching_frames": 4,
                          "corpus_frames": 16, "corpus_frame_index": 0, "corpus_time": start,
                          "downstream_frame_index": 0, "downstream_time": 0.0, "frame_matches": matches,
                          "corpus_span": [start, start + 3.75], "downstream_span": [0.0, 3.3], "kind": "visual",
                          "kinds": ["visual"], "downstream_split": "test", "downstream_label": "label",
                          "downstream_path": f"/data/{dataset}/{video}.mp4"})
    hist = np.histogram([p["similarity"] for p in pairs], HIST_BINS)[0]
    summary = {"random_init": False, "model": "ViT-B-32@224:laion2b_s34b_b79k:0123456789abcdef", "device": "cuda",
               "threshold": 0.9, "min_matching_frames": 1, "k": 32, "index": {"kind": "flat", "on_gpu": False, "frames": 80000},
               "corpus": {"shards_pattern": "shards/shard-*.tar", "samples_read": 100000, "frames_per_sample": 0,
                          "frames_searched": 1600000, "videos": 20000, "videos_with_youtube_id": 0, "features": {},
                          "failures": {}, "bad_shards": 0},
               "datasets": {name: {"format": name, "error": None, "videos_listed": 10000, "videos_with_file": 10000,
                                   "videos_checked": 10000, "with_youtube_id": 0, "bad_rows": 0, "decode_failures": {},
                                   "pairs_flagged": 0, "by_kind": {}, "downstream_videos_flagged": 0}
                            for name in ("msrvtt", "kinetics400", "ucf101")},
               "pairs_flagged": len(pairs), "by_kind": {"visual": len(pairs)}, "blocked": 0,
               "histogram": {"bin_edges": [round(float(x), 4) for x in HIST_BINS], "pairs": hist.tolist(),
                             "best_per_sample": hist.tolist()},
               "sweep": {"thresholds": [0.9, 0.95], "pairs": [len(pairs), len(pairs) // 2]}, "seconds": 1.0,
               "near_misses": [], "strip_rows": rows}
    identity = dec.report_identity(summary)
    summary["report_id"] = dec.report_id(identity)
    storage.write_json(out / "summary.json", summary)
    storage.write_json(out / "report.json", pairs)
    review_rows = video_rows(pairs)
    (out / "thumbs").mkdir(parents=True)
    colours = rng.integers(0, 255, (64, 3))
    names = {n for row in review_rows for item in strip(row) for n in (item["corpus"], item["downstream"])}
    for i, name in enumerate(sorted(names)):  # small distinct JPEGs (the job's are 160x120 frames)
        img = np.empty((120, 160, 3), np.uint8)
        img[:] = colours[i % 64]
        img[40:80, (i * 7) % 120:(i * 7) % 120 + 40] = 255 - colours[i % 64]
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, format="JPEG", quality=80)
        (out / name).write_bytes(buffer.getvalue())
    decided = dec.Decisions(report_id=summary["report_id"], identity=identity)
    for row in review_rows[: rows // 4]:  # a review a quarter done
        entry = {"corpus_video_id": row["key"][0], "downstream_dataset": row["key"][1],
                 "downstream_video_id": row["key"][2], "decision": ("leak", "not_leak", "unsure")[row["rank"] % 3]}
        dec.apply(decided, [entry], review_rows)
    dec.save(out, decided)
    return {"pairs": pairs, "summary": summary, "decided": decided, "thumbs": len(names)}


def render(out: Path, report: dict, eager: bool) -> Path:
    import re

    from dedup.report import figure_html, render_html
    from dedup.rows import video_rows
    from dedup.thumbs import existing, strip

    available = existing(out)
    page = render_html(report["pairs"], report["summary"], report["decided"], available, str(out))
    if eager:  # the baseline: every row's frames in the HTML, every image fetched at once, every row laid out
        rows = video_rows(report["pairs"])

        def inline(match: re.Match) -> str:
            row = rows[int(match.group(1))]
            figures = "".join(figure_html(item, available, row["downstream_dataset"]) for item in strip(row))
            return f"<div class='strip'>{figures}</div>"

        page = re.sub(r"<div class='strip' data-s='(\d+)'></div>", inline, page)
        page = page.replace("loading='lazy' ", "").replace("content-visibility:auto;", "")
    path = out / ("report-eager.html" if eager else "report.html")
    path.write_text(page)
    return path


def measure(path: Path, runs: int, chromium: str) -> list[tuple[float, float, int]]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        for _ in range(runs):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(path.as_uri(), wait_until="load", timeout=600_000)
            page.wait_for_selector("body[data-ready='1']", timeout=600_000)
            load_ms, ready_ms, images = page.evaluate(
                "() => [performance.getEntriesByType('navigation')[0].loadEventEnd,"
                " performance.getEntriesByName('review-ready')[0].startTime,"
                " [...document.images].filter(i => i.complete && i.naturalWidth > 0).length]")
            out.append((load_ms, ready_ms, images))
            context.close()
        browser.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="flagged video pairs (review rows)")
    parser.add_argument("--samples-per-row", type=int, default=2, help="flagged sample pairs per row")
    parser.add_argument("--runs", type=int, default=3, help="page loads per variant (the median is printed)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--keep", help="write the synthetic report folder here and keep it")
    args = parser.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="report-load-"))
    if work.exists() and any(work.iterdir()):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        report = synthetic_report(work, args.rows, args.samples_per_row)
        t1 = time.perf_counter()
        page = render(work, report, eager=False)
        render_s = time.perf_counter() - t1
        eager = render(work, report, eager=True)
        print(f"synthetic report: {args.rows} video pairs ({len(report['pairs'])} sample pairs), "
              f"{report['thumbs']} thumbnails, made in {t1 - t0:.1f} s; report.html {page.stat().st_size / 1e6:.1f} MB "
              f"rendered in {render_s:.2f} s")
        results = {}
        for name, path in (("lazy (the report)", page), ("eager (baseline)", eager)):
            runs = measure(path, args.runs, args.chromium)
            load = statistics.median(r[0] for r in runs)
            ready = statistics.median(r[1] for r in runs)
            results[name] = load
            print(f"{name:<18} load event {load:8.0f} ms  ready for keys {ready:8.0f} ms  images loaded "
                  f"{runs[0][2]:>6}  (runs: {', '.join(f'{r[0]:.0f}' for r in runs)} ms)")
        lazy, base = results["lazy (the report)"], results["eager (baseline)"]
        print(f"load time: {lazy / 1000:.2f} s for {args.rows} flagged video pairs; baseline {base / 1000:.2f} s; "
              f"ratio baseline / report {base / lazy:.1f}x")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
