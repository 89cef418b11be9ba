"""The frames of the report's strips as small JPEG files in output.dir/thumbs/, which the page lazy-loads.

Inline base64 images cannot be lazy-loaded: with thousands of rows the page itself would be hundreds of MB.
So each frame is its own file, named by what it shows (a hash of corpus sample key + frame index, or of
downstream dataset + video + frame index), so a rerun finds the ones it made before and a frame shared by
several rows is written once. Corpus frames come from the shards that hold them (one pass per shard, only
the samples needed); downstream frames from one decode per video (the same frame spacing as its features,
so the indexes match). A shard deleted since the search, a frame that does not decode: its thumbnail is
missing, counted and named in one line; the page shows "no frame" there.
"""
from __future__ import annotations

import hashlib
import io
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from common import storage
from common.deps import require

DIR = "thumbs"
SIZE = (160, 120)  # the box a thumbnail fits in (the page shows them at this size)


def _name(prefix: str, *parts: Any) -> str:
    digest = hashlib.sha1("\0".join(str(p) for p in parts).encode()).hexdigest()[:20]
    return f"{DIR}/{prefix}-{digest}.jpg"


def corpus_thumb(key: str, frame: int) -> str:
    return _name("c", key, int(frame))


def downstream_thumb(dataset: str, video_id: str, frame: int) -> str:
    return _name("d", dataset, video_id, int(frame))


def strip(row: dict) -> list[dict]:
    """The row's strip: per frame match the two thumbnails and what to print under them. A row without a
    frame match (source id or text only) shows the first frame of each video, said to be just that."""
    out = []
    for m in row["frames"]:
        out.append({"corpus": corpus_thumb(m["corpus_key"], m["corpus_frame_index"]),
                    "downstream": downstream_thumb(row["downstream_dataset"], row["downstream_video_id"],
                                                   m["downstream_frame_index"]),
                    "corpus_key": m["corpus_key"], "corpus_shard": m.get("corpus_shard") or "",
                    "corpus_frame_index": m["corpus_frame_index"], "corpus_time": m.get("corpus_time"),
                    "downstream_frame_index": m["downstream_frame_index"], "downstream_time": m.get("downstream_time"),
                    "similarity": m["similarity"], "match": True})
    if not out:
        first = row["first_sample"]
        out.append({"corpus": corpus_thumb(first["key"], 0),
                    "downstream": downstream_thumb(row["downstream_dataset"], row["downstream_video_id"], 0),
                    "corpus_key": first["key"], "corpus_shard": first["shard"], "corpus_frame_index": 0,
                    "corpus_time": None, "downstream_frame_index": 0, "downstream_time": None,
                    "similarity": None, "match": False})
    return out


def _jpeg(image: np.ndarray) -> bytes:
    Image = require("PIL.Image", "pillow")
    img = Image.fromarray(np.asarray(image, np.uint8))
    img.thumbnail(SIZE)
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def existing(out_dir: str | Path) -> set[str]:
    """Thumbnails already in out_dir/thumbs/ (one listing)."""
    return {f"{DIR}/{name}" for name in storage.listdir(storage.join(out_dir, DIR))}


def write_thumbnails(out_dir: str | Path, rows: list[dict], frames_per_video: dict[str, int]) -> dict:
    """Write the missing thumbnails of these rows' strips; returns counts and one-line notes."""
    from dedup.corpus import iter_shard
    from dedup.frames import decode_frames
    from features.embed import decode_image
    from pipeline.errors import StageError

    have = existing(out_dir)
    counts: Counter = Counter()
    corpus: dict[str, dict[tuple[str, int], str]] = {}  # shard -> (key, frame) -> thumbnail
    downstream: dict[str, tuple[str, dict[int, str]]] = {}  # video path -> (dataset, frame -> thumbnail)
    for row in rows:
        for item in strip(row):
            if item["corpus"] in have:
                counts["reused"] += 1
            elif item["corpus_shard"]:
                corpus.setdefault(item["corpus_shard"], {})[(item["corpus_key"], item["corpus_frame_index"])] = item["corpus"]
            if item["downstream"] in have:
                counts["reused"] += 1
            elif row.get("downstream_path"):  # none: a downstream entry without a video file (source id only)
                downstream.setdefault(row["downstream_path"], (row["downstream_dataset"], {}))[1][
                    item["downstream_frame_index"]] = item["downstream"]

    def put(name: str, image: np.ndarray) -> None:
        storage.write_bytes(storage.join(out_dir, name), _jpeg(image))
        have.add(name)
        counts["written"] += 1

    notes = []
    for shard, wanted in sorted(corpus.items()):
        if not storage.exists(shard):
            notes.append(f"corpus shard {storage.redact(shard)} no longer exists: {len(wanted)} thumbnails left out")
            continue
        keys = {k for k, _ in wanted}
        for sample in iter_shard(shard):
            if sample.key not in keys:
                continue
            for (key, index), name in wanted.items():
                if key != sample.key or name in have:
                    continue
                try:
                    put(name, decode_image(sample.frames[index]))
                except (IndexError, OSError, ValueError):
                    pass  # counted below as missing: the page shows "no frame"
    for path, (dataset, wanted) in sorted(downstream.items()):
        try:
            video = decode_frames(path, frames_per_video.get(dataset, 8), short_side=SIZE[1])
        except StageError as exc:
            notes.append(f"downstream video {path} does not decode now ({exc.error_class}): "
                         f"{len(wanted)} thumbnails left out")
            continue
        for index, name in wanted.items():
            if index < len(video.frames):
                put(name, video.frames[index])
    return {"written": counts["written"], "reused": counts["reused"], "notes": notes,
            "missing": len(wanted_names(rows) - have)}


def wanted_names(rows: list[dict]) -> set[str]:
    """The thumbnails these rows' strips can have: not those of a downstream entry without a video file."""
    names = set()
    for row in rows:
        for item in strip(row):
            if item["corpus_shard"]:
                names.add(item["corpus"])
            if row.get("downstream_path"):
                names.add(item["downstream"])
    return names
