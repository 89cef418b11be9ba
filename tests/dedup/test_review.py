"""The leakage review: one row per (corpus video, downstream video), decisions made in the page with the keyboard
and saved through the review server (127.0.0.1), kept over a rerun of the job, and the blocklist made from them.

Reports come from the real leakage job on the smallest set that flags pairs (the one test_ray.py uses): three
demo videos cut into 30 s samples of 4 frames, the demo's Kinetics clips (4 frames each), a random-init tiny
tower with threshold 0.5 (every pair flagged, and demo-007's YouTube id matches a Kinetics clip).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.dedup.helpers import demo_downstream_config, demo_videos, write_shards_from_videos

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = {"model": "ViT-S-32", "random_init": True, "image_size": 32, "threads": 1}
VIDEOS = ("demo-002", "demo-005", "demo-007")  # one shard each (2 samples of 30 s)


def _config(path: Path, shards: Path, out: Path, corpus: Path, **output) -> Path:
    kinetics = [d for d in demo_downstream_config(corpus) if d["name"] == "kinetics400"]
    path.write_text(yaml.safe_dump({
        "model": TINY_MODEL, "search": {"threshold": 0.5},
        "corpus": {"shards": str(shards / "shard-*.tar"), "manifest": str(corpus / "manifest.jsonl")},
        "downstream": [dict(kinetics[0], frames=4)], "output": {"dir": str(out), **output}}))
    return path


def _leakage(capsys, *args: str) -> str:
    from dedup.__main__ import main

    assert main(["leakage", *args]) == 0
    return capsys.readouterr().out


def _dedup(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "dedup", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def template(demo_corpus: Path, tmp_path_factory) -> dict:
    """Shards of VIDEOS (+ a spare shard of demo-000 for reruns) and one finished run (its cache saves decodes)."""
    work = tmp_path_factory.mktemp("review")
    videos = {v[0]: v for v in demo_videos(demo_corpus)}
    write_shards_from_videos([videos[v] for v in VIDEOS], work / "shards", span_s=30.0, n_frames=4, samples_per_shard=2)
    write_shards_from_videos([videos["demo-000"]], work / "spare", span_s=30.0, n_frames=4, samples_per_shard=2)
    cfg = _config(work / "leakage.yaml", work / "shards", work / "out", demo_corpus)
    from common.config import load_config
    from dedup.config import LeakageConfig
    from dedup.leakage import run

    run(load_config(LeakageConfig, cfg))
    return {"work": work, "corpus": demo_corpus, "out": work / "out"}


def _report_copy(template: dict, dest: Path) -> Path:
    shutil.copytree(template["out"], dest, ignore=shutil.ignore_patterns("cache", "decisions*.json"))
    return dest


def _rows(out: Path) -> list[dict]:
    from dedup.rows import video_rows

    return video_rows(json.loads((out / "report.json").read_text()))


def test_rows_are_video_pairs_ordered_by_evidence(template: dict):
    out = template["out"]
    pairs = json.loads((out / "report.json").read_text())
    rows = _rows(out)
    keys = [tuple(r["key"]) for r in rows]
    assert len(keys) == len(set(keys)) == len({(p["corpus_video_id"], p["downstream_dataset"], p["downstream_video_id"])
                                                for p in pairs}) < len(pairs)
    for row in rows:
        mine = [p for p in pairs if (p["corpus_video_id"], p["downstream_dataset"], p["downstream_video_id"]) == tuple(row["key"])]
        assert row["n_samples"] == len(mine) and row["similarity"] == max(p["similarity"] or -1 for p in mine)
        assert sorted(s["key"] for s in row["samples"]) == sorted(p["corpus_key"] for p in mine)
        assert row["matching_frames"] == sum(p["matching_frames"] for p in mine)
        sims = [m["similarity"] for m in row["frames"]]
        assert 1 <= len(sims) <= 4 and sims == sorted(sims, reverse=True) and sims[0] == row["similarity"]
        assert all(m["corpus_time"] is not None and m["downstream_time"] is not None for m in row["frames"])
        assert row["corpus_span"][0] <= row["corpus_span"][1] and row["downstream_span"][0] <= row["downstream_span"][1]
    assert rows[0]["kind"] == "source_id" and rows[0]["corpus_video_id"] == "demo-007"  # certain first
    sims = [r["similarity"] for r in rows[1:]]
    assert sims == sorted(sims, reverse=True)
    html = (out / "report.html").read_text()
    assert html.count("<section class='row' id='row-") == len(rows)
    page = html.split("<script type='application/json'")[0]  # the rows, before the data and the script
    assert "t = " not in page and "same YouTube id -Z3UHZregBo" in page
    assert html.index("id='random-init'") < html.index("id='threshold-note'") < html.index("<h1")
    assert "cosine similarity 0.5" in html and f"{len(rows)} video pairs flagged" in html
    assert all(p["corpus_key"] in html for p in pairs)  # sample keys, in each row's details
    summary = json.loads((out / "summary.json").read_text())
    assert summary["video_pairs_flagged"] == len(rows) and summary["blocklist"]["undecided"] == len(rows)
    assert summary["thumbnails"]["missing"] == 0 and summary["thumbnails"]["written"] > 0


def test_decisions_of_another_report_or_unreadable_are_kept_aside(template: dict, tmp_path: Path):
    from dedup import decisions as dec

    out = _report_copy(template, tmp_path / "out")
    rid = json.loads((out / "summary.json").read_text())["report_id"]
    other = {"format": dec.FORMAT, "report_id": "0123456789abcdef", "report": {"model": "other-model"},
             "decisions": [{"corpus_video_id": "x", "downstream_dataset": "y", "downstream_video_id": "z",
                            "decision": "leak"}]}
    raw = json.dumps(other).encode()
    (out / "decisions.json").write_bytes(raw)
    res = _dedup("blocklist", "--report", str(out))
    assert res.returncode == 0, res.stderr
    note = [line for line in res.stdout.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "belongs to another report (0123456789abcdef" in note[0], res.stdout
    assert (out / "decisions-0123456789abcdef.json").read_bytes() == raw and not (out / "decisions.json").exists()

    (out / "decisions.json").write_text('{"format": "tvts-leakage-decisions/1", "report_id": ')  # cut short
    res = _dedup("blocklist", "--report", str(out))
    assert res.returncode == 0 and "is not JSON" in res.stdout
    aside = list(out.glob("decisions.unreadable-*.json"))
    assert len(aside) == 1 and aside[0].read_text().endswith('"report_id": ')

    # This report's own decisions, parked by a run of another report, come back.
    rows = _rows(out)
    mine = dec.Decisions(report_id=rid, identity={})
    dec.apply(mine, [dict(zip(dec.KEY_FIELDS, rows[1]["key"]), decision="leak")], rows)
    (out / f"decisions-{rid}.json").write_text(json.dumps(mine.to_json()))
    res = _dedup("blocklist", "--report", str(out))
    assert res.returncode == 0 and f"put back from decisions-{rid}.json" in res.stdout
    assert json.loads((out / "decisions.json").read_text())["decisions"][0]["decision"] == "leak"
    # A downloaded decisions file of another report is refused on one line, nothing changed.
    res = _dedup("blocklist", "--report", str(out), "--decisions", str(out / "decisions-0123456789abcdef.json"))
    assert res.returncode == 1 and "belongs to report 0123456789abcdef" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert json.loads((out / "decisions.json").read_text())["decisions"][0]["decision"] == "leak"


def test_blocklist_is_rebuilt_from_decisions(template: dict, tmp_path: Path):
    from dedup import decisions as dec
    from training.data import load_blocklist

    out = _report_copy(template, tmp_path / "out")
    rows = _rows(out)
    rid = json.loads((out / "summary.json").read_text())["report_id"]
    by_video: dict[str, list[dict]] = {}
    for row in rows:
        by_video.setdefault(row["corpus_video_id"], []).append(row)
    leak_video, fine_video = sorted(by_video)[:2]
    decided = dec.Decisions(report_id=rid, identity={})
    posted = [dict(zip(dec.KEY_FIELDS, by_video[leak_video][0]["key"]), decision="leak")]
    posted += [dict(zip(dec.KEY_FIELDS, r["key"]), decision="not_leak") for r in by_video[fine_video]]
    posted.append(dict(zip(dec.KEY_FIELDS, ["demo-004", "kinetics400", "gone"]), decision="leak"))  # not flagged now
    dec.apply(decided, posted, rows)
    dec.save(out, decided)

    res = _dedup("blocklist", "--report", str(out), "--undecided", "keep")
    assert res.returncode == 0, res.stderr
    text = (out / "blocklist.txt").read_text()
    # Only a person's "leak" blocks: the flagged one and the one this run no longer flags.
    assert load_blocklist([str(out / "blocklist.txt")]) == {leak_video, "demo-004"}
    assert f"decisions (decisions.json): 1 leak, {len(by_video[fine_video])} not a leak, 0 unsure" in text
    assert "1 decided leaks no longer flagged" in text and "output.blocklist_undecided: false" in text
    assert json.loads((out / "summary.json").read_text())["blocklist"]["block_undecided"] is False

    res = _dedup("blocklist", "--report", str(out), "--undecided", "block")
    assert res.returncode == 0
    blocked = load_blocklist([str(out / "blocklist.txt")])
    assert blocked == set(by_video) - {fine_video} | {"demo-004"}  # the not-a-leak video alone stays in training
    # Without --undecided the last choice holds (summary.json), as the review server's rebuilds use it.
    assert _dedup("blocklist", "--report", str(out)).returncode == 0
    assert load_blocklist([str(out / "blocklist.txt")]) == blocked


def _start_server(out: Path) -> tuple[subprocess.Popen, str, list[str]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "dedup", "review", "--report", str(out), "--port", "0"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if line.startswith("review: "):
            url = line.split()[1]
            assert url.startswith("http://127.0.0.1:")
            return proc, url, lines
    proc.wait(timeout=30)
    raise AssertionError(f"review server did not start: {lines}")


def _stop_server(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)  # the one process this test started, by its pid
    rest, _ = proc.communicate(timeout=30)
    return rest


def _post(url: str, body: dict, **headers) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_review_server_takes_only_its_own_page_and_report(template: dict, tmp_path: Path):
    from dedup.thumbs import strip

    out = _report_copy(template, tmp_path / "out")
    (out / strip(_rows(out)[0])[0]["corpus"]).unlink()  # a missing thumbnail
    pairs = json.loads((out / "report.json").read_text())
    gone = str(tmp_path / "deleted-shard.tar")
    pairs[-1]["corpus_shard"] = gone  # a corpus shard deleted since the run
    (out / "report.json").write_text(json.dumps(pairs))
    proc, url, lines = _start_server(out)
    try:
        notes = [line for line in lines if line.startswith("note:")]
        assert any("1 of" in n and "thumbnails are missing" in n for n in notes), lines
        assert any("1 corpus shards named in report.json no longer exist" in n and gone in n for n in notes), lines
        base = url.rsplit("/", 1)[0]
        with urllib.request.urlopen(url, timeout=30) as res:
            assert res.status == 200 and b"review-data" in res.read()
        rows = _rows(out)
        rid = json.loads((out / "summary.json").read_text())["report_id"]
        one = [{"corpus_video_id": rows[0]["key"][0], "downstream_dataset": rows[0]["key"][1],
                "downstream_video_id": rows[0]["key"][2], "decision": "leak"}]
        api = base + "/api/decisions"
        assert _post(api, {"report_id": rid, "decisions": one}, Origin="http://evil.example")[0] == 403
        assert _post(api, {"report_id": "ffffffffffffffff", "decisions": one})[0] == 409
        code, body = _post(api, {"report_id": rid, "decisions": [dict(one[0], decision="maybe")]})
        assert code == 400 and "'maybe' is not one of" in body["error"]
        assert not (out / "decisions.json").exists()
        code, body = _post(api, {"report_id": rid, "decisions": one})
        assert code == 200 and "1 leak" in body["message"], body
        saved = json.loads((out / "decisions.json").read_text())
        assert saved["report_id"] == rid and [d["decision"] for d in saved["decisions"]] == ["leak"]
        assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left beside it
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(base + "/thumbs/not-there.jpg", timeout=30)
        assert exc.value.code == 404
    finally:
        rest = _stop_server(proc)
    assert proc.returncode == 0 and "missing thumbnail thumbs/not-there.jpg" in rest


@pytest.mark.slow  # a browser, two leakage runs and the review server: 45-60 s on 2 busy cores
def test_review_in_chromium_keeps_decisions_over_a_rerun(template: dict, tmp_path: Path, capsys):
    """Keyboard review in headless Chromium, saved through the server; a rerun (one corpus shard deleted, one
    added) keeps the decisions and rebuilds the blocklist from them."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-test.txt")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (scripts/setup.sh --test installs it)")
    from dedup import decisions as dec
    from training.data import load_blocklist

    shards, out = tmp_path / "shards", tmp_path / "out"
    shutil.copytree(template["work"] / "shards", shards)
    shutil.copytree(template["out"] / "cache", out / "cache")  # downstream features: no decode
    cfg = _config(tmp_path / "leakage.yaml", shards, out, template["corpus"])
    _leakage(capsys, "--config", str(cfg))
    rows = _rows(out)
    proc, url, _ = _start_server(out)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']")
            first = page.locator("body > p").first
            assert "RANDOM-INIT" in first.inner_text() and "0.5" in page.locator("#threshold-note").inner_text()
            for key in "jlnujl":  # row 1 leak, 2 not a leak, 3 unsure, (4 skipped), 5 leak
                page.keyboard.press(key)
            page.keyboard.press("s")
            page.wait_for_selector("#status.ok")
            states = [page.get_attribute(f"#row-{i}", "data-decision") for i in range(1, 7)]
            assert states == ["leak", "not_leak", "unsure", "", "leak", ""]
            assert page.inner_text("#count-leak") == "2" and page.inner_text("#count-undecided") == str(len(rows) - 4)
            assert page.locator("#decision-histogram rect.bar-leak").count() >= 1
            assert page.locator("#row-1 .strip img").count() >= 2  # built as it came on screen
            page.screenshot(path=str(tmp_path / "review.png"))
            saved = {tuple(d[k] for k in dec.KEY_FIELDS): d["decision"]
                     for d in json.loads((out / "decisions.json").read_text())["decisions"]}
            want = {tuple(rows[i]["key"]): d for i, d in ((0, "leak"), (1, "not_leak"), (2, "unsure"), (4, "leak"))}
            assert saved == want
            assert "decisions (decisions.json): 2 leak, 1 not a leak, 1 unsure" in (out / "blocklist.txt").read_text()

            # Rerun: a video no one called a leak loses its shard, a new video arrives; only leaks block now.
            leak_videos = {k[0] for k, d in want.items() if d == "leak"}
            decided_only = [k[0] for k, d in want.items() if k[0] not in leak_videos | {"demo-007"}]
            dropped = (decided_only or [v for v in VIDEOS if v not in leak_videos | {"demo-007"}])[0]
            dropped_shard = next(s for s in sorted(shards.glob("shard-*.tar")) if dropped in s.read_bytes().decode("latin-1"))
            dropped_shard.unlink()
            for name in ("tar", "parquet"):
                for spare in (template["work"] / "spare").glob(f"shard-*.{name}"):
                    shutil.copy(spare, shards / f"shard-000900.{name}")
            printed = _leakage(capsys, "--config", str(cfg), "--set", "output.blocklist_undecided=false")
            notes = [line for line in printed.splitlines() if line.startswith("note:")]
            # Same report, so decisions.json is used (not set aside); the deleted shard is said on one line.
            assert len(notes) == bool(decided_only), printed
            assert not notes or ("not in this run's shards" in notes[0] and dropped in notes[0]), printed
            again = _rows(out)
            keys_now = {tuple(r["key"]) for r in again}
            kept = json.loads((out / "decisions.json").read_text())["decisions"]
            assert {tuple(d[k] for k in dec.KEY_FIELDS): d["decision"] for d in kept} == want  # nothing lost
            assert any(r["corpus_video_id"] == "demo-000" for r in again)
            assert load_blocklist([str(out / "blocklist.txt")]) == leak_videos
            summary = json.loads((out / "summary.json").read_text())
            assert summary["blocklist"]["leak"] == sum(1 for k, d in want.items() if d == "leak" and k in keys_now)

            page.reload()
            page.wait_for_selector("body[data-ready='1']")
            for i, row in enumerate(again, start=1):
                state = page.get_attribute(f"#row-{i}", "data-decision")
                assert state == want.get(tuple(row["key"]), ""), (row["key"], state)  # kept, new ones undecided
            stale = [k for k in want if k not in keys_now]
            if stale:
                assert "corpus video not in this run's shards" in page.inner_text("body")
            page.screenshot(path=str(tmp_path / "review-rerun.png"), full_page=False)

            # The same page opened as a file: saving downloads decisions.json, folded in by `blocklist --decisions`.
            file_page = browser.new_page(accept_downloads=True)
            file_page.goto((out / "report.html").as_uri())
            file_page.wait_for_selector("body[data-ready='1']")
            target = next(i for i, r in enumerate(again, start=1) if tuple(r["key"]) not in want)
            file_page.locator(f"#row-{target}").click()
            with file_page.expect_download() as download:
                file_page.keyboard.press("l")
                file_page.keyboard.press("s")
            downloaded = tmp_path / "downloaded-decisions.json"
            download.value.save_as(downloaded)
            browser.close()
        assert not errors, errors
    finally:
        rest = _stop_server(proc)
    assert proc.returncode == 0, rest
    res = _dedup("blocklist", "--report", str(out), "--decisions", str(downloaded))
    assert res.returncode == 0, res.stderr
    merged = {tuple(d[k] for k in dec.KEY_FIELDS): d["decision"]
              for d in json.loads((out / "decisions.json").read_text())["decisions"]}
    assert merged == {**want, tuple(again[target - 1]["key"]): "leak"}
    assert load_blocklist([str(out / "blocklist.txt")]) == leak_videos | {again[target - 1]["corpus_video_id"]}
    assert (tmp_path / "review.png").stat().st_size > 20_000
