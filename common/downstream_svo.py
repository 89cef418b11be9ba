"""SVO-Probes (Hendricks & Nematzadeh 2021) from its files: a sentence, a positive and a negative image.

Format `svo` of the downstream datasets (training/'s `--task svo-probes`); plain stdlib like
common/downstream.py, whose helpers it shares. Two layouts, told apart by the file name:
  .jsonl   one object per probe: {"sentence", "pos_image", "neg_image", "neg_type": subject|verb|object}
           (also subj / obj); image paths relative to the jsonl's folder (or absolute). Other fields
           (pos_triplet, neg_triplet, ...) are ignored. The demo's shapes_svo set is one.
  .csv     the release's svo_probes.csv: `sentence`, `subj_neg` / `verb_neg` / `obj_neg` (exactly one
           true), `pos_image_id` / `neg_image_id` and/or `pos_url` / `neg_url`; the images downloaded
           beforehand under the dataset's video_root (default: the csv's folder), found by image id (any
           image extension) or by the url's file name.
A malformed row is counted in `bad_rows` and skipped; a csv without the columns is a DownstreamFormatError.
A probe whose image file is absent keeps a None path (the evaluation counts it and leaves it out).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from common.downstream import IMAGE_EXTENSIONS, DownstreamFormatError, VideoIndex, read_text

__all__ = ["SVO_TYPES", "SvoProbe", "SvoReadResult", "read_svo"]

SVO_TYPES = ("subject", "verb", "object")
_SVO_ALIASES = {"subject": "subject", "subj": "subject", "verb": "verb", "object": "object", "obj": "object"}
_TRUE = {"true", "1", "yes", "t", "y"}


@dataclass
class SvoProbe:
    sentence: str
    pos_image: str                    # as the file names it (a relative path, an image id, a url)
    neg_image: str
    neg_type: str                     # what the negative image changes: subject | verb | object
    pos_path: str | None = None       # the resolved local file, None when absent
    neg_path: str | None = None


@dataclass
class SvoReadResult:
    probes: list[SvoProbe]
    bad_rows: int = 0
    errors: list[str] = field(default_factory=list)


def _svo_jsonl(path: str, rows: SvoReadResult) -> None:
    folder = Path(path).parent
    for line_no, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            _svo_bad(rows, where, f"not JSON ({exc.msg})")
            continue
        missing = [k for k in ("sentence", "pos_image", "neg_image", "neg_type") if not isinstance(row, dict)
                   or not str(row.get(k) or "").strip()]
        if missing:
            _svo_bad(rows, where, f"no {missing[0]!r}")
            continue
        kind = _SVO_ALIASES.get(str(row["neg_type"]).strip().lower())
        if kind is None:
            _svo_bad(rows, where, f"neg_type {row['neg_type']!r} is not one of {list(SVO_TYPES)}")
            continue
        pos, neg = str(row["pos_image"]).strip(), str(row["neg_image"]).strip()
        found = [p if p.is_file() else None for p in (folder / pos, folder / neg)]   # absolute paths stay as they are
        rows.probes.append(SvoProbe(str(row["sentence"]).strip(), pos, neg, kind,
                                    *(str(p) if p else None for p in found)))


def _svo_csv(path: str, index: VideoIndex, rows: SvoReadResult) -> None:
    reader = csv.DictReader(io.StringIO(read_text(path)))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in ("sentence", "subj_neg", "verb_neg", "obj_neg") if c not in header]
    if missing:
        raise DownstreamFormatError(f"{path}: missing column {missing[0]!r} (header: {','.join(header) or 'empty'})")
    for side in ("pos", "neg"):
        if f"{side}_image_id" not in header and f"{side}_url" not in header:
            raise DownstreamFormatError(f"{path}: missing column '{side}_image_id' (or '{side}_url') "
                                        f"(header: {','.join(header)})")
    for line, row in enumerate(reader, start=2):
        flags = [str(row.get(c) or "").strip().lower() in _TRUE for c in ("subj_neg", "verb_neg", "obj_neg")]
        if sum(flags) != 1:
            _svo_bad(rows, f"{path}:{line}", f"{sum(flags)} of subj_neg/verb_neg/obj_neg are true, expected one")
            continue
        names, paths = [], []
        for side in ("pos", "neg"):
            image_id = str(row.get(f"{side}_image_id") or "").strip()
            url = str(row.get(f"{side}_url") or "").strip()
            # The downloaded file: named by the image id (any image extension) or as the url names it.
            cands = [image_id] if image_id else []
            if url:
                cands.append(url.split("?")[0].rstrip("/").rsplit("/", 1)[-1])
            names.append(image_id or url)
            paths.append(index.resolve(cands))
        sentence = str(row.get("sentence") or "").strip()
        if not sentence or not all(names):
            _svo_bad(rows, f"{path}:{line}", "empty sentence or image")
            continue
        rows.probes.append(SvoProbe(sentence, names[0], names[1], SVO_TYPES[flags.index(True)], *paths))


def _svo_bad(rows: SvoReadResult, where: str, why: str) -> None:
    rows.bad_rows += 1
    if len(rows.errors) < 10:
        rows.errors.append(f"{where}: {why}")


def read_svo(name: str, files: list[str], image_root: str = "") -> SvoReadResult:
    """SVO-Probes rows from .jsonl files (ours) or .csv files (the release's), in file order.
    A csv's images are looked up under `image_root` (default: the csv's folder)."""
    rows = SvoReadResult(probes=[])
    for path in files:
        if not Path(path).is_file():
            raise DownstreamFormatError(f"annotation file {path} of dataset {name!r} does not exist")
        if Path(path).suffix.lower() == ".csv":
            _svo_csv(path, VideoIndex(image_root or Path(path).parent, IMAGE_EXTENSIONS), rows)
        else:
            _svo_jsonl(path, rows)
    return rows
