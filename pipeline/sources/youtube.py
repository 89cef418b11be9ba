"""YouTube downloads for the fetch stage: yt-dlp's Python API, run in a child process with a hard timeout.

``download_youtube(video_id_or_url, out_dir, cfg, label="") -> YouTubeResult``
    Downloads ``https://www.youtube.com/watch?v=<id>`` (an 11-character id, which may start with
    ``-``, is always turned into this URL, so it can never be read as an option) into ``out_dir`` as
    ``video.<ext>`` plus ``video.<lang>.vtt`` captions (manual preferred, automatic otherwise).
    The child is ``python -m pipeline.sources.youtube --child``; the URL and the options travel as
    JSON on stdin (nothing from the manifest reaches a command line). ``pipeline.media.proc.run`` kills the
    child's whole process tree (yt-dlp's ffmpeg merger included) after ``cfg.youtube.timeout_s``.
    If only the captions fail to download, the video is fetched without them and
    ``info["youtube_captions_error"]`` says why (the transcript stage can fall back to ASR).

    Every attempt goes through ``pipeline.sources.throttle.NodeThrottle`` first: the node's request
    budget and rate (per node and per proxy), exponential backoff with full jitter and the next proxy /
    cookie file after a rate limit or bot check (up to ``max_attempts``), and a circuit breaker that
    pauses every worker of the node after ``breaker_threshold`` consecutive bot checks. Failures name the
    proxy with its credentials redacted.

``build_options(ycfg, out_dir, max_bytes, egress=None) -> dict``
    The ``yt_dlp.YoutubeDL`` options: format capped at ``max_height`` (``build_format``), subtitles
    (``writesubtitles``, ``writeautomaticsub``, ``subtitleslangs``, ``subtitlesformat="vtt"``),
    ``cookiefile``, ``proxy`` (``egress``'s when given), ``ratelimit``, ``socket_timeout``, ``retries``, ``noplaylist``,
    ``outtmpl``/``paths`` inside ``out_dir``, ``max_filesize``, no cache.

``classify_ytdlp_error(message) -> str``
    Maps yt-dlp's error text (``DownloadError``/``ExtractorError`` messages) to an error class:
    ``youtube_private``, ``youtube_members_only``, ``youtube_age_restricted``, ``youtube_bot_check``
    ("Sign in to confirm you’re not a bot", a captcha challenge), ``youtube_login_required``,
    ``youtube_geo_blocked``, ``youtube_live``, ``youtube_rate_limited`` ("HTTP Error 429: Too Many
    Requests", "This content isn't available, try again later ... rate-limited"),
    ``youtube_format_unavailable``, ``too_large``, ``youtube_unavailable``, ``youtube_timeout``,
    ``youtube_network``, else ``youtube_error``. ``pipeline.sources.throttle.RETRYABLE`` lists those a
    later run can end differently for (rate limits, bot checks, timeouts, network, unknown); the rest
    say something final about the video. All are failures, so ``--retry-failed`` redoes them.

``run_ytdlp(url, out_dir, options, timeout, label="") -> YouTubeResult``
    The child-process runner itself, for any URL yt-dlp understands. Tests use it with yt-dlp's
    generic extractor on a 127.0.0.1 HTML5 page (<video> + <track>), which exercises the same
    download, captions, fallback, classification and kill paths; the live YouTube extractor itself
    is not tested here (no network).
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.ids import is_youtube_id
from pipeline.media import proc
from pipeline.sources.fetch_config import FetchConfig, YouTubeConfig, fetch_error, parse_rate
from pipeline.sources.throttle import Egress, NodeThrottle

__all__ = ["YouTubeResult", "download_youtube", "run_ytdlp", "build_options", "build_format",
           "classify_ytdlp_error", "youtube_url"]

RESULT_MARKER = "@@TVTS_YTDLP_RESULT@@ "
# Seconds the child may need on top of yt-dlp's own work (interpreter start, imports).
CHILD_STARTUP_S = 20.0


@dataclass
class YouTubeResult:
    video_path: str
    captions_path: str | None
    info: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def youtube_url(video_id: str) -> str:
    return f"https://www.youtube.com/watch?v={video_id}"


def build_format(ycfg: YouTubeConfig) -> str:
    """mp4/m4a at or below max_height first, then any codec at or below it, then the smallest."""
    if ycfg.format:
        return ycfg.format
    h = int(ycfg.max_height)
    return (f"bv*[height<=?{h}][ext=mp4]+ba[ext=m4a]/bv*[height<=?{h}]+ba/b[height<=?{h}]"
            f"/wv*+ba/w")


def build_options(ycfg: YouTubeConfig, out_dir: str | os.PathLike, max_bytes: int = 0,
                  egress: Egress | None = None) -> dict:
    """JSON-serialisable ``YoutubeDL`` options (the child adds its logger); ``egress`` picks proxy/cookies."""
    out_dir = os.path.abspath(os.fspath(out_dir))
    options: dict = {
        "format": build_format(ycfg),
        "merge_output_format": "mp4/mkv",
        "paths": {"home": out_dir, "temp": out_dir},
        "outtmpl": {"default": "video.%(ext)s"},
        "restrictfilenames": True,
        "noplaylist": True,
        "writesubtitles": True,
        "writeautomaticsub": bool(ycfg.auto_captions),
        "subtitleslangs": list(ycfg.caption_languages),
        "subtitlesformat": "vtt",
        "socket_timeout": float(ycfg.socket_timeout_s),
        "retries": int(ycfg.retries),
        "fragment_retries": int(ycfg.retries),
        "extractor_retries": int(ycfg.retries),
        "continuedl": True,
        "cachedir": False,
        "quiet": True,
        "noprogress": True,
        "ignoreerrors": False,
    }
    if max_bytes:
        options["max_filesize"] = int(max_bytes)
    cookie_file = egress.cookie_file if egress is not None else ycfg.cookies_file
    proxy = egress.proxy if egress is not None else ycfg.proxy
    if cookie_file:
        options["cookiefile"] = os.path.abspath(os.path.expanduser(cookie_file))
    if proxy:
        options["proxy"] = proxy
    if ycfg.rate_limit:
        options["ratelimit"] = parse_rate(ycfg.rate_limit)
    if ycfg.sleep_between_s > 0:
        options["sleep_interval"] = float(ycfg.sleep_between_s)
    return options


# (error class, lower-case substrings); first match wins, so the more specific come first.
_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("youtube_private", ("private video", "video is private")),
    ("youtube_members_only", ("members-only", "members only", "join this channel")),
    ("youtube_age_restricted", ("confirm your age", "age-restricted", "age restricted",
                                "inappropriate for some users")),
    # yt-dlp: "Sign in to confirm you’re not a bot. Use --cookies-from-browser or --cookies ..." (a typographic
    # apostrophe) and "... YouTube is requiring a captcha challenge before playback": the IP is flagged,
    # not the video, so it is retryable and counts towards the node's breaker.
    ("youtube_bot_check", ("not a bot", "requiring a captcha", "captcha challenge")),
    ("youtube_login_required", ("sign in to confirm", "login required", "use --cookies",
                                "only available for registered users")),
    ("youtube_geo_blocked", ("available in your country", "not available from your location",
                             "geo restriction", "geo-restricted")),
    ("youtube_live", ("live event will begin", "premieres in", "premiere will begin", "is not yet live",
                      "this live stream recording is not available")),
    ("youtube_rate_limited", ("http error 429", "too many requests", "rate-limited", "rate limited",
                              "try again later")),
    ("youtube_format_unavailable", ("requested format is not available",)),
    ("too_large", ("larger than max-filesize",)),
    ("youtube_unavailable", ("video unavailable", "this video is unavailable", "has been removed",
                             "no longer available", "account associated with this video has been terminated",
                             "http error 404", "http error 410", "does not exist", "incomplete youtube id",
                             "unsupported url")),
    ("youtube_timeout", ("timed out", "timeout")),
    ("youtube_network", ("connection refused", "name or service not known", "temporary failure in name resolution",
                         "network is unreachable", "unable to download webpage", "connection reset")),
)


def classify_ytdlp_error(message: str) -> str:
    """Error class for a yt-dlp error message (see the module docstring)."""
    text = message.lower()
    for error_class, needles in _RULES:
        if any(needle in text for needle in needles):
            return error_class
    return "youtube_error"


def download_youtube(video: str, out_dir: str | os.PathLike, cfg: FetchConfig, label: str = "") -> YouTubeResult:
    """Download one YouTube video (id or URL) with captions; raises ``StageError(stage="fetch")``."""
    url = youtube_url(video) if is_youtube_id(video) else video

    def attempt(egress: Egress) -> YouTubeResult:
        options = build_options(cfg.youtube, out_dir, cfg.max_bytes, egress)
        return run_ytdlp(url, out_dir, options, cfg.youtube.timeout_s, label=label or video)

    return NodeThrottle(cfg.youtube).run(attempt, label=label or video)


def run_ytdlp(url: str, out_dir: str | os.PathLike, options: dict, timeout: float, label: str = "",
              startup_s: float = CHILD_STARTUP_S) -> YouTubeResult:
    """Run yt-dlp on ``url`` in a child with a hard ``timeout`` (+ ``startup_s``); classify its failures."""
    from common.paths import PROJECT_ROOT

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    payload = json.dumps({"url": url, "options": options})
    who = f"{url} ({label})" if label and label not in url else url
    try:
        completed = proc.run([sys.executable, "-m", "pipeline.sources.youtube", "--child"], timeout + startup_s,
                             stdin=payload.encode("utf-8"), env=env)
    except proc.ProcTimeout:
        raise fetch_error("youtube_timeout", f"{who}: yt-dlp ran longer than fetch.youtube.timeout_s="
                                             f"{timeout:g}s and was killed") from None
    result = _parse_child_output(completed.stdout)
    if result is None:
        tail = proc.stderr_tail(completed.stderr)
        raise fetch_error("youtube_error", f"{who}: yt-dlp child exited {completed.returncode} without a result: {tail}")
    if not result.get("ok"):
        message = result.get("message") or "unknown yt-dlp error"
        error_class = classify_ytdlp_error(message + " " + " ".join(result.get("log", [])[-5:]))
        raise fetch_error(error_class, f"{who}: {_one_line(message)}")
    video_path = result.get("video_path")
    if not video_path or not os.path.isfile(video_path):
        log = " ".join(result.get("log", []))
        error_class = classify_ytdlp_error(log)
        if error_class == "youtube_error":
            error_class = "youtube_no_file"
        raise fetch_error(error_class, f"{who}: yt-dlp finished without a video file: {_one_line(log)[-300:]}")
    captions = result.get("captions") or {}
    captions_path = None
    for lang in options.get("subtitleslangs", []):
        path = captions.get(lang)
        if path and os.path.isfile(path):
            captions_path = path
            break
    if captions_path is None:
        captions_path = next((p for p in captions.values() if p and os.path.isfile(p)), None)
    files = [video_path] + [p for p in captions.values() if p and os.path.isfile(p)]
    info = dict(result.get("info") or {})
    info["captions_languages"] = sorted(captions)
    if result.get("captions_error"):
        info["youtube_captions_error"] = _one_line(result["captions_error"])[:300]
    info["bytes"] = os.path.getsize(video_path)
    return YouTubeResult(video_path=video_path, captions_path=captions_path, info=info, files=files)


def _parse_child_output(stdout: bytes | None) -> dict | None:
    if not stdout:
        return None
    text = stdout.decode("utf-8", errors="replace")
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                return json.loads(line[len(RESULT_MARKER):])
            except json.JSONDecodeError:
                return None
    return None


def _one_line(text: str) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text.removeprefix("ERROR: ")


# --------------------------------------------------------------------------------------------------
# The child process

INFO_KEYS = ("id", "title", "duration", "uploader", "channel_id", "upload_date", "width", "height", "fps",
             "vcodec", "acodec", "format_id", "ext", "webpage_url", "language", "extractor_key")


class _Log:
    """yt-dlp logger: keeps the last messages so the parent can classify a failure."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _keep(self, msg: str) -> None:
        self.lines.append(str(msg)[:500])
        del self.lines[:-50]

    def debug(self, msg: str) -> None:
        if not str(msg).startswith("[debug] "):
            self._keep(msg)

    def info(self, msg: str) -> None:
        self._keep(msg)

    def warning(self, msg: str) -> None:
        self._keep(msg)

    def error(self, msg: str) -> None:
        self._keep(msg)


