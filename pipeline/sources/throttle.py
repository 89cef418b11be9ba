"""YouTube at scale without getting blocked: a per-node request budget, rate limit, backoff and circuit breaker.

YouTube blocks by IP: after enough requests it answers "Sign in to confirm you're not a bot", HTTP 429,
or "This content isn't available, try again later ... rate-limited". Every fetch worker process on a
node leaves through the same IP, so the limits are kept per node, in one small JSON file guarded by
an ``fcntl`` lock (no Ray in stage code; the lock works across the node's processes):

    <state_dir or tempfile.gettempdir()>/tvts-youtube-<key>/state.json

``key`` is ``fetch.youtube.throttle_key`` when set (share one budget between jobs, or across runs), else
the Ray job id + node id inside a Ray worker (one state per job and node; a new run starts fresh), else
this process's pid and start time (a single-process run).

``NodeThrottle(ycfg).run(attempt, label)`` calls ``attempt(egress)`` up to ``ycfg.max_attempts`` times:

- **Budget.** Each attempt (one yt-dlp run: a watch page plus its streams) counts one request;
  after ``max_requests`` on this node and job, fetches fail with ``youtube_budget_exhausted``.
- **Rate.** Attempts are scheduled on a shared clock: at most ``requests_per_minute`` per node and
  ``proxy_requests_per_minute`` per proxy. A worker reserves the next free slot under the lock and
  sleeps outside it, so N workers are spaced, not just each one.
- **Backoff.** After ``youtube_rate_limited`` or ``youtube_bot_check`` the next attempt waits
  ``uniform(0, min(backoff_max_s, backoff_base_s * 2**n))`` (full jitter: workers that were blocked
  together do not come back together), then uses the next proxy / cookie file.
- **Breaker.** ``breaker_threshold`` consecutive bot checks on the node (any worker) open the breaker
  for ``breaker_pause_s``: no worker of the node sends a YouTube request until then. A fetch waits for it
  to close up to ``breaker_max_wait_s`` in all, then fails with ``youtube_breaker_open`` (0: fail at once).
  A success, or an answer about the video itself (unavailable, private ...), resets the count; a 429,
  timeout or network error leaves it as it is. After the pause the count is still at the threshold, so one
  more bot check reopens the breaker at once. Requests already in flight when it opens still finish:
  with W workers and no rate limit, at most N + W - 1 requests see bot checks before the node stops.
- **State.** ``snapshot()`` returns the counters: ``requests`` (budget used), ``sent``, ``bot_checks``,
  ``rate_limited``, ``consecutive_bot_checks``, ``breaker_open_until``, ``breaker_opens``,
  ``requests_at_open`` (``sent`` each time the breaker opened), ``refused_breaker``, ``refused_budget``.
- **Rotation.** ``egress`` is ``(proxy, cookie_file)``, the next of ``proxies`` / ``cookie_files``
  (round-robin on a node-wide cursor) for every attempt. Proxy credentials never appear in messages.

All these outcomes are failures (``StageError``), never skips, so ``--retry-failed`` brings them
back; ``RETRYABLE`` lists the fetch classes that can end differently on a later run.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pipeline.errors import StageError
from pipeline.sources.fetch_config import YouTubeConfig, fetch_error, redact

__all__ = ["RETRYABLE", "THROTTLED", "Egress", "NodeThrottle", "backoff_delay", "redact", "default_key"]

T = TypeVar("T")

# Classes a later run can end differently for (the driver's --retry-failed may limit itself to these).
RETRYABLE = frozenset({
    "youtube_rate_limited", "youtube_bot_check", "youtube_breaker_open", "youtube_budget_exhausted",
    "youtube_timeout", "youtube_network", "youtube_error",
})
# Classes that mean "this IP is being limited": back off, rotate, and retry within the fetch.
THROTTLED = frozenset({"youtube_rate_limited", "youtube_bot_check"})
# Classes that say something about the video, so YouTube did answer this IP normally.
_CONTENT_ANSWERS = frozenset({
    "youtube_private", "youtube_members_only", "youtube_age_restricted", "youtube_login_required",
    "youtube_geo_blocked", "youtube_live", "youtube_format_unavailable", "youtube_unavailable", "too_large",
})


@dataclass(frozen=True)
class Egress:
    """How one attempt reaches YouTube: the proxy (None: direct) and the cookie file (None: none)."""

    proxy: str | None = None
    cookie_file: str | None = None

    def describe(self) -> str:
        parts = [f"proxy {redact(self.proxy)}" if self.proxy else "direct"]
        if self.cookie_file:
            parts.append(f"cookies {os.path.basename(self.cookie_file)}")
        return ", ".join(parts)


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform over [0, min(max_s, base_s * 2**attempt)]."""
    cap = min(float(max_s), float(base_s) * (2 ** max(0, attempt)))
    return (rng or random).uniform(0.0, cap)


