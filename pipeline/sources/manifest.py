"""Manifest readers: every supported manifest format becomes a stream of `ManifestRow`s (the native jsonl row).

API
---
``read_manifest(path_or_url, format=None) -> Iterator[ManifestRow | ManifestError]``
    Streams the rows of a manifest. ``path_or_url`` is a local path, any fsspec URL (``s3://``,
    ``gs://``, ``http://``, ``memory://`` ...), a folder or a glob. Formats, chosen by name (the
    compression suffix ``.gz``/``.bz2``/``.xz``/``.zst`` is stripped first) or by ``format=``:

    - ``jsonl`` (``.jsonl``, ``.ndjson``): the native format, one object per line with ``video_id``,
      ``url``, optional ``captions`` and ``meta`` (an object). Unknown top-level fields go into ``meta``.
    - ``csv`` / ``tsv``: a header row; the same column names (aliases below); a ``meta`` column may
      hold a JSON object; other columns go into ``meta`` as strings.
    - ``parquet`` (``.parquet``, ``.pq``): the same columns, read in record batches.
    - ``json`` (``.json``): a YT-Temporal / MERLOT per-video file (``info`` with ``id``, ``title``,
      ``duration``...; ``subtitles`` = ``[{"word", "time"}]``; ``denoised``): one row whose
      ``captions`` is that JSON file itself (the transcript stage reads its word times). A youtube-dl
      ``.info.json`` (``id``, ``webpage_url``...) gives one row too, with a sibling ``<id>.en.vtt`` as
      captions when present. A JSON list of native row objects is also accepted.
    - a folder or glob: every ``*.json`` / ``*.json.gz`` in it, each read as above (an
      ``X.info.json`` whose ``X.grover.json``/``X.json`` sits beside it is skipped: same video).

    The JSON readers live in ``pipeline.sources.manifest_json``. The video source of a MERLOT / info.json row is a sibling video file ``<id>.mp4|webm|mkv|mov``
    (or ``info._filename`` relative to the JSON) when it exists, else ``info.webpage_url``, else the
    YouTube id.

    Relative paths in ``url`` and ``captions`` resolve against the manifest's folder (also for
    remote manifests). A bare 11-character YouTube id stays an id unless a file of that name exists.

    A malformed row (bad JSON, bad UTF-8, missing ``video_id``/``url``, wrong types) is yielded as a
    ``ManifestError`` (``error_class="manifest_row"``, naming file and line) and reading goes on. A
    file that breaks mid-way (corrupt gzip) yields one ``ManifestError(error_class="manifest_file")``
    and the reader moves to the next file. A manifest that does not exist or whose format is unknown
    raises ``ManifestFormatError`` (a ``ValueError``): that is a job error, not a row error.

``dedupe_rows(items, stats=None) -> Iterator``
    Passes items through, dropping every ``ManifestRow`` whose ``video_id`` was seen before (the
    first one wins) and counting them in ``stats`` (a ``DedupeStats``). Errors pass through.

``convert(src, dst)`` / ``python -m pipeline manifest convert IN OUT``
    Writes any supported manifest as native jsonl (atomically); prints the counts; malformed rows are
    reported on stderr and left out. Exit code 1 when a row was malformed, 2 when the input is unusable.

Column aliases (csv/tsv/parquet/jsonl): video_id <- ``video_id``, ``videoid``, ``id``, ``vid``,
``youtube_id``, ``ytid``; url <- ``url``, ``path``, ``video``, ``video_path``, ``video_url``,
``source``, ``contentUrl``, ``file``; captions <- ``captions``, ``caption_path``, ``captions_path``,
``subtitles``, ``vtt``. A row with only ``youtube_id``/``ytid`` uses it as url too.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from pipeline.sources.manifest_json import read_json, shadowed_info_json
from pipeline.sources.rows import (
    COMPRESSION_SUFFIXES,
    URL_KEYS,
    VIDEO_ID_KEYS,
    ManifestError,
    ManifestFormatError,
    ManifestRow,
    compression_of,
    fsspec_module,
    has_surrogates,
    is_url,
    open_binary,
    preview,
    row_from_mapping,
)

__all__ = ["DedupeStats", "read_manifest", "dedupe_rows", "convert", "row_to_json", "detect_format", "main"]


def detect_format(path: str) -> tuple[str, str | None]:
    """(format, compression) from a file name; format in jsonl, csv, tsv, parquet, json."""
    name = path.rsplit("/", 1)[-1].lower().split("?", 1)[0]
    compression = None
    for suffix, comp in COMPRESSION_SUFFIXES.items():
        if name.endswith(suffix):
            compression, name = comp, name[: -len(suffix)]
            break
    for suffixes, fmt in (((".jsonl", ".ndjson"), "jsonl"), ((".csv",), "csv"), ((".tsv",), "tsv"),
                          ((".parquet", ".pq"), "parquet"), ((".json",), "json")):
        if name.endswith(suffixes):
            return fmt, compression
    raise ManifestFormatError(
        f"manifest {path}: unknown format (expected .jsonl, .csv, .tsv, .parquet or .json, optionally .gz)"
    )


def _expand(path_or_url: str) -> list[str]:
    """The files a manifest argument names: one file, a folder's JSON files, or a glob's matches."""
    fsspec = fsspec_module()
    text = os.fspath(path_or_url)
    if text.startswith("file://"):
        text = text[len("file://"):]
    fs, _, paths = fsspec.get_fs_token_paths(text)
    if any(ch in text for ch in "*?[") and not text.startswith(("http://", "https://")):
        files = sorted(p for p in paths if not fs.isdir(p))
        if not files:
            raise ManifestFormatError(f"manifest glob {text} matches no file")
        return [unstrip_protocol(fs, p, text) for p in files]
    path = paths[0] if paths else text
    try:
        is_dir = fs.isdir(path)
    except Exception:  # noqa: BLE001 - some filesystems (http) cannot answer
        is_dir = False
    if is_dir:
        found = sorted(p for p in fs.ls(path, detail=False)
                       if p.lower().endswith((".json", ".json.gz")) and not fs.isdir(p))
        if not found:
            raise ManifestFormatError(f"manifest folder {text} holds no .json/.json.gz files")
        return [unstrip_protocol(fs, p, text) for p in found]
    if not fs.exists(path):
        raise ManifestFormatError(f"manifest {text} does not exist: check input.manifest")
    return [text]


def unstrip_protocol(fs, path: str, original: str) -> str:
    """fsspec strips protocols from listed paths; put them back for non-local filesystems."""
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    if protocol in ("file", "local") or not is_url(original):
        return path
    return fs.unstrip_protocol(path)


def read_manifest(path_or_url: str | os.PathLike, format: str | None = None) -> Iterator[ManifestRow | ManifestError]:
    """Stream the rows of a manifest (see the module docstring)."""
    files = _expand(os.fspath(path_or_url))
    multi = len(files) > 1
    for path in files:
        if multi and shadowed_info_json(path, files):
            continue
        fmt, compression = (format, compression_of(path)) if format else detect_format(path)
        reader = {"jsonl": _read_jsonl, "csv": _read_csv, "tsv": _read_tsv, "parquet": _read_parquet,
                  "json": read_json}.get(fmt)
        if reader is None:
            raise ManifestFormatError(f"manifest format {fmt!r} is unknown (jsonl, csv, tsv, parquet, json)")
        try:
            yield from reader(path, compression)
        except (OSError, EOFError, UnicodeDecodeError, ValueError, gzip.BadGzipFile) as exc:
            if isinstance(exc, ManifestFormatError):
                raise
            yield ManifestError(path, 0, f"file cannot be read past this point: {type(exc).__name__}: {exc}",
                                error_class="manifest_file")


def _read_jsonl(path: str, compression: str | None) -> Iterator[ManifestRow | ManifestError]:
    with open_binary(path, compression) as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield ManifestError(path, line_no, f"line is not valid UTF-8 ({exc.reason} at byte {exc.start})",
                                    raw=preview(raw))
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield ManifestError(path, line_no, f"bad JSON: {exc.msg} (column {exc.colno})", raw=preview(text))
                continue
            yield row_from_mapping(obj, path, line_no, raw_preview=preview(text))


def _read_tsv(path: str, compression: str | None) -> Iterator[ManifestRow | ManifestError]:
    return _read_csv(path, compression, delimiter="\t")


def _read_csv(path: str, compression: str | None, delimiter: str = ",") -> Iterator[ManifestRow | ManifestError]:
    with open_binary(path, compression) as handle:
        # surrogateescape: a bad byte marks its own row as malformed instead of breaking the file.
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        header = [h.strip() for h in header]
        width = len(header)
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield ManifestError(path, reader.line_num, f"bad CSV: {exc}")
                continue
            line_no = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if any(has_surrogates(v) for v in values):
                yield ManifestError(path, line_no, "row is not valid UTF-8")
                continue
            if len(values) != width:
                yield ManifestError(path, line_no, f"row has {len(values)} fields, the header has {width}",
                                    raw=preview(delimiter.join(values)))
                continue
            obj: dict[str, Any] = {}
            for key, value in zip(header, values):
                if value == "" and key not in VIDEO_ID_KEYS + URL_KEYS:
                    continue  # empty optional cell
                obj[key] = value
            if isinstance(obj.get("meta"), str):
                try:
                    obj["meta"] = json.loads(obj["meta"]) if obj["meta"].strip() else {}
                except json.JSONDecodeError as exc:
                    yield ManifestError(path, line_no, f"column 'meta' is not a JSON object: {exc.msg}")
                    continue
            yield row_from_mapping(obj, path, line_no)


def _read_parquet(path: str, compression: str | None) -> Iterator[ManifestRow | ManifestError]:
    from common.deps import require

    pq = require("pyarrow.parquet", "pyarrow", why="parquet manifests")
    with fsspec_module().open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        row_no = 0
        for batch in parquet.iter_batches(batch_size=4096):
            for obj in batch.to_pylist():
                row_no += 1
                obj = {k: v for k, v in obj.items() if v is not None or k in VIDEO_ID_KEYS + URL_KEYS}
                yield row_from_mapping(obj, path, row_no)


# --------------------------------------------------------------------------------------------------
# Duplicates


@dataclass
class DedupeStats:
    """What ``dedupe_rows`` dropped: ``duplicates`` rows in all, the first ``examples`` ids."""

    duplicates: int = 0
    examples: list[str] = field(default_factory=list)
    max_examples: int = 20

    def add(self, video_id: str) -> None:
        self.duplicates += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(video_id)


def dedupe_rows(items: Iterable[ManifestRow | ManifestError], stats: DedupeStats | None = None
                ) -> Iterator[ManifestRow | ManifestError]:
    """Drop repeated ``video_id``s (first wins), counting them in ``stats``; errors pass through.

    Memory: one set entry per distinct id (about 100 bytes each).
    """
    seen: set[str] = set()
    stats = stats if stats is not None else DedupeStats()
    for item in items:
        if isinstance(item, ManifestRow):
            if item.video_id in seen:
                stats.add(item.video_id)
                continue
            seen.add(item.video_id)
        yield item


# --------------------------------------------------------------------------------------------------
# Conversion to native jsonl


def row_to_json(row: ManifestRow) -> str:
    return json.dumps(row.to_native(), ensure_ascii=False, default=str)


def convert(src: str, dst: str, *, dedupe: bool = True, format: str | None = None, progress: bool = False) -> dict:
    """Write ``src`` (any supported manifest) as native jsonl at ``dst`` atomically; return counts."""
    from common.atomic import atomic_open

    counts = {"rows": 0, "errors": 0, "duplicates": 0}
    stats = DedupeStats()
    items = read_manifest(src, format=format)
    if dedupe:
        items = dedupe_rows(items, stats)
    errors: list[ManifestError] = []
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="convert", unit=" rows", mininterval=1.0)
    with atomic_open(dst, "w") as out:
        for item in items:
            if isinstance(item, ManifestError):
                counts["errors"] += 1
                if len(errors) < 100:
                    errors.append(item)
                continue
            out.write(row_to_json(item) + "\n")
            counts["rows"] += 1
    counts["duplicates"] = stats.duplicates
    counts["error_examples"] = [str(e) for e in errors]
    return counts


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pipeline manifest",
        description="Manifest tools. convert: write any supported manifest (jsonl, csv, tsv, parquet, "
                    "MERLOT/YT-Temporal JSON file, folder or glob; .gz too) as the native jsonl.")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="convert IN to native jsonl OUT")
    conv.add_argument("src", metavar="IN")
    conv.add_argument("dst", metavar="OUT")
    conv.add_argument("--format", choices=["jsonl", "csv", "tsv", "parquet", "json"], default=None)
    conv.add_argument("--keep-duplicates", action="store_true", help="write repeated video_ids too")
    args = parser.parse_args(argv)
    try:
        counts = convert(args.src, args.dst, dedupe=not args.keep_duplicates, format=args.format,
                         progress=sys.stderr.isatty())
    except ManifestFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for message in counts.pop("error_examples"):
        print(f"malformed row: {message}", file=sys.stderr)
    print(json.dumps(counts))
    return 1 if counts["errors"] else 0

