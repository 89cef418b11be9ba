"""Fetch stage: make each manifest row's video (and captions) a local file the next stages can read.

API
---
``fetch(row, scratch_dir, cfg) -> Fetched``
    ``row`` is a ``pipeline.sources.rows.ManifestRow`` (or a dict with ``video_id``, ``url``, ``captions``).
    The source kind comes from ``row.url`` (see ``source_kind``):

    - local path / ``file://``: used in place, never copied (``downloaded=False``); a missing file
      is ``not_found``.
    - other fsspec URLs (``s3://``, ``gs://``, ``memory://`` ...): copied into the scratch folder.
    - ``http(s)://``: downloaded with ``requests`` (``pipeline.sources.http``): connect/read timeouts,
      bounded retries with exponential backoff on 5xx/429/timeouts/broken connections, resume of a
      ``.part`` file with ``Range``, a size cap, and content checks (an HTML/text page is not a video).
    - YouTube (an 11-character id, ``youtube.com/watch?v=``, ``youtu.be/``, ``/shorts/``, ``/embed/``,
      ``yt:ID``): yt-dlp's Python API in a child process with a hard timeout (``pipeline.sources.youtube``),
      format capped at ``cfg.youtube.max_height``, English manual + automatic captions as VTT; requests
      go through the node's shared budget, rate limit, backoff, circuit breaker and proxy/cookie rotation
      (``pipeline.sources.throttle``).

    Downloads go to ``scratch_dir/<safe_file_stem(video_id)>/`` and are written as ``*.part`` and
    renamed when complete, so a finished file found there by a rerun (with a stable scratch folder) is
    reused and a ``.part`` is resumed. ``row.captions`` (path or URL) is fetched the same way.

    Failures raise ``pipeline.errors.StageError(stage="fetch", error_class=...)``. Classes:
    ``not_found``, ``not_a_file``, ``fsspec_error``, ``fsspec_timeout``, ``http_404``, ``http_403``, ``http_4xx``,
    ``http_429``, ``http_5xx``, ``http_timeout``, ``http_redirect_loop``, ``http_truncated``,
    ``http_error``, ``unreachable_host``, ``too_large``, ``not_video_content``, ``youtube_unavailable``,
    ``youtube_private``, ``youtube_age_restricted``, ``youtube_login_required``, ``youtube_geo_blocked``,
    ``youtube_live``, ``youtube_rate_limited``, ``youtube_bot_check``, ``youtube_breaker_open``,
    ``youtube_budget_exhausted``, ``youtube_format_unavailable``, ``youtube_timeout``, ``youtube_error``
    (``pipeline.sources.throttle.RETRYABLE`` names the YouTube classes a later run can change); a failed captions fetch is ``captions_<class>`` (or ignored with
    ``cfg.captions_required = False``, recorded in ``info["captions_error"]``).

``Fetched(video_path, captions_path, info, downloaded, files)``
    ``info`` holds ``source_kind``, ``bytes`` and per-kind details (``final_url``, ``content_type``,
    ``resumed_from``, ``attempts`` for HTTP; the yt-dlp metadata subset for YouTube).
    ``files`` lists what this fetch created (to delete).

``cleanup(fetched, cfg)``
    Deletes the scratch copies of one fetched row (unless ``cfg.keep_downloads``); never touches a
    local source used in place. Call it after the row's samples are written (or it failed).

``FetchConfig`` / ``YouTubeConfig``
    Typed config sections (``pipeline.sources.fetch`` in the job YAML, loaded through ``common.config``).

The live YouTube path cannot be exercised here (no network): tests cover id/URL parsing, option
building, error classification on real yt-dlp exceptions, and the child-process download path with
yt-dlp's generic extractor against a 127.0.0.1 server.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import StageError
from pipeline.ids import is_youtube_id, safe_file_stem
from pipeline.sources.fetch_config import FetchConfig, fetch_error, suffix_of
from pipeline.sources.rows import ManifestRow

__all__ = ["Fetched", "fetch", "cleanup", "source_kind", "youtube_video_id"]


@dataclass
class Fetched:
    """A row's local files. ``downloaded`` is False when the source was used in place."""

    video_path: str
    captions_path: str | None
    info: dict = field(default_factory=dict)
    downloaded: bool = False
    files: list[str] = field(default_factory=list)  # scratch files this fetch created
    scratch_dir: str | None = None                 # the row's own scratch folder, if any

    def to_dict(self) -> dict:
        return {"video_path": self.video_path, "captions_path": self.captions_path, "info": self.info,
                "downloaded": self.downloaded, "files": list(self.files), "scratch_dir": self.scratch_dir}

    @classmethod
    def from_dict(cls, data: dict) -> "Fetched":
        return cls(**{k: data.get(k) for k in ("video_path", "captions_path", "info", "downloaded", "files",
                                               "scratch_dir")})


