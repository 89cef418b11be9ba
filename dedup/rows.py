"""Flagged sample pairs -> review rows: one row per (corpus video, downstream dataset, downstream video).

The job flags (corpus sample, downstream video) pairs: one corpus video cut into many overlapping samples
shows up once per sample against the same downstream video. A person judges a video against a video, so
the report, the decisions and the blocklist all work on rows keyed by `pair_key(p)`:
  similarity       the best similarity of any sample (None: a source-id or text match only)
  samples          how many corpus samples matched (their keys stay in `samples`, best first)
  matching_frames  corpus frames over the threshold, summed over the samples (of `frames_searched`)
  frames           the STRIP best frame matches over all samples (corpus frame and time, downstream
                   frame and time, similarity), for the strip of thumbnails
  corpus_span / downstream_span  the time ranges (seconds, each video's own clock) the matched frames span
Rows are ordered by evidence: source-id matches (certain) first, then best similarity, then the number of
samples and frames that matched. Everything here is a pure function of report.json's pairs, so the
review server and `python -m dedup blocklist` rebuild the same rows without the job's state.
"""
from __future__ import annotations

from typing import Any, Iterable

STRIP = 4  # frame matches shown per row


def pair_key(pair: dict) -> tuple[str, str, str]:
    """(corpus video id, downstream dataset, downstream video id): what a decision is about."""
    return (str(pair["corpus_video_id"]), str(pair["downstream_dataset"]), str(pair["downstream_video_id"]))


def _matches(pair: dict) -> list[dict]:
    """A pair's frame matches, best first (pairs written before frame_matches existed: the one best pair)."""
    if pair.get("frame_matches"):
        return [dict(m, corpus_key=pair["corpus_key"], corpus_shard=pair.get("corpus_shard") or "")
                for m in pair["frame_matches"]]
    if pair.get("similarity") is None:
        return []
    return [{"corpus_key": pair["corpus_key"], "corpus_shard": pair.get("corpus_shard") or "",
             "corpus_frame_index": int(pair.get("corpus_frame_index") or 0), "corpus_time": pair.get("corpus_time"),
             "downstream_frame_index": int(pair.get("downstream_frame_index") or 0),
             "downstream_time": pair.get("downstream_time"), "similarity": pair["similarity"]}]


def _widen(span: list[float] | None, values: Iterable[Any]) -> list[float] | None:
    vals = [float(v) for v in values if v is not None]
    if span:
        vals += span
    return [min(vals), max(vals)] if vals else None


def video_rows(pairs: list[dict]) -> list[dict]:
    """Group sample pairs (report.json, or the near misses) into rows, ordered by evidence."""
    rows: dict[tuple[str, str, str], dict] = {}
    for p in pairs:
        key = pair_key(p)
        row = rows.get(key)
        if row is None:
            row = rows[key] = {
                "key": list(key), "corpus_video_id": key[0], "downstream_dataset": key[1],
                "downstream_video_id": key[2], "kinds": [], "similarity": None, "text_similarity": None,
                "samples": [], "matching_frames": 0, "frames_searched": 0, "frames": [],
                "corpus_span": None, "downstream_span": None, "youtube_id": None,
                "downstream_split": p.get("downstream_split"), "downstream_label": p.get("downstream_label"),
                "downstream_path": p.get("downstream_path") or "", "caption": None, "transcript": None,
                "first_sample": {"key": p["corpus_key"], "shard": p.get("corpus_shard") or ""},
            }
        for kind in p.get("kinds") or [p.get("kind") or "visual"]:
            if kind not in row["kinds"]:
                row["kinds"].append(kind)
        sim = p.get("similarity")
        if sim is not None and (row["similarity"] is None or sim > row["similarity"]):
            row["similarity"] = sim
        if p.get("text_similarity") is not None and (row["text_similarity"] is None
                                                     or p["text_similarity"] > row["text_similarity"]):
            row["text_similarity"] = p["text_similarity"]
            row["caption"], row["transcript"] = p.get("caption"), p.get("transcript")
        row["youtube_id"] = row["youtube_id"] or p.get("youtube_id")
        row["matching_frames"] += int(p.get("matching_frames") or 0)
        row["frames_searched"] += int(p.get("corpus_frames") or 0)
        row["samples"].append({"key": p["corpus_key"], "similarity": sim,
                               "matching_frames": int(p.get("matching_frames") or 0),
                               "frames_searched": int(p.get("corpus_frames") or 0), "kinds": list(p.get("kinds") or [])})
        row["frames"].extend(_matches(p))
        if p.get("corpus_span") or p.get("downstream_span"):
            row["corpus_span"] = _widen(row["corpus_span"], p.get("corpus_span") or [])
            row["downstream_span"] = _widen(row["downstream_span"], p.get("downstream_span") or [])
        elif sim is not None and int(p.get("matching_frames") or 0) > 0:  # pairs without spans: the best frames
            row["corpus_span"] = _widen(row["corpus_span"], [p.get("corpus_time")])
            row["downstream_span"] = _widen(row["downstream_span"], [p.get("downstream_time")])
    out = []
    for row in rows.values():
        order = {"source_id": 0, "visual": 1, "text": 2}
        row["kinds"].sort(key=lambda k: order.get(k, 3))
        row["kind"] = row["kinds"][0] if row["kinds"] else "visual"
        row["samples"].sort(key=lambda s: (-(s["similarity"] if s["similarity"] is not None else -2.0), s["key"]))
        # The strip: best matches first, one per (corpus frame, downstream frame) so no picture repeats.
        seen, strip = set(), []
        for m in sorted(row["frames"], key=lambda m: (-m["similarity"], m["corpus_key"], m["corpus_frame_index"])):
            ident = (m["corpus_key"], m["corpus_frame_index"], m["downstream_frame_index"])
            if ident not in seen:
                seen.add(ident)
                strip.append(m)
            if len(strip) == STRIP:
                break
        row["frames"] = strip
        row["n_samples"] = sum(1 for s in row["samples"] if s["similarity"] is not None) or len(row["samples"])
        out.append(row)
    out.sort(key=evidence_order)
    for rank, row in enumerate(out, start=1):
        row["rank"] = rank
    return out


def evidence_order(row: dict) -> tuple:
    """Source-id first, then best similarity, samples and frames that matched, then ids (a stable order)."""
    sim = row["similarity"] if row["similarity"] is not None else (row.get("text_similarity") or -2.0)
    return (row["kind"] != "source_id", -sim, -row["n_samples"], -row["matching_frames"],
            row["corpus_video_id"], row["downstream_dataset"], row["downstream_video_id"])


def what_matched(row: dict) -> str:
    """One line saying what the evidence is, for rows whose evidence is not (only) frames."""
    parts = []
    if "source_id" in row["kinds"]:
        parts.append(f"same YouTube id {row.get('youtube_id') or '?'} in the corpus video's metadata (manifest or "
                     f"sample meta) and in {row['downstream_dataset']}'s annotations")
    if "text" in row["kinds"] and row.get("text_similarity") is not None:
        parts.append(f"transcript vs caption similarity {row['text_similarity']:.4f}")
    if row["similarity"] is None and "visual" not in row["kinds"]:
        parts.append("no frame over the threshold")
    return "; ".join(parts)
