"""HTTP(S) downloads for the fetch stage: timeouts, bounded retries with backoff, Range resume, size cap,
content checks. Used through ``pipeline.sources.fetch.fetch``; ``download`` is the one entry point.

``download(url, dest_dir, stem, cfg, *, expect_media=True, label="") -> (path, info)``
    Streams ``url`` into ``dest_dir/<stem><suffix>.part`` and renames it to ``dest_dir/<stem><suffix>``
    when complete (suffix from the URL path, else ``.mp4``/``.captions``). A finished file already
    there is reused (``info["reused"]``); an existing ``.part`` is resumed with ``Range: bytes=N-``
    (``info["resumed_from"] = N``); a server that ignores Range (200) restarts from zero.

    Retries (``cfg.retries`` after the first try, delay ``cfg.backoff_s * 2**k`` capped at
    ``cfg.backoff_max_s``): 5xx, 429, connect/read timeouts, refused connections, bodies shorter
    than their Content-Length. An attempt that made progress (the ``.part`` grew) does not use up a
    retry; a ``Retry-After: N`` header lengthens the delay (up to ``cfg.backoff_max_s``);
    ``cfg.total_timeout_s`` bounds the whole download. Not retried: 4xx, redirect loops
    (``cfg.max_redirects``), size cap, non-video content.

    ``expect_media=True`` enables the content checks (``cfg.check_content``): a Content-Type of HTML,
    XML or JSON, or a first chunk that is text (an HTML error page, a JSON body) is
    ``not_video_content``. A first chunk in a known container (MP4/MOV, Matroska/WebM, AVI, MPEG-TS/PS,
    FLV, Ogg, ASF, audio) passes; unknown binary also passes and is left to ffprobe.
"""
from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import urllib3  # requests' transport; its exceptions come through the body reads

from pipeline.errors import StageError
from pipeline.sources.fetch_config import FetchConfig, fetch_error, suffix_of

__all__ = ["download", "sniff_media", "classify_status"]

_TEXT_CONTENT_TYPES = ("text/html", "application/xhtml", "application/json", "text/xml", "application/xml",
                       "application/problem+json", "text/javascript", "application/javascript")
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.I)
_CONTENT_RANGE_UNSATISFIED_RE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.I)