LOCAL, FSSPEC, HTTP, YOUTUBE = "local", "fsspec", "http", "youtube"

_YT_HOSTS = ("youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com", "youtu.be",
             "www.youtube-nocookie.com", "youtube-nocookie.com")
_YT_ID = r"([A-Za-z0-9_-]{11})"
_YT_URL_RES = (
    re.compile(r"^https?://(?:www\.|m\.|music\.)?youtube\.com/watch\?(?:.*&)?v=" + _YT_ID + r"(?:[&#].*)?$"),
    re.compile(r"^https?://youtu\.be/" + _YT_ID + r"(?:[?#/].*)?$"),
    re.compile(r"^https?://(?:www\.|m\.)?youtube(?:-nocookie)?\.com/(?:shorts|embed|live|v)/" + _YT_ID
               + r"(?:[?#/].*)?$"),
)


def youtube_video_id(url: str) -> str | None:
    """The 11-character video id of a YouTube URL, ``yt:ID``/``youtube:ID`` or bare id; else None."""
    text = url.strip()
    for prefix in ("yt:", "youtube:"):
        if text.startswith(prefix) and is_youtube_id(text[len(prefix):]):
            return text[len(prefix):]
    if is_youtube_id(text):
        return text
    for pattern in _YT_URL_RES:
        match = pattern.match(text)
        if match:
            return match.group(1)
    return None


def source_kind(url: str) -> str:
    """``local``, ``fsspec``, ``http`` or ``youtube`` for a (resolved) manifest ``url``.

    A bare 11-character id is YouTube unless a local file of that name exists.
    """
    text = url.strip()
    if text.startswith("file://"):
        return LOCAL
    if youtube_video_id(text) is not None:
        if is_youtube_id(text) and os.path.exists(text):
            return LOCAL
        return YOUTUBE
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")):
        host = lowered.split("://", 1)[1].split("/", 1)[0].split("@")[-1].split(":")[0]
        if host in _YT_HOSTS:
            return YOUTUBE  # a YouTube URL we cannot parse: yt-dlp gets it and classifies
        return HTTP
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        return FSSPEC
    return LOCAL


def _row_fields(row: Any) -> tuple[str, str, str | None]:
    if isinstance(row, ManifestRow):
        return row.video_id, row.url, row.captions
    if isinstance(row, dict):
        return str(row["video_id"]), str(row["url"]), row.get("captions")
    return str(row.video_id), str(row.url), getattr(row, "captions", None)


