"""The leakage job on the demo corpus and its planted-leak downstream set (pipeline/demo/downstream.py).

Corpus shards are cut from the demo videos with the pipeline's own probe + decode (tests/dedup/helpers.py),
so this test does not depend on the whole pipeline job. Features are the demo config's (configs/demo.yaml,
`leakage.model`: DINOv2 ViT-S/14, real weights from scripts/setup.sh). The run itself is the `demo_run`
fixture (tests/dedup/conftest.py), shared with test_frames_per_sample.py.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def _pair_id(p: dict) -> tuple[str, str, str]:
    return (p["corpus_video_id"], p["downstream_dataset"], p["downstream_video_id"])


def test_every_planted_leak_is_flagged_and_ranked_above_unrelated_pairs(demo_run: dict):
    pairs = json.loads((demo_run["result"].out_dir / "report.json").read_text())
    leaks = {(l["corpus_video_id"], l["dataset"], l["downstream_video_id"]): l["kind"] for l in demo_run["truth"]["leaks"]}
    assert len(leaks) == 7
    corpus = demo_run["result"].summary["corpus"]
    assert corpus["samples_read"] > 0 and corpus["features"] == {"stored": corpus["samples_read"]}
    best_rank: dict[tuple, int] = {}
    for p in pairs:
        best_rank.setdefault(_pair_id(p), p["rank"])
    missing = [k for k in leaks if k not in best_rank]
    assert not missing, f"planted leaks not flagged: {missing}"
    for key, kind in leaks.items():
        pair = next(p for p in pairs if _pair_id(p) == key)
        assert pair["kind"] == kind if kind == "source_id" else kind in pair["kinds"], (key, pair)
    unrelated = [p["rank"] for p in pairs if _pair_id(p) not in leaks]
    worst_leak = max(best_rank[k] for k in leaks)
    assert not unrelated or worst_leak < min(unrelated), (worst_leak, min(unrelated))
    # Below the threshold nothing is a leak either (the near misses of the report).
    near = demo_run["result"].summary["near_misses"]
    leak_sims = [p["similarity"] for p in pairs if _pair_id(p) in leaks and p["similarity"] is not None]
    assert all(n["similarity"] < min(leak_sims) for n in near if _pair_id(n) not in leaks)


def test_report_renders_in_headless_chromium(demo_run: dict, tmp_path: Path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    report = demo_run["result"].out_dir / "report.html"
    html = report.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # opens offline
    screenshot = tmp_path / "report.png"
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    env = dict(os.environ, HOME=str(tmp_path))
    subprocess.run(base + [f"--screenshot={screenshot}", "--window-size=1280,2000", report.as_uri()],
                   check=True, capture_output=True, timeout=120, env=env)
    assert screenshot.is_file() and screenshot.stat().st_size > 20_000
    dom = subprocess.run(base + ["--dump-dom", report.as_uri()], check=True, capture_output=True, text=True,
                         timeout=120, env=env).stdout
    # The first line names the features: the demo's are real DINOv2 ones, so no random-init warning.
    assert 'id="model-note"' in dom and dom.index('id="model-note"') < dom.index("<h1")
    note = dom[dom.index('id="model-note"'):dom.index("<h1")]
    assert "DINOv2" in note and "dinov2-vits14@" in note and 'id="random-init"' not in dom
    assert dom.index('id="model-note"') < dom.index('id="threshold-note"') < dom.index("<h1")  # features, threshold
    for table in ("datasets", "rows", "near-misses", "sweep-table", "histogram", "decision-histogram", "pair-histogram"):
        assert f'id="{table}"' in dom
    # One row per (corpus video, downstream video), each with its strip's thumbnails on disk (lazy-loaded files).
    from dedup.rows import video_rows
    from dedup.thumbs import strip

    rows = video_rows(demo_run["result"].pairs)
    assert dom.count('<section class="row" id="row-') == len(rows) < len(demo_run["result"].pairs)
    for row in rows:
        for item in strip(row):
            assert (report.parent / item["corpus"]).is_file() and (report.parent / item["downstream"]).is_file(), row["key"]
    assert "t = " not in dom.split('id="review-data"')[0]
    shutil.copy(screenshot, demo_run["work"] / "report.png")


def test_blocklist_names_the_leaked_videos_and_rewrite_drops_them(demo_run: dict, tmp_path: Path, capsys):
    from dedup.__main__ import main
    from dedup.blocklist import read_blocklist
    from dedup.corpus import expand_shards, iter_samples

    out = demo_run["result"].out_dir
    blocked = read_blocklist([out / "blocklist.txt"])
    leaked_videos = {l["corpus_video_id"] for l in demo_run["truth"]["leaks"]}
    assert leaked_videos <= blocked
    shards = str(demo_run["work"] / "shards" / "shard-*.tar")
    assert main(["rewrite-shards", "--shards", shards, "--blocklist", str(out / "blocklist.txt"),
                 "--out", str(tmp_path / "clean")]) == 0
    kept = list(iter_samples(expand_shards(str(tmp_path / "clean" / "shard-*.tar"))))
    before = list(iter_samples(expand_shards(shards)))
    assert kept and all(s.video_id not in blocked for s in kept)
    assert len(kept) == sum(1 for s in before if s.video_id not in blocked)
    assert sorted((tmp_path / "clean").glob("shard-*_stats.json"))  # committed like pipeline shards


def test_rerun_reuses_cached_downstream_features(demo_run: dict):
    from common.config import load_config
    from dedup.config import LeakageConfig
    from dedup.leakage import run

    again = run(load_config(LeakageConfig, demo_run["config"]))
    assert all(d["features_cached"] for d in again.summary["datasets"].values())
    first = [(_pair_id(p), p["kind"], p["similarity"]) for p in demo_run["result"].pairs]
    assert [(_pair_id(p), p["kind"], p["similarity"]) for p in again.pairs] == first
