"""What the fetchers share: their typed config sections and the fetch stage's error constructor.

`FetchConfig` (with `YouTubeConfig` under `fetch.youtube`) is the `fetch` section of the job YAML;
`fetch_error(error_class, message)` is the `StageError` every fetcher raises; `suffix_of(url, default)` is
the file suffix a download is stored under; `parse_rate("2M")` reads yt-dlp's speed caps; `redact(text)`
hides proxy credentials. The fetchers
(`fetch`, `http`, `youtube`) import this module; it imports none of them.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from pipeline.errors import StageError

__all__ = ["FetchConfig", "YouTubeConfig", "fetch_error", "suffix_of", "parse_rate", "redact"]


@dataclass
class YouTubeConfig:
    """yt-dlp options for YouTube rows."""

    max_height: int = 720            # format selection never picks a taller video stream
    format: str = ""                 # a yt-dlp format string; empty: built from max_height (mp4 preferred)
    caption_languages: list[str] = field(default_factory=lambda: ["en"])
    auto_captions: bool = True       # also fetch YouTube's automatic (ASR) captions
    cookies_file: str = ""           # Netscape cookies.txt for age/bot checks
    proxy: str = ""                  # e.g. socks5://127.0.0.1:1080
    rate_limit: str = ""             # download speed cap, bytes/s with K/M/G suffix ("2M")
    timeout_s: float = 1800.0        # hard limit for one video; the yt-dlp process tree is killed after
    socket_timeout_s: float = 30.0
    retries: int = 3                 # yt-dlp's own retries for HTTP errors and fragments
    sleep_between_s: float = 0.0     # yt-dlp's own pause before each download (within one attempt)
    # Staying unblocked at scale (pipeline.sources.throttle): limits shared by all workers of a node.
    requests_per_minute: float = 20.0        # attempts per minute on this node (0: no limit)
    proxy_requests_per_minute: float = 0.0   # attempts per minute through each proxy (0: no limit)
    max_requests: int = 0                    # request budget per node and job (0: none)
    max_attempts: int = 4                    # attempts per video on rate limits / bot checks
    backoff_base_s: float = 10.0             # first backoff cap; doubles per attempt, full jitter
    backoff_max_s: float = 600.0
    breaker_threshold: int = 5               # consecutive bot checks that pause the node (0: never)
    breaker_pause_s: float = 1800.0          # how long the node sends no YouTube request
    breaker_max_wait_s: float = 3600.0       # how long a fetch waits for the pause to end (0: fail at once)
    proxies: list[str] = field(default_factory=list)       # rotated per attempt (overrides `proxy`)
    cookie_files: list[str] = field(default_factory=list)  # rotated per attempt (overrides `cookies_file`)
    throttle_key: str = ""                   # share state under this name (default: per Ray job and node)
    state_dir: str = ""                      # where the node's state lives (default: the temp dir)

    def validate(self) -> None:
        from common.config import ConfigError

        if self.max_height < 1:
            raise ConfigError(f"config key 'fetch.youtube.max_height' must be >= 1, got {self.max_height}")
        if self.timeout_s <= 0:
            raise ConfigError("config key 'fetch.youtube.timeout_s' must be > 0")
        for name in ("requests_per_minute", "proxy_requests_per_minute", "max_requests", "backoff_base_s",
                     "backoff_max_s", "breaker_threshold", "breaker_pause_s", "breaker_max_wait_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"config key 'fetch.youtube.{name}' must be >= 0, got {getattr(self, name)}")
        if self.max_attempts < 1:
            raise ConfigError(f"config key 'fetch.youtube.max_attempts' must be >= 1, got {self.max_attempts}")
        for proxy in self.proxies:
            if not re.match(r"^(https?|socks4a?|socks5h?)://", str(proxy)):
                raise ConfigError(f"config key 'fetch.youtube.proxies': {redact(str(proxy))!r} is not an "
                                  "http(s):// or socks URL")
        if self.rate_limit:
            try:
                parse_rate(self.rate_limit)
            except ValueError as exc:
                raise ConfigError(f"config key 'fetch.youtube.rate_limit': {exc}") from None


@dataclass
class FetchConfig:
    """How sources are fetched (``pipeline.sources.fetch`` section)."""

    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0      # longest silence while reading a response
    total_timeout_s: float = 3600.0   # wall-clock cap for one HTTP download, retries included
    retries: int = 3                  # extra attempts after the first (HTTP 5xx/429, timeouts, broken bodies)
    backoff_s: float = 1.0            # first retry delay; doubles each attempt
    backoff_max_s: float = 30.0
    max_redirects: int = 10
    max_bytes: int = 8 * 1024**3      # size cap per file (0: none)
    chunk_bytes: int = 1024 * 1024
    check_content: bool = True        # reject HTML/text bodies and Content-Types served as video
    user_agent: str = "tvts-pipeline/1.0 (+https://github.com/)"
    keep_downloads: bool = False      # keep scratch copies after the sample is written
    captions_required: bool = True    # a captions file that cannot be fetched fails the video
    youtube: YouTubeConfig = field(default_factory=YouTubeConfig)

    def validate(self) -> None:
        from common.config import ConfigError

        for name in ("connect_timeout_s", "read_timeout_s", "total_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config key 'fetch.{name}' must be > 0, got {getattr(self, name)}")
        if self.retries < 0 or self.max_redirects < 0 or self.max_bytes < 0:
            raise ConfigError("config keys 'fetch.retries', 'fetch.max_redirects', 'fetch.max_bytes' must be >= 0")
        if self.chunk_bytes < 1024:
            raise ConfigError("config key 'fetch.chunk_bytes' must be >= 1024")


def fetch_error(error_class: str, message: str) -> StageError:
    return StageError("fetch", error_class, message)


def redact(text: str | None) -> str:
    """``scheme://user:pass@host`` -> ``scheme://***@host`` anywhere in ``text`` (proxy credentials)."""
    return re.sub(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s]+@", r"\1***@", text or "")


def parse_rate(text: str) -> int:
    """``"500K"``, ``"2M"``, ``"1.5G"`` or a plain number of bytes/s -> bytes/s."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)i?B?\s*", str(text), re.I)
    if not match:
        raise ValueError(f"rate limit {text!r} is not a number with an optional K/M/G suffix (e.g. 2M)")
    scale = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


def suffix_of(url: str, default: str) -> str:
    name = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    suffix = os.path.splitext(name)[1].lower()
    if 1 < len(suffix) <= 6 and suffix[1:].isalnum():
        return suffix
    return default