class _Retryable(Exception):
    """An attempt failed in a way worth another try; ``error`` is what to raise when retries run out."""

    def __init__(self, error: StageError, retry_after: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after  # the server's Retry-After, seconds


def sniff_media(head: bytes) -> bool | None:
    """True: a known audio/video container; False: text (HTML, JSON, XML, plain); None: unknown binary."""
    if len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
        return True
    signatures = (
        b"\x1a\x45\xdf\xa3",          # EBML: Matroska / WebM
        b"OggS", b"FLV\x01", b"fLaC", b"ID3",
        b"\x00\x00\x01\xba",          # MPEG program stream
        b"\x00\x00\x01\xb3",          # MPEG-1/2 video elementary stream
        b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",  # ASF / WMV
        b".RMF",                      # RealMedia
    )
    if head.startswith(signatures):
        return True
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"WAVE", b"AVIX"):
        return True
    if len(head) >= 189 and head[0] == 0x47 and head[188] == 0x47:  # MPEG-TS packets
        return True
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:  # MPEG audio frame sync
        return True
    sample = head[:4096]
    if not sample:
        return False
    stripped = sample.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if stripped.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"{", b"[")):
        return False
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        if exc.start < len(sample) - 4:
            return None
        text = sample[: exc.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return False if printable >= 0.95 * max(len(text), 1) else None


def classify_status(status: int) -> tuple[str, bool]:
    """(error_class, retryable) for a non-success HTTP status."""
    if status in (404, 410):
        return "http_404", False
    if status in (401, 403):
        return "http_403", False
    if status == 429:
        return "http_429", True
    if status in (408, 425):
        return "http_timeout", True
    if 400 <= status < 500:
        return "http_4xx", False
    if status >= 500:
        return "http_5xx", True
    return "http_error", False


def download(url: str, dest_dir: str | os.PathLike, stem: str, cfg: FetchConfig, *, expect_media: bool = True,
             label: str = "") -> tuple[str, dict]:
    """Download ``url`` (see the module docstring); raises ``StageError(stage="fetch")``."""
    from common.deps import require

    requests = require("requests", why="HTTP sources")
    dest = Path(dest_dir) / (stem + suffix_of(url, ".mp4" if expect_media else ".captions"))
    part = dest.with_name(dest.name + ".part")
    who = f"{url} ({label})" if label else url
    if dest.is_file():
        return str(dest), {"reused": True, "bytes": dest.stat().st_size, "final_url": url}

    from pipeline import watchdog

    with watchdog.allow(cfg.total_timeout_s):   # every read has read_timeout_s, the whole a total limit
        return _download(requests, url, dest, part, cfg, expect_media, who)


def _download(requests, url: str, dest: Path, part: Path, cfg: FetchConfig, expect_media: bool,
              who: str) -> tuple[str, dict]:
    deadline = time.monotonic() + cfg.total_timeout_s
    info: dict = {"final_url": url, "attempts": 0}
    failures = 0
    session = requests.Session()
    session.max_redirects = cfg.max_redirects
    session.headers["User-Agent"] = cfg.user_agent
    try:
        while True:
            info["attempts"] += 1
            before = part.stat().st_size if part.exists() else 0
            try:
                result = _attempt(session, requests, url, dest, part, cfg, expect_media, who, deadline, info)
                if result is not None:
                    info["bytes"] = dest.stat().st_size
                    return str(dest), info
                continue  # the .part had to be discarded (bad Range answer): start again at once
            except _Retryable as retry:
                after = part.stat().st_size if part.exists() else 0
                if after <= before:
                    failures += 1
                if failures > cfg.retries:
                    raise retry.error from None
                if time.monotonic() >= deadline:
                    raise fetch_error("http_timeout", f"{who}: gave up after fetch.total_timeout_s="
                                      f"{cfg.total_timeout_s:g}s ({retry.error.error_class})") from None
                delay = min(cfg.backoff_s * (2 ** max(failures - 1, 0)), cfg.backoff_max_s)
                if retry.retry_after is not None:
                    delay = max(delay, min(retry.retry_after, cfg.backoff_max_s))
                time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
    finally:
        session.close()


def _attempt(session, requests, url: str, dest: Path, part: Path, cfg: FetchConfig, expect_media: bool, who: str,
             deadline: float, info: dict) -> str | None:
    """One GET. Returns the final path, None to restart at once, or raises _Retryable / StageError."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}  # byte offsets must be offsets in the file
    if offset:
        headers["Range"] = f"bytes={offset}-"
    got_response = False
    try:
        with session.get(url, headers=headers, stream=True, allow_redirects=True,
                         timeout=(cfg.connect_timeout_s, cfg.read_timeout_s)) as resp:
            got_response = True
            info["final_url"] = resp.url
            status = resp.status_code
            if status == 416 and offset:
                total = _unsatisfied_total(resp.headers.get("Content-Range", ""))
                if total is not None and total == offset:
                    os.replace(part, dest)  # the .part was already complete
                    info["resumed_from"] = offset
                    return str(dest)
                part.unlink()
                return None
            if status not in (200, 206):
                error_class, retryable = classify_status(status)
                error = fetch_error(error_class, f"{who}: HTTP {status} {resp.reason or ''}".rstrip())
                if retryable:
                    raise _Retryable(error, _retry_after(resp.headers.get("Retry-After")))
                raise error
            content_type = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            info["content_type"] = content_type
            if expect_media and cfg.check_content and content_type.startswith(_TEXT_CONTENT_TYPES):
                raise fetch_error("not_video_content", f"{who}: served as {content_type!r}, not a video")
            total = _expected_total(resp, offset)
            encoded = resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
            if encoded:
                # The server compressed the body although we asked for identity: decode it; its sizes
                # are of the compressed stream, so neither Range nor Content-Length can be trusted.
                total = None
                if status == 206:
                    part.unlink(missing_ok=True)
                    return None
            if status == 206:
                start = _range_start(resp.headers.get("Content-Range", ""))
                if start != offset:
                    part.unlink(missing_ok=True)
                    return None
                mode = "ab"
                info["resumed_from"] = offset
            else:
                if offset:
                    info["range_ignored"] = True
                offset, mode = 0, "wb"
            if cfg.max_bytes and total is not None and total > cfg.max_bytes:
                raise fetch_error("too_large", f"{who}: {total} bytes > fetch.max_bytes={cfg.max_bytes}")
            written = _stream_body(resp, part, mode, offset, cfg, expect_media, who, deadline, decode=encoded)
            size = offset + written
            if total is not None and size < total:
                raise _Retryable(fetch_error("http_truncated", f"{who}: body ended at {size} of {total} bytes"))
            if size == 0 and expect_media:
                raise fetch_error("not_video_content", f"{who}: empty body")
        os.replace(part, dest)
        return str(dest)
    except StageError:
        raise
    except _Retryable:
        raise
    except requests.exceptions.TooManyRedirects:
        raise fetch_error("http_redirect_loop", f"{who}: more than fetch.max_redirects={cfg.max_redirects} "
                                                "redirects") from None
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidHeader) as exc:
        raise fetch_error("http_error", f"{who}: bad URL or header: {exc}") from None
    except requests.exceptions.ConnectTimeout:
        raise _Retryable(fetch_error("unreachable_host", f"{who}: connect timed out after "
                                                         f"{cfg.connect_timeout_s:g}s")) from None
    except requests.exceptions.ReadTimeout:
        raise _Retryable(fetch_error("http_timeout", f"{who}: no data for fetch.read_timeout_s="
                                                     f"{cfg.read_timeout_s:g}s")) from None
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
        raise _Retryable(fetch_error("http_truncated", f"{who}: body broken off: {_short(exc)}")) from None
    except requests.exceptions.ConnectionError as exc:
        if _is_read_timeout(exc):
            raise _Retryable(fetch_error("http_timeout", f"{who}: no data for fetch.read_timeout_s="
                                                         f"{cfg.read_timeout_s:g}s")) from None
        if got_response:
            raise _Retryable(fetch_error("http_truncated", f"{who}: connection lost: {_short(exc)}")) from None
        raise _Retryable(fetch_error("unreachable_host", f"{who}: cannot connect: {_short(exc)}")) from None
    except requests.exceptions.RequestException as exc:
        raise _Retryable(fetch_error("http_error", f"{who}: {type(exc).__name__}: {_short(exc)}")) from None
    except urllib3.exceptions.ReadTimeoutError:  # raised by the body reads (read1)
        raise _Retryable(fetch_error("http_timeout", f"{who}: no data for fetch.read_timeout_s="
                                                     f"{cfg.read_timeout_s:g}s")) from None
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError) as exc:
        raise _Retryable(fetch_error("http_truncated", f"{who}: body broken off: {_short(exc)}")) from None
    except urllib3.exceptions.HTTPError as exc:
        raise _Retryable(fetch_error("http_error", f"{who}: {type(exc).__name__}: {_short(exc)}")) from None
    except OSError as exc:  # writing the scratch file
        raise fetch_error("scratch_io", f"{who}: cannot write {part}: {exc}") from None


def _stream_body(resp, part: Path, mode: str, offset: int, cfg: FetchConfig, expect_media: bool, who: str,
                 deadline: float, decode: bool = False) -> int:
    written = 0
    checked = not (expect_media and cfg.check_content and offset == 0)
    head_box = [b""]
    with open(part, mode) as out:
        try:
            written += _copy_chunks(resp, out, offset, cfg, who, deadline, checked, head_box, decode)
        except (StageError, _Retryable):
            raise
        except BaseException:
            # The body broke off inside the first block: keep what came (if it may be media) so the
            # retry resumes after it.
            head = head_box[0]
            if head and sniff_media(head) is not False:
                out.write(head)
            raise
        head = head_box[0]
        if head:  # a body shorter than one sniff block
            if sniff_media(head) is False:
                raise fetch_error("not_video_content", f"{who}: the body is text/HTML, not a video")
            out.write(head)
            written += len(head)
    return written


def _copy_chunks(resp, out, offset: int, cfg: FetchConfig, who: str, deadline: float, checked: bool,
                 head_box: list, decode: bool = False) -> int:
    """Write the body to ``out``; the first 4 KiB wait in ``head_box[0]`` until sniffed."""
    written = 0
    for chunk in _iter_body(resp, cfg.chunk_bytes, decode):
        if not chunk:
            continue
        if not checked:
            head_box[0] += chunk
            head = head_box[0]
            if len(head) < 4096 and not _could_be_done(resp, head):
                continue  # sniff on a full first block, not a tiny first packet
            if sniff_media(head) is False:
                raise fetch_error("not_video_content", f"{who}: the body is text/HTML, not a video")
            checked, chunk, head_box[0] = True, head, b""
        out.write(chunk)
        written += len(chunk)
        if cfg.max_bytes and offset + written > cfg.max_bytes:
            raise fetch_error("too_large", f"{who}: more than fetch.max_bytes={cfg.max_bytes} bytes")
        if time.monotonic() > deadline:
            raise fetch_error("http_timeout", f"{who}: slower than fetch.total_timeout_s={cfg.total_timeout_s:g}s")
    return written


def _iter_body(resp, size: int, decode: bool = False):
    """The body in pieces of up to ``size`` bytes, each returned as soon as it arrives.

    ``read1`` (urllib3 2) does not wait for a full ``size``: a trickling server meets the deadline
    check after every piece, and a body that breaks off keeps what arrived before the break.
    """
    read1 = getattr(resp.raw, "read1", None)
    if read1 is None:  # pragma: no cover - urllib3 < 2
        yield from (resp.iter_content(chunk_size=size) if decode else resp.raw.stream(size, decode_content=False))
        return
    while True:
        data = read1(size, decode_content=decode)
        if not data:
            return
        yield data


def _could_be_done(resp, head: bytes) -> bool:
    length = resp.headers.get("Content-Length")
    return length is not None and length.isdigit() and len(head) >= int(length)


def _expected_total(resp, offset: int) -> int | None:
    """The full file size this response should complete, if the server says."""
    if resp.status_code == 206:
        match = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", ""))
        if match and match.group(3) != "*":
            return int(match.group(3))
        length = resp.headers.get("Content-Length")
        return offset + int(length) if length and length.isdigit() else None
    length = resp.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _retry_after(header: str | None) -> float | None:
    """Seconds from a Retry-After header in its delta-seconds form (an HTTP date is ignored)."""
    if header and header.strip().isdigit():
        return float(header.strip())
    return None


def _range_start(header: str) -> int | None:
    match = _CONTENT_RANGE_RE.match(header)
    return int(match.group(1)) if match else None


def _unsatisfied_total(header: str) -> int | None:
    match = _CONTENT_RANGE_UNSATISFIED_RE.match(header)
    return int(match.group(1)) if match else None


def _is_read_timeout(exc: Exception) -> bool:
    with contextlib.suppress(Exception):
        import urllib3

        cause = exc.args[0] if exc.args else None
        return isinstance(cause, (urllib3.exceptions.ReadTimeoutError, TimeoutError)) or "Read timed out" in str(exc)
    return False


def _short(exc: Exception, limit: int = 200) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
