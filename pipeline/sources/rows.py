"""Manifest row types and the row rules every manifest reader shares.

``ManifestRow`` is one input video (the native jsonl row); ``ManifestError`` a malformed row (a counted
failure, never a crash); ``ManifestFormatError`` a manifest that cannot be read at all (a job error).
``row_from_mapping(obj, path, line)`` validates one native-shaped object (column aliases below) and
resolves its ``url``/``captions`` against the manifest's folder (``resolve_location``).
``open_binary(path, compression)`` opens any fsspec location.

Column aliases (csv/tsv/parquet/jsonl): video_id <- ``video_id``, ``videoid``, ``id``, ``vid``,
``youtube_id``, ``ytid``; url <- ``url``, ``path``, ``video``, ``video_path``, ``video_url``,
``source``, ``contentUrl``, ``file``; captions <- ``captions``, ``caption_path``, ``captions_path``,
``subtitles``, ``vtt``. A row with only ``youtube_id``/``ytid`` uses it as url too.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from pipeline.ids import is_youtube_id, safe_key_part

__all__ = ["ManifestRow", "ManifestError", "ManifestFormatError", "resolve_location", "row_from_mapping",
           "open_binary", "fsspec_module", "is_url", "compression_of", "preview", "has_surrogates"]

VIDEO_ID_KEYS = ("video_id", "videoid", "id", "vid", "youtube_id", "ytid")
URL_KEYS = ("url", "path", "video", "video_path", "video_url", "source", "contentUrl", "file")
CAPTION_KEYS = ("captions", "caption_path", "captions_path", "subtitles", "vtt")
YOUTUBE_ID_KEYS = ("youtube_id", "ytid")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".m4v", ".avi")
COMPRESSION_SUFFIXES = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
MAX_ID_CHARS = 1024  # a longer "id" is a broken row, not a video

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass
class ManifestRow:
    """One input video. ``url``/``captions`` are resolved (absolute path, URL or YouTube id)."""

    video_id: str
    url: str
    captions: str | None = None
    meta: dict = field(default_factory=dict)
    line: int = 0  # 1-based line (jsonl/csv) or row number (parquet) in source_file
    source_file: str = ""

    @property
    def input_id(self) -> str:
        """The ledger identity of this input."""
        return self.video_id

    @property
    def key(self) -> str:
        """The safe form of ``video_id`` used in sample keys and file names."""
        return safe_key_part(self.video_id)

    def to_native(self) -> dict:
        """The native jsonl object (what ``convert`` writes)."""
        out: dict[str, Any] = {"video_id": self.video_id, "url": self.url}
        if self.captions is not None:
            out["captions"] = self.captions
        if self.meta:
            out["meta"] = self.meta
        return out

    def to_dict(self) -> dict:
        """All fields, JSON-serialisable (for Ray Data rows)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ManifestRow":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclass
class ManifestError:
    """A malformed manifest row: a counted failure (stage "manifest"), never a crash."""

    source_file: str
    line: int
    message: str
    error_class: str = "manifest_row"
    video_id: str | None = None  # when the row had a usable id
    raw: str | None = None  # the start of the offending line, for the report

    stage = "manifest"

    @property
    def input_id(self) -> str:
        """The ledger identity: the id when known, else ``<file>:<line>``."""
        return self.video_id if self.video_id else f"{self.source_file}:{self.line}"

    def as_record(self) -> dict:
        """Same shape as ``StageError.as_record()``."""
        return {"stage": self.stage, "error_class": self.error_class, "message": str(self)}

    def __str__(self) -> str:
        return f"{self.source_file}:{self.line}: {self.message}"


class ManifestFormatError(ValueError):
    """The manifest as a whole cannot be read (missing, unknown format): a job error."""


def is_url(text: str) -> bool:
    return bool(_SCHEME_RE.match(text))


@functools.lru_cache(maxsize=64)
def base_of(manifest: str) -> tuple[str, bool]:
    """The folder of a manifest and whether it is a URL."""
    if is_url(manifest) and not manifest.startswith("file://"):
        return manifest.rsplit("/", 1)[0], True
    local = manifest[len("file://"):] if manifest.startswith("file://") else manifest
    return os.path.dirname(os.path.abspath(local)), False


