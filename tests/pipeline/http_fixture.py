"""A threaded HTTP server on 127.0.0.1 with well-behaved and badly-behaved endpoints, for fetch tests.

Use the ``http_server`` pytest fixture (tests/pipeline/conftest.py) or ``LocalHTTPServer`` directly::

    server.add_file("clip.mp4", data)          # optional content_type=...
    server.url("/files/clip.mp4")             # -> "http://127.0.0.1:PORT/files/clip.mp4"

Endpoints (NAME is a file added with ``add_file``):
  /files/NAME               200, Content-Length, honours ``Range: bytes=N-`` / ``N-M`` (206, 416)
  /norange/NAME             200 with the whole body, ignoring Range
  /nolength/NAME            200 without Content-Length (body ends when the connection closes)
  /slow/SECONDS/NAME        headers at once, then SECONDS of silence, then the body
  /trickle/SECONDS/NAME     the body one 1 KiB block every SECONDS
  /truncated/NAME           200 with the full Content-Length but half the body, then closes (always)
  /flaky/NAME               first request: like /truncated; later requests: like /files (Range too)
  /fail/N/CODE/NAME         the first N requests answer CODE, later ones serve NAME
  /retry-after/S/N/NAME     the first N requests answer 503 with ``Retry-After: S``, later ones serve NAME
  /status/CODE              answers CODE with a short text body
  /redirect/N/NAME          N chained 302 redirects, then /files/NAME
  /redirect-loop            302 to itself forever
  /html/NAME                the file's bytes served as text/html
  /gzip/NAME                the file gzip-compressed with ``Content-Encoding: gzip`` (asked for or not)
  /videopage/VIDEO/TRACK    an HTML page with <video src=/files/VIDEO> and an English <track src=/files/TRACK>
  /blocked/KIND[/N]         YouTube blocking this IP: KIND ``bot`` (200) or ``ratelimit`` (429) with the error
                            text yt-dlp reports for it (``YT_ERRORS``) as JSON ``{"error": ...}``; with N only the
                            first N requests, later ones (and KIND ``ok``) answer ``{"ok": true}``

Absolute-URI requests (``GET http://host:port/path``, what an HTTP proxy receives) are served as ``/path``,
so a server can stand in for a proxy in ``fetch.youtube.proxies``; ``hits`` counts them under ``/path``.

``server.requests`` records (method, path, headers) of every request; ``server.hits(path)`` counts them.
Only 127.0.0.1 is ever bound.
"""
from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska", ".vtt": "text/vtt",
          ".srt": "application/x-subrip", ".json": "application/json", ".html": "text/html", ".txt": "text/plain"}


# yt-dlp's own final messages (yt_dlp/extractor/youtube/_video.py and _base.py's login hint; the test
# test_youtube_throttle.py checks they are what yt-dlp builds) for YouTube's bot check and session rate limit.
YT_ERRORS = {
    "bot": "ERROR: [youtube] dQw4w9WgXcQ: Sign in to confirm you’re not a bot. Use --cookies-from-browser or "
           "--cookies for the authentication. See  https://github.com/yt-dlp/yt-dlp/wiki/FAQ#how-do-i-pass-"
           "cookies-to-yt-dlp  for how to manually pass cookies. Also see  https://github.com/yt-dlp/yt-dlp/wiki/"
           "Extractors#exporting-youtube-cookies  for tips on effectively exporting YouTube cookies",
    "ratelimit": "ERROR: [youtube] dQw4w9WgXcQ: This content isn't available, try again later. The current "
                 "session has been rate-limited by YouTube for up to an hour. It is recommended to use `-t sleep` "
                 "to add a delay between video requests to avoid exceeding the rate limit. For more information, "
                 "refer to  https://github.com/yt-dlp/yt-dlp/wiki/Extractors#this-content-isnt-available-try-"
                 "again-later",
}


class LocalHTTPServer:
    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"owner": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    # lifecycle
    def start(self) -> "LocalHTTPServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "LocalHTTPServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # content
    def add_file(self, name: str, data: bytes, content_type: str | None = None) -> str:
        """Serve ``data`` under ``NAME`` on every endpoint; returns the /files/ URL."""
        if content_type is None:
            suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
            content_type = _TYPES.get(suffix.lower(), "application/octet-stream")
        self.files[name] = (data, content_type)
        return self.url(f"/files/{name}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path if path.startswith('/') else '/' + path}"

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for _, p, _ in self.requests if p == path)

    def _record(self, method: str, path: str, headers: dict) -> int:
        with self._lock:
            self.requests.append((method, path, headers))
            self._counts[path] = self._counts.get(path, 0) + 1
            return self._counts[path]


