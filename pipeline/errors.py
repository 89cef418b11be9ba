"""What stages raise: `StageError` for bad input (a counted, classified failure in the ledger), `SkipSample` for
a counted skip, and `JobFault` for a fault of the job's environment, which stops the whole job."""
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


class JobFault(Exception):
    """The job's own environment broke (disk or bucket full, output folder gone, permission denied on the
    output): not any input's fault, so it is not recorded per video (thousands of identical failures) but
    stops the job with one line and exit code 1; a rerun after the fault is fixed resumes."""


# errno values that mean "the place we write to is unusable", wherever it happens (scratch or output).
FAULT_ERRNOS = frozenset({28, 122, 30})   # ENOSPC, EDQUOT, EROFS


def job_fault_in(exc: BaseException | None) -> "JobFault | None":
    """The JobFault behind an exception, through Ray's wrappers (RayTaskError.cause) and Python's chaining."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, JobFault):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
        seen += 1
    return None