def _extract(yt_dlp, options: dict, url: str) -> dict:
    with yt_dlp.YoutubeDL(options) as ydl:
        info = ydl.extract_info(url, download=True)
        return ydl.sanitize_info(info) or {}


def _child_main() -> int:
    request = json.loads(sys.stdin.read())
    log = _Log()
    out: dict
    captions_error = None
    try:
        import yt_dlp

        options = dict(request["options"])
        options["logger"] = log
        try:
            info = _extract(yt_dlp, options, request["url"])
        except yt_dlp.utils.DownloadError as exc:
            # Captions are written before the video; losing them must not lose the video (ASR can
            # still transcribe it), so try once more without them.
            if "unable to download video subtitles" not in str(exc).lower() or not options.get("writesubtitles"):
                raise
            captions_error = str(exc)
            options.update(writesubtitles=False, writeautomaticsub=False)
            info = _extract(yt_dlp, options, request["url"])
        downloads = info.get("requested_downloads") or []
        video_path = next((d.get("filepath") for d in downloads if d.get("filepath")), None)
        captions = {lang: sub.get("filepath") for lang, sub in (info.get("requested_subtitles") or {}).items()
                    if isinstance(sub, dict) and sub.get("filepath")}
        out = {"ok": True, "video_path": video_path, "captions": captions,
               "info": {k: info.get(k) for k in INFO_KEYS if info.get(k) is not None}, "log": log.lines,
               "captions_error": captions_error}
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent to classify
        out = {"ok": False, "error_type": type(exc).__name__, "message": str(exc), "log": log.lines}
    sys.stdout.write("\n" + RESULT_MARKER + json.dumps(out, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        sys.exit(_child_main())
    print("usage: python -m pipeline.sources.youtube --child  (reads {url, options} as JSON on stdin)", file=sys.stderr)
    sys.exit(2)