def default_key() -> str:
    """One state per Ray job and node inside Ray; else per process (see the module docstring)."""
    ray = sys.modules.get("ray")  # never import Ray here: only use it when this process already runs in it
    if ray is not None:
        with contextlib.suppress(Exception):
            if ray.is_initialized():
                ctx = ray.get_runtime_context()
                return f"ray-{ctx.get_job_id()}-{ctx.get_node_id()[:16]}"
    return f"pid{os.getpid()}-{int(_process_start())}"


def _process_start() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        # Field 22 of /proc/self/stat: start time in clock ticks since boot (unique with the pid).
        return float(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    return time.time()


def _egress_id(proxy: str | None) -> str:
    # The state file never holds proxy credentials either: proxies are keyed by a hash.
    return "direct" if not proxy else hashlib.sha1(proxy.encode()).hexdigest()[:12]


def _limited_sleep(seconds: float) -> None:
    """A wait whose length is known: the stage's stall watchdog waits it out (pipeline.watchdog)."""
    from pipeline import watchdog

    with watchdog.allow(seconds):
        time.sleep(seconds)


class NodeThrottle:
    """The node's shared YouTube limits for one job (see the module docstring).

    ``clock`` and ``sleep`` are injectable so tests can drive time; both default to the real ones.
    """

    def __init__(self, ycfg: YouTubeConfig, key: str | None = None, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] | None = None, rng: random.Random | None = None):
        self.cfg = ycfg
        key = re.sub(r"[^A-Za-z0-9_.-]", "_", key or ycfg.throttle_key or default_key())
        root = Path(os.path.expanduser(ycfg.state_dir)) if ycfg.state_dir else Path(tempfile.gettempdir())
        self.dir = root / f"tvts-youtube-{key}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "state.json"
        self.clock, self.sleep, self.rng = clock, sleep or _limited_sleep, rng or random.Random()
        self.proxies: list[str | None] = list(ycfg.proxies) or ([ycfg.proxy] if ycfg.proxy else [None])
        cookies = list(ycfg.cookie_files) or ([ycfg.cookies_file] if ycfg.cookies_file else [])
        self.cookie_files: list[str | None] = [os.path.abspath(os.path.expanduser(c)) for c in cookies] or [None]

    # ------------------------------------------------------------------------------------------ state
    @contextlib.contextmanager
    def _state(self):
        """The state dict under the node-wide lock; written back (atomically) when the block ends."""
        import fcntl

        fd = os.open(self.dir / "state.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                state = json.loads(self.path.read_text())
            except (OSError, ValueError):
                state = {}
            try:
                yield state
            finally:  # written on a refusal too, so its counter is kept
                tmp = self.path.with_name(f"state.json.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(state, sort_keys=True))
                os.replace(tmp, self.path)
        finally:
            os.close(fd)  # drops the flock

    def snapshot(self) -> dict:
        with self._state() as state:
            return dict(state)

    # ------------------------------------------------------------------------------------------ steps
    def acquire(self) -> Egress:
        """Wait for the breaker and a rate slot, count one request, and return this attempt's egress."""
        waited = 0.0
        while True:
            reserved: Egress | None = None
            with self._state() as st:
                now = self.clock()
                open_until = float(st.get("breaker_open_until", 0.0))
                if open_until > now:
                    wait = open_until - now
                    if waited + wait > self.cfg.breaker_max_wait_s:
                        st["refused_breaker"] = st.get("refused_breaker", 0) + 1
                        raise fetch_error("youtube_breaker_open", (
                            f"YouTube paused on this node for {wait:.0f}s more after "
                            f"{st.get('consecutive_bot_checks', 0)} consecutive bot checks "
                            f"(fetch.youtube.breaker_threshold={self.cfg.breaker_threshold}); no request made"))
                else:
                    if self.cfg.max_requests and st.get("requests", 0) >= self.cfg.max_requests:
                        st["refused_budget"] = st.get("refused_budget", 0) + 1
                        raise fetch_error("youtube_budget_exhausted", (
                            f"this node used its YouTube request budget "
                            f"(fetch.youtube.max_requests={self.cfg.max_requests}); no request made"))
                    cursor = st.get("cursor", 0)
                    reserved = Egress(self.proxies[cursor % len(self.proxies)],
                                      self.cookie_files[cursor % len(self.cookie_files)])
                    eid = _egress_id(reserved.proxy)
                    proxy_next = st.setdefault("proxy_next_at", {})
                    slot = max(now, float(st.get("next_at", 0.0)), float(proxy_next.get(eid, 0.0)))
                    if self.cfg.requests_per_minute > 0:
                        st["next_at"] = slot + 60.0 / self.cfg.requests_per_minute
                    if self.cfg.proxy_requests_per_minute > 0:
                        proxy_next[eid] = slot + 60.0 / self.cfg.proxy_requests_per_minute
                    st["cursor"] = cursor + 1
                    st["requests"] = st.get("requests", 0) + 1
                    wait = slot - now
                    if wait <= 0:
                        st["sent"] = st.get("sent", 0) + 1
            if wait > 0:
                self.sleep(wait)
                waited += wait
            if reserved is None:
                continue
            if wait <= 0 or self._release():
                return reserved
            # The breaker opened while this worker slept towards its slot: the request was given back.

    def _release(self) -> bool:
        """After sleeping to a reserved slot: send (True), or give the request back if the breaker opened."""
        with self._state() as st:
            if float(st.get("breaker_open_until", 0.0)) > self.clock():
                st["requests"] = max(0, st.get("requests", 0) - 1)
                return False
            st["sent"] = st.get("sent", 0) + 1
        return True

    def record(self, error_class: str | None) -> None:
        """The outcome of one attempt: None for success, else its error class."""
        with self._state() as st:
            if error_class == "youtube_bot_check":
                count = st["consecutive_bot_checks"] = st.get("consecutive_bot_checks", 0) + 1
                st["bot_checks"] = st.get("bot_checks", 0) + 1
                if self.cfg.breaker_threshold and count >= self.cfg.breaker_threshold:
                    st["breaker_open_until"] = self.clock() + self.cfg.breaker_pause_s
                    st["breaker_opens"] = st.get("breaker_opens", 0) + 1
                    # How many requests the node had made when it stopped (tests and operators read it).
                    st.setdefault("requests_at_open", []).append(st.get("sent", 0))
            elif error_class is None or error_class in _CONTENT_ANSWERS:
                st["consecutive_bot_checks"] = 0
            if error_class == "youtube_rate_limited":
                st["rate_limited"] = st.get("rate_limited", 0) + 1

    def run(self, attempt: Callable[[Egress], T], label: str = "") -> T:
        """``attempt(egress)`` with budget, rate, breaker, backoff and rotation; raises the last failure."""
        tries = max(1, int(self.cfg.max_attempts))
        for n in range(tries):
            egress = self.acquire()
            try:
                result = attempt(egress)
            except StageError as exc:
                self.record(exc.error_class)
                if exc.error_class not in THROTTLED or n + 1 >= tries:
                    raise fetch_error(exc.error_class, redact(
                        f"{exc.message} [{egress.describe()}; attempt {n + 1}/{tries}]")) from None
                self.sleep(backoff_delay(n, self.cfg.backoff_base_s, self.cfg.backoff_max_s, self.rng))
                continue
            self.record(None)
            return result
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
