"""Stall detection for the stages: one video's work that makes no progress for `stall.timeout_s` is given up.

Every stage runs a video's step in a fresh thread (`StallWatch.run`) while the calling thread watches its
heartbeat. Code on the way calls `beat()` when it makes progress (an HTTP chunk, an ASR segment, a decoded
sample), and wraps a call that has a time limit of its own in `allow(seconds)` (an ffmpeg or yt-dlp child
process, killed after its timeout): the watchdog then waits for that limit instead of the stall timeout.
A step silent for longer is abandoned: it is retried `stall.retries` times in a new thread, then the video
fails with `stalled`. Python cannot stop a thread, so an abandoned one runs on until its call returns; it
works on a copy of the video's state, so nothing it does later reaches the job's records.

No Ray here: the same code runs in a Ray worker, in the local job and in tests.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

_GRACE_S = 5.0          # on top of a call's own limit: its process tree is being killed and drained
_lock = threading.Lock()
_hearts: dict[int, "_Heart"] = {}   # thread ident -> the heartbeat of the step that thread runs


@dataclass
class StallConfig:
    """The `stall` config section."""

    timeout_s: float = 600.0   # a video's step with no progress for this long is given up (0: never)
    retries: int = 1           # new attempts of a stalled step before the video fails with `stalled`

    def validate(self) -> None:
        from common.config import ConfigError

        if self.timeout_s < 0 or self.retries < 0:
            raise ConfigError("config keys 'stall.timeout_s' and 'stall.retries' must be >= 0")


class Stalled(Exception):
    """A step made no progress for the stall timeout, on every attempt."""


class _Heart:
    def __init__(self) -> None:
        self.last = time.monotonic()
        self.allowance = 0.0    # seconds a call with its own limit may stay silent


def beat() -> None:
    """Progress: the step running on this thread is alive (no-op outside a watched step)."""
    heart = _hearts.get(threading.get_ident())
    if heart is not None:
        heart.last = time.monotonic()


@contextlib.contextmanager
def allow(seconds: float) -> Iterator[None]:
    """The wrapped call has its own limit of `seconds`: the watchdog waits that long (plus a grace)."""
    heart = _hearts.get(threading.get_ident())
    if heart is None:
        yield
        return
    before = heart.allowance
    heart.allowance = max(before, float(seconds) + _GRACE_S)
    heart.last = time.monotonic()
    try:
        yield
    finally:
        heart.allowance = before
        heart.last = time.monotonic()


class StallWatch:
    """Runs `fn(state)` with stall detection; `state` is copied per attempt and copied back on success."""

    def __init__(self, cfg: StallConfig, poll_s: float = 0.5):
        self.cfg = cfg
        self.poll_s = poll_s

    def run(self, fn: Callable[[Any], None], state: Any, what: str) -> None:
        if not self.cfg.timeout_s:
            fn(state)
            return
        for attempt in range(self.cfg.retries + 1):
            work = _detached_copy(state)
            done, outcome = self._attempt(fn, work, what)
            if done:
                state.__dict__.update(work.__dict__)   # a failing step's partial state too (its downloads)
                if outcome is not None:
                    raise outcome
                return
            log.warning("%s made no progress for %.0f s (attempt %d of %d): given up", what, self.cfg.timeout_s,
                        attempt + 1, self.cfg.retries + 1)
        raise Stalled(f"{what} made no progress for {self.cfg.timeout_s:g} s "
                      f"({self.cfg.retries + 1} attempt{'s' if self.cfg.retries else ''}; stall.timeout_s)")

    def _attempt(self, fn: Callable[[Any], None], work: Any, what: str) -> tuple[bool, BaseException | None]:
        heart = _Heart()
        finished = threading.Event()
        result: list[BaseException | None] = [None]

        def target() -> None:
            with _lock:
                _hearts[threading.get_ident()] = heart
            try:
                fn(work)
            except BaseException as exc:  # noqa: BLE001 - handed to the watching thread as is
                result[0] = exc
            finally:
                with _lock:
                    _hearts.pop(threading.get_ident(), None)
                finished.set()

        thread = threading.Thread(target=target, name=f"stage:{what}"[:60], daemon=True)
        thread.start()
        while not finished.wait(self.poll_s):
            if time.monotonic() - heart.last > max(self.cfg.timeout_s, heart.allowance):
                return False, None
        return True, result[0]


def _detached_copy(state: Any) -> Any:
    """A copy whose containers are its own: an abandoned attempt appending to a list touches only its copy."""
    work = copy.copy(state)
    for name, value in vars(state).items():
        if isinstance(value, (list, dict, set)):
            setattr(work, name, copy.copy(value))
    return work
