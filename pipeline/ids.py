"""The one rule for ids in keys and file names, and what a YouTube id looks like.

``safe_key_part(video_id) -> str``
    Maps any id to ``[A-Za-z0-9_-]+``: ids already in that alphabet (<= 128 chars) are unchanged,
    including a leading ``-`` (harmless inside tar member names; never put a key on a command line
    without ``--``/``./``). Anything else becomes an ASCII-folded, ``_``-joined form plus ``-`` and a
    10-hex-digit hash of the real id, so distinct ids stay distinct and no ``/``, ``..``, space or
    shell character survives. ``safe_file_stem(video_id)`` is the same but never starts with ``-``.
    Sample keys (``pipeline.samples``), scratch folders (``pipeline.sources.fetch``) and the leakage
    blocklist all use it.

``sample_key(video_id, start_s) -> str``
    A sample's key: ``<safe_key_part(video_id)>_<start in whole ms>``.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata

__all__ = ["safe_key_part", "safe_file_stem", "sample_key", "is_youtube_id"]

_YOUTUBE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{11}$")
_SAFE_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_UNSAFE_RUN_RE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_key_part(video_id: str) -> str:
    """Map any id to ``[A-Za-z0-9_-]+`` (see the module docstring); stable across runs and machines."""
    text = str(video_id)
    if _SAFE_RE.match(text) and len(text) <= 128:
        return text
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    base = _UNSAFE_RUN_RE.sub("_", folded).strip("_")[:64].rstrip("_")
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{base}-{digest}" if base else f"id-{digest}"


def safe_file_stem(video_id: str) -> str:
    """Like ``safe_key_part`` but never starting with ``-`` (file names that may reach a command line)."""
    key = safe_key_part(video_id)
    return "_" + key if key.startswith("-") else key


def sample_key(video_id: str, start_s: float) -> str:
    """``<safe id>_<start_ms>``: unique per (video, span start), safe in tar member and file names."""
    return f"{safe_key_part(video_id)}_{int(round(start_s * 1000)):d}"


def is_youtube_id(text: str) -> bool:
    """An 11-character YouTube video id (``[A-Za-z0-9_-]{11}``, may start with ``-``)."""
    return bool(_YOUTUBE_ID_RE.match(text))