def fetch(row: Any, scratch_dir: str | os.PathLike, cfg: FetchConfig | None = None) -> Fetched:
    """Fetch one row's video and captions (see the module docstring)."""
    cfg = cfg or FetchConfig()
    video_id, url, captions = _row_fields(row)
    row_dir = Path(scratch_dir) / safe_file_stem(video_id)
    scratch = _RowScratch(row_dir)
    kind = source_kind(url)
    started = time.monotonic()
    created: list[str] = []
    try:
        if kind == LOCAL:
            video_path, info = _local(url, video_id), {}
            downloaded = False
        elif kind == HTTP:
            from pipeline.sources.http import download

            scratch.ensure()
            video_path, info = download(url, row_dir, "video", cfg, expect_media=True, label=video_id)
            created.append(video_path)
            downloaded = True
        elif kind == FSSPEC:
            scratch.ensure()
            video_path, info = _copy_fsspec(url, row_dir, "video", cfg, video_id)
            created.append(video_path)
            downloaded = True
        else:  # YOUTUBE
            from pipeline.sources.youtube import download_youtube

            scratch.ensure()
            result = download_youtube(youtube_video_id(url) or url, row_dir, cfg, label=video_id)
            video_path, info = result.video_path, result.info
            created.extend(result.files)
            downloaded = True
            if result.captions_path:
                info["youtube_captions_path"] = result.captions_path
                if captions is None:
                    captions = result.captions_path  # yt-dlp's VTT, already local
        info = {"source_kind": kind, **info}
        if "bytes" not in info:
            with contextlib.suppress(OSError):
                info["bytes"] = os.path.getsize(video_path)
        captions_path = None
        if captions:
            captions_path = _fetch_captions(captions, scratch, cfg, video_id, info, created)
        info["fetch_seconds"] = round(time.monotonic() - started, 3)
        return Fetched(video_path=str(video_path), captions_path=captions_path, info=info, downloaded=downloaded,
                       files=created, scratch_dir=str(row_dir) if scratch.used else None)
    except StageError:
        if not cfg.keep_downloads:
            # A classified failure is final for this run: free the scratch space (a crash, where no
            # handler runs, keeps the .part files for the rerun to resume).
            _remove_files(created)
            if row_dir.is_dir():
                shutil.rmtree(row_dir, ignore_errors=True)
        raise
    finally:
        scratch.release()


