"""The one error type stages raise for bad input: it becomes a counted, classified failure in the ledger."""
from __future__ import annotations


class StageError(Exception):
    """A per-input failure: `stage` that failed, `error_class` (a short stable name used for counting,
    e.g. "http_404", "not_video", "decode_timeout", "frame_time_mismatch": decoded frames not from the
    sample's times), and a one-line message naming the input."""

    def __init__(self, stage: str, error_class: str, message: str):
        super().__init__(f"[{stage}/{error_class}] {message}")
        self.stage = stage
        self.error_class = error_class
        self.message = message

    def as_record(self) -> dict:
        return {"stage": self.stage, "error_class": self.error_class, "message": self.message}


class SkipSample(Exception):
    """A per-input outcome that is not an error (e.g. "too_short", "no_speech"): counted as skipped."""

    def __init__(self, reason: str, message: str = ""):
        super().__init__(f"skipped ({reason}) {message}".strip())
        self.reason = reason
        self.message = message
