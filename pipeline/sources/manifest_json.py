"""YT-Temporal / MERLOT per-video JSON and youtube-dl ``.info.json`` manifests (read by ``pipeline.sources.manifest``).

``read_json(path, compression)`` yields one ``ManifestRow`` per file (or per object of a JSON list of
native rows): a MERLOT file (``info``, ``subtitles``, ``denoised``) becomes a row whose ``captions``
is the file itself; an ``.info.json`` becomes a row with a sibling ``<id>.en.vtt`` as captions. The
video is a sibling ``<id>.mp4|webm|mkv|mov|m4v|avi`` (or ``info._filename`` beside the JSON) when one
exists, else ``info.webpage_url``, else the id. ``shadowed_info_json`` tells a folder reader to skip an
``X.info.json`` whose ``X.grover.json``/``X.json`` is also listed (the same video).
"""
from __future__ import annotations

import json
import os
from typing import Iterator

from pipeline.ids import safe_file_stem
from pipeline.sources.rows import (
    VIDEO_SUFFIXES,
    ManifestError,
    ManifestRow,
    fsspec_module,
    is_url,
    open_binary,
    row_from_mapping,
)

__all__ = ["read_json", "shadowed_info_json", "INFO_META_KEYS"]


def shadowed_info_json(path: str, files: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    for suffix in (".info.json", ".info.json.gz"):
        if name.endswith(suffix):
            stem = path[: -len(suffix)]
            return any(f in files for f in (stem + ".grover.json", stem + ".json", stem + ".grover.json.gz"))
    return False


def read_json(path: str, compression: str | None) -> Iterator[ManifestRow | ManifestError]:
    with open_binary(path, compression) as handle:
        data = handle.read()
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        yield ManifestError(path, 1, f"file is not valid UTF-8 ({exc.reason} at byte {exc.start})")
        return
    except json.JSONDecodeError as exc:
        yield ManifestError(path, exc.lineno, f"bad JSON: {exc.msg} (column {exc.colno})")
        return
    if isinstance(obj, list):
        for index, item in enumerate(obj, start=1):
            yield row_from_mapping(item, path, index)
        return
    if not isinstance(obj, dict):
        yield ManifestError(path, 1, f"expected a JSON object, got {type(obj).__name__}")
        return
    if isinstance(obj.get("info"), dict) or "subtitles" in obj and isinstance(obj.get("subtitles"), list):
        yield _row_from_merlot(obj, path)
    elif "id" in obj and any(k in obj for k in ("webpage_url", "extractor", "formats", "display_id")):
        yield _row_from_info_json(obj, path)
    else:
        yield row_from_mapping(obj, path, 1)


# MERLOT's info carries the whole youtube-dl metadata; these are the fields worth keeping per sample.
INFO_META_KEYS = ("title", "duration", "uploader", "channel_id", "upload_date", "categories", "tags",
                  "view_count", "width", "height", "fps", "webpage_url", "_ids_fn", "_words_per_30s",
                  "_avg_cosine_sim", "_num_coco_objects_expectation")


def _row_from_merlot(obj: dict, path: str) -> ManifestRow | ManifestError:
    info = obj.get("info") if isinstance(obj.get("info"), dict) else {}
    video_id = info.get("id") or info.get("display_id") or _stem_id(path)
    if not isinstance(video_id, str) or not video_id.strip():
        return ManifestError(path, 1, "MERLOT JSON has no info.id and its file name gives none")
    subtitles = obj.get("subtitles")
    if subtitles is not None and not isinstance(subtitles, list):
        return ManifestError(path, 1, "MERLOT JSON: 'subtitles' must be a list of {word, time}", video_id=video_id)
    meta = {k: info[k] for k in INFO_META_KEYS if info.get(k) is not None}
    meta["manifest_format"] = "merlot"
    if subtitles is not None:
        meta["n_subtitle_words"] = len(subtitles)
    if isinstance(obj.get("denoised"), list):
        meta["n_denoised_chunks"] = len(obj["denoised"])
    url = _video_beside(path, video_id, info) or info.get("webpage_url") or video_id
    return ManifestRow(video_id=video_id, url=url, captions=path, meta=meta, line=1, source_file=path)


def _row_from_info_json(obj: dict, path: str) -> ManifestRow | ManifestError:
    video_id = obj.get("id")
    if not isinstance(video_id, str) or not video_id.strip():
        return ManifestError(path, 1, "info.json has no string 'id'")
    meta = {k: obj[k] for k in INFO_META_KEYS if obj.get(k) is not None}
    meta["manifest_format"] = "info_json"
    url = _video_beside(path, video_id, obj) or obj.get("webpage_url") or video_id
    captions = None
    folder = path.rsplit("/", 1)[0] if "/" in path else "."
    for name in (f"{video_id}.en.vtt", f"{_stem_id(path)}.en.vtt"):
        candidate = f"{folder}/{name}"
        if _exists(candidate):
            captions = candidate
            break
    return ManifestRow(video_id=video_id, url=url, captions=captions, meta=meta, line=1, source_file=path)


def _stem_id(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name.split(".", 1)[0]


def _exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    try:
        fs, _, paths = fsspec_module().get_fs_token_paths(path)
        return fs.exists(paths[0])
    except Exception:  # noqa: BLE001 - an unreachable store means "not there"
        return False


def _video_beside(json_path: str, video_id: str, info: dict) -> str | None:
    """A local/remote video file that belongs to this JSON, if one exists."""
    folder = json_path.rsplit("/", 1)[0] if "/" in json_path else "."
    stems = {safe_file_stem(video_id), video_id, _stem_id(json_path)}
    candidates = [f"{folder}/{stem}{suffix}" for stem in sorted(stems) for suffix in VIDEO_SUFFIXES
                  if "/" not in stem and ".." not in stem]
    filename = info.get("_filename")
    if isinstance(filename, str) and filename and not os.path.isabs(filename) and ".." not in filename:
        candidates.append(f"{folder}/{filename}")
    for candidate in candidates:
        if _exists(candidate):
            return candidate
    return None