def resolve_location(value: str, manifest: str, *, may_be_youtube_id: bool = True) -> str:
    """Resolve a ``url``/``captions`` value against the manifest's folder.

    URLs (``scheme://``), ``file://`` URLs (turned into paths), absolute paths and YouTube ids are
    kept; ``~`` is expanded; a relative path is joined to the manifest's folder.
    """
    if value.startswith("file://"):
        return value[len("file://"):]
    if is_url(value) or value.startswith(("yt:", "youtube:")):
        return value
    if value.startswith("~"):
        return os.path.expanduser(value)
    base, remote = base_of(manifest)
    if remote:
        return value if value.startswith("/") else f"{base}/{posixpath.normpath(value)}"
    if os.path.isabs(value):
        return value
    joined = os.path.normpath(os.path.join(base, value))
    if may_be_youtube_id and is_youtube_id(value) and not os.path.exists(joined):
        return value
    return joined


def fsspec_module():
    from common.deps import require

    return require("fsspec", why="reading manifests")


def compression_of(path: str) -> str | None:
    for suffix, comp in COMPRESSION_SUFFIXES.items():
        if path.lower().endswith(suffix):
            return comp
    return None


def open_binary(path: str, compression: str | None):
    return fsspec_module().open(path, "rb", compression=compression)


def first_key(obj: dict, keys: Iterable[str]) -> tuple[str | None, Any]:
    for key in keys:
        if key in obj:
            return key, obj[key]
    return None, None


def row_from_mapping(obj: Any, path: str, line_no: int, raw_preview: str | None = None) -> ManifestRow | ManifestError:
    """Validate one native-shaped object and resolve its locations."""
    if not isinstance(obj, dict):
        return ManifestError(path, line_no, f"expected a JSON object, got {type(obj).__name__}", raw=raw_preview)
    id_key, video_id = first_key(obj, VIDEO_ID_KEYS)
    url_key, url = first_key(obj, URL_KEYS)
    if url_key is None and id_key in YOUTUBE_ID_KEYS:
        url_key, url = id_key, video_id
    cap_key, captions = first_key(obj, CAPTION_KEYS)

    if id_key is None:
        return ManifestError(path, line_no, "missing 'video_id'", raw=raw_preview)
    if isinstance(video_id, int) and not isinstance(video_id, bool):
        video_id = str(video_id)
    if not isinstance(video_id, str):
        return ManifestError(path, line_no, f"'{id_key}' must be a string, got {type(video_id).__name__}",
                             raw=raw_preview)
    if not video_id.strip():
        return ManifestError(path, line_no, f"'{id_key}' is empty", raw=raw_preview)
    if len(video_id) > MAX_ID_CHARS or "\x00" in video_id:
        return ManifestError(path, line_no, f"'{id_key}' is longer than {MAX_ID_CHARS} characters or holds NUL",
                             raw=raw_preview)
    if url_key is None:
        return ManifestError(path, line_no, "missing 'url'", video_id=video_id, raw=raw_preview)
    if not isinstance(url, str) or not url.strip():
        return ManifestError(path, line_no, f"'{url_key}' must be a non-empty string, got {url!r:.60}",
                             video_id=video_id, raw=raw_preview)
    if captions is not None and not isinstance(captions, str):
        return ManifestError(path, line_no, f"'{cap_key}' must be a string or null, got {type(captions).__name__}",
                             video_id=video_id, raw=raw_preview)
    meta_value = obj.get("meta", {})
    if meta_value is None:
        meta_value = {}
    if not isinstance(meta_value, dict):
        return ManifestError(path, line_no, f"'meta' must be an object, got {type(meta_value).__name__}",
                             video_id=video_id, raw=raw_preview)
    used = {id_key, url_key, cap_key, "meta"}
    meta = {k: v for k, v in obj.items() if k not in used}
    meta.update(meta_value)
    url = resolve_location(url.strip(), path)
    captions = resolve_location(captions.strip(), path, may_be_youtube_id=False) if captions and captions.strip() else None
    return ManifestRow(video_id=video_id, url=url, captions=captions, meta=meta, line=line_no, source_file=path)


def has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def preview(raw: bytes | str, limit: int = 120) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    raw = raw.rstrip("\r\n")
    return raw if len(raw) <= limit else raw[:limit] + "..."