class _RowScratch:
    """A row's scratch folder, created on first use and locked (flock) while this process fills it.

    The lock keeps two processes on one node (a rerun beside a leftover worker, or decode re-fetching
    what fetch is still writing) from appending to the same ``.part``; it dies with its process.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self.used = False

    def ensure(self) -> Path:
        if self._fd is None:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - not POSIX
                pass
            self._fd = fd
            self.used = True
        return self.path

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _fetch_captions(captions: str, scratch: "_RowScratch", cfg: FetchConfig, video_id: str, info: dict,
                    created: list[str]) -> str | None:
    kind = source_kind(captions)
    try:
        if kind in (LOCAL, YOUTUBE):
            if kind == YOUTUBE and not os.path.exists(captions):
                raise fetch_error("not_found", f"captions {captions!r} for {video_id!r} is not a file")
            return _local(captions, video_id, what="captions")
        row_dir = scratch.ensure()
        if kind == HTTP:
            from pipeline.sources.http import download

            path, _ = download(captions, row_dir, "captions", cfg, expect_media=False, label=video_id)
        else:
            path, _ = _copy_fsspec(captions, row_dir, "captions", cfg, video_id)
        if path not in created:
            created.append(path)
        return path
    except StageError as exc:
        if cfg.captions_required:
            raise fetch_error(f"captions_{exc.error_class}", f"captions of {video_id!r}: {exc.message}") from None
        info["captions_error"] = {"error_class": exc.error_class, "message": exc.message}
        return None


def _local(path: str, video_id: str, what: str = "video") -> str:
    local = path[len("file://"):] if path.startswith("file://") else path
    local = os.path.abspath(os.path.expanduser(local))
    if not os.path.exists(local):
        raise fetch_error("not_found", f"{what} {path!r} of {video_id!r} does not exist")
    if not os.path.isfile(local):
        raise fetch_error("not_a_file", f"{what} {path!r} of {video_id!r} is not a regular file")
    if not os.access(local, os.R_OK):
        raise fetch_error("not_found", f"{what} {path!r} of {video_id!r} is not readable")
    return local


def _copy_fsspec(url: str, row_dir: Path, stem: str, cfg: FetchConfig, video_id: str) -> tuple[str, dict]:
    """Copy a non-local fsspec object into the row's scratch folder (``.part`` then rename).

    Object-store clients have their own timeouts, but not every filesystem does and a stuck connection can
    outlive them (botocore retries a read timeout several times), so the copy runs in a thread under the
    HTTP limits: no byte for ``fetch.read_timeout_s`` or the whole past ``fetch.total_timeout_s`` fails
    with ``fsspec_timeout``. An abandoned copy stops at its next chunk and removes its ``.part``.
    """
    from common.deps import require
    from pipeline import watchdog

    fsspec = require("fsspec", why="fsspec sources")
    dest = row_dir / (stem + suffix_of(url, ".bin"))
    if dest.is_file():
        return str(dest), {"reused": True, "bytes": dest.stat().st_size}
    part = dest.with_name(dest.name + ".part")
    copy = _TimedCopy(fsspec, url, part, cfg, video_id)
    with watchdog.allow(cfg.total_timeout_s):
        copy.run()
    os.replace(part, dest)
    return str(dest), {"bytes": dest.stat().st_size}


class _TimedCopy:
    """One fsspec object to a local file in a worker thread, watched for silence and total time."""

    def __init__(self, fsspec, url: str, part: Path, cfg: FetchConfig, video_id: str):
        self.fsspec, self.url, self.part, self.cfg, self.video_id = fsspec, url, part, cfg, video_id
        self.copied = 0
        self.cancelled = False
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        thread = threading.Thread(target=self._copy, name="fsspec-copy", daemon=True)
        started = last_progress = time.monotonic()
        seen = -1
        thread.start()
        while not self.finished.wait(0.2):
            now = time.monotonic()
            if self.copied != seen:
                seen, last_progress = self.copied, now
            silent, total = now - last_progress, now - started
            if silent > self.cfg.read_timeout_s or total > self.cfg.total_timeout_s:
                self.cancelled = True
                with contextlib.suppress(OSError):
                    self.part.unlink()
                why = (f"no data for fetch.read_timeout_s={self.cfg.read_timeout_s:g}s"
                       if silent > self.cfg.read_timeout_s else f"longer than fetch.total_timeout_s="
                                                                f"{self.cfg.total_timeout_s:g}s")
                raise fetch_error("fsspec_timeout", f"copying {self.url} of {self.video_id!r}: {why} "
                                                    f"({self.copied} bytes copied)")
        if self.error is not None:
            raise self.error

    def _copy(self) -> None:
        try:
            fs, _, paths = self.fsspec.get_fs_token_paths(self.url)
            remote = paths[0]
            size = fs.size(remote)
            if self.cfg.max_bytes and size is not None and size > self.cfg.max_bytes:
                raise fetch_error("too_large", f"{self.url} of {self.video_id!r} is {size} bytes > "
                                               f"fetch.max_bytes={self.cfg.max_bytes}")
            with fs.open(remote, "rb", block_size=self.cfg.chunk_bytes) as src, open(self.part, "wb") as out:
                while not self.cancelled:
                    chunk = src.read(self.cfg.chunk_bytes)
                    if not chunk:
                        break
                    out.write(chunk)
                    self.copied += len(chunk)
            if self.cancelled:
                with contextlib.suppress(OSError):
                    self.part.unlink()
        except StageError as exc:
            self.error = exc
        except FileNotFoundError:
            self.error = fetch_error("not_found", f"{self.url} of {self.video_id!r} does not exist")
        except Exception as exc:  # noqa: BLE001 - every filesystem has its own errors
            with contextlib.suppress(OSError):
                self.part.unlink()
            self.error = fetch_error("fsspec_error", f"copying {self.url} of {self.video_id!r} failed: "
                                                     f"{type(exc).__name__}: {exc}")
        finally:
            self.finished.set()


def _remove_files(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def cleanup(fetched: Fetched | dict | None, cfg: FetchConfig | None = None) -> None:
    """Delete one row's scratch copies (not local sources used in place) unless ``cfg.keep_downloads``."""
    if fetched is None:
        return
    if isinstance(fetched, dict):
        fetched = Fetched.from_dict(fetched)
    if cfg is not None and cfg.keep_downloads:
        return
    _remove_files(list(fetched.files or []))
    if fetched.scratch_dir and os.path.isdir(fetched.scratch_dir):
        shutil.rmtree(fetched.scratch_dir, ignore_errors=True)