def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Handler(BaseHTTPRequestHandler):
    owner: LocalHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # ------------------------------------------------------------------------------------------
    def _dispatch(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        if re.match(r"^https?://", path):  # a proxy request: serve the path as if asked directly
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        count = self.owner._record(self.command, path, dict(self.headers.items()))
        self.head_only = head
        try:
            self._route(path, count)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _route(self, path: str, count: int) -> None:
        parts = path.strip("/").split("/")
        kind, rest = parts[0], parts[1:]
        if kind == "files" and rest:
            return self._serve("/".join(rest), ranges=True)
        if kind == "norange" and rest:
            return self._serve("/".join(rest), ranges=False)
        if kind == "nolength" and rest:
            return self._serve("/".join(rest), ranges=False, length=False)
        if kind == "slow" and len(rest) >= 2:
            return self._serve("/".join(rest[1:]), ranges=True, delay=float(rest[0]))
        if kind == "trickle" and len(rest) >= 2:
            return self._serve("/".join(rest[1:]), ranges=True, trickle=float(rest[0]))
        if kind == "truncated" and rest:
            return self._serve("/".join(rest), ranges=False, truncate=True)
        if kind == "flaky" and rest:
            return self._serve("/".join(rest), ranges=True, truncate=count == 1)
        if kind == "fail" and len(rest) >= 3:
            if count <= int(rest[0]):
                return self._status(int(rest[1]))
            return self._serve("/".join(rest[2:]), ranges=True)
        if kind == "retry-after" and len(rest) >= 3:
            if count <= int(rest[1]):
                return self._status(503, {"Retry-After": rest[0]})
            return self._serve("/".join(rest[2:]), ranges=True)
        if kind == "status" and rest:
            return self._status(int(rest[0]))
        if kind == "redirect" and len(rest) >= 2:
            n = int(rest[0])
            target = f"/redirect/{n - 1}/{'/'.join(rest[1:])}" if n > 1 else f"/files/{'/'.join(rest[1:])}"
            return self._redirect(target)
        if kind == "redirect-loop":
            return self._redirect("/redirect-loop")
        if kind == "videopage" and len(rest) == 2:
            page = (f'<!DOCTYPE html><html><head><title>clip</title></head><body>'
                    f'<video controls src="/files/{rest[0]}"><track kind="captions" srclang="en" label="English" '
                    f'src="/files/{rest[1]}"></video></body></html>').encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            if not self.head_only:
                self.wfile.write(page)
            return
        if kind == "blocked" and rest:
            blocked = rest[0] in YT_ERRORS and (len(rest) < 2 or count <= int(rest[1]))
            body = json.dumps({"error": YT_ERRORS[rest[0]]} if blocked else {"ok": True}).encode()
            self.send_response(429 if blocked and rest[0] == "ratelimit" else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not self.head_only:
                self.wfile.write(body)
            return
        if kind == "gzip" and rest:
            entry = self.owner.files.get("/".join(rest))
            if entry is None:
                return self._status(404)
            body = gzip.compress(entry[0])
            self.send_response(200)
            self.send_header("Content-Type", entry[1])
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not self.head_only:
                self.wfile.write(body)
            return
        if kind == "html" and rest:
            return self._serve("/".join(rest), ranges=False, content_type="text/html; charset=utf-8")
        return self._status(404)

    def _status(self, code: int, headers: dict | None = None) -> None:
        body = f"status {code}\n".encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self.head_only:
            self.wfile.write(body)

    def _redirect(self, target: str) -> None:
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, name: str, *, ranges: bool, length: bool = True, delay: float = 0.0, trickle: float = 0.0,
               truncate: bool = False, content_type: str | None = None) -> None:
        entry = self.owner.files.get(name)
        if entry is None:
            return self._status(404)
        data, ctype = entry
        ctype = content_type or ctype
        start, end, status = 0, len(data), 200
        header = self.headers.get("Range")
        if ranges and header:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", header.strip())
            if match:
                start = int(match.group(1))
                end = min(int(match.group(2)) + 1, len(data)) if match.group(2) else len(data)
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        body = data[start:end]
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        if truncate:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.head_only:
            return
        if delay:
            time.sleep(delay)
        if truncate:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if trickle:
            for i in range(0, len(body), 1024):
                self.wfile.write(body[i:i + 1024])
                self.wfile.flush()
                time.sleep(trickle)
            return
        self.wfile.write(body)
