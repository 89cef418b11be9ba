"""Segment stage: cut one video's timed words into TVTS samples of K windows (TVTS-SPEC.md, "Sample").

Public API (stable; pipeline/run.py calls it):

- `SegmentConfig`: k (4), span_choices ([15, 19, 23] s: total span length, gaps included), gap (1.0 s
  between windows), frames (16 bins over the span), frames_per_bin (1: one frame at each bin centre;
  P > 1: P evenly spaced candidates per bin, so the loader can still jitter), min_words_per_window (3),
  max_silence (longest stretch of the span without speech, seconds; None = no limit),
  max_samples_per_video (upper bound of samples cut from one video), samples_per_slot (spans drawn per
  slot: 1 = no overlap), attempts_per_slot (retries of a
  slot whose first candidate is filtered out), seed.
- `plan_samples(video_id, duration, words, cfg) -> (list[SamplePlan], dict[reason, count])`.
- `SamplePlan(key, video_id, start, end, windows: list[Window], frame_times: list[float])` with
  `Window(start, end, text, words: list[Word])`; `SamplePlan.to_json()` gives the shard json's `key`,
  `video_id`, `span` and `windows` fields, plus `frame_times` (the shard's `frames.times`).
- `window_bounds(span_start, span, cfg)`, `frame_times(span_start, span, cfg)`: the geometry alone.

Placement. The usable range [0, duration - 1) is split into n equal slots, n = min(max_samples_per_video,
(duration - 1) // max(span_choices)), so that every span choice fits inside any slot. In each slot a
span length is drawn from `span_choices` and its start uniformly from [slot start, slot end - span):
with samples_per_slot = 1 samples never overlap; with N > 1 each slot gets N spans at distinct random
starts that overlap each other (a small corpus's stand-in for the original's fresh random span per video
per epoch). Every start lies in [0, duration - span - 1) as the spec asks (all placement is done in
integer milliseconds, so keys and times agree exactly); samples come out in time order. The random
numbers come from `random.Random` seeded with SHA-256 of (seed, video id), never Python's `hash()`, so
the same input gives the same samples on any machine and any rerun. Videos too short for one slot of the
longest span use the longest span choice that fits (one sample).

Filters (each rejected candidate is counted under its reason): `too_short` (no span fits: duration <=
shortest span + 1 s), `no_words` (the video has no words at all: one count, nothing planned),
`too_few_words` (some window has fewer than min_words_per_window words), `too_much_silence` (a stretch of
the span longer than max_silence has no word). A slot whose candidate is rejected is retried up to
attempts_per_slot times with a fresh draw; every rejected draw is counted.

Transcript of window k = the words whose start time lies strictly inside (start, end) of window k
(MERLOT's words carry one time, their start; the spec's "timestamps fall strictly inside"). Windows are
disjoint, so a word lands in at most one window. Frame times: the span is split into `frames` equal bins
(gaps included); P candidates per bin at (j + 0.5) / P of the bin, i.e. the bin centre for P = 1; the
order is bin-major (index = bin * P + candidate), as the shard contract says.

Key: `<safe video id>_<start_ms>` with `pipeline.ids.sample_key` (characters [A-Za-z0-9_-] only,
other ids mapped to a safe form plus a short hash; the real id stays in `video_id`).
"""
from __future__ import annotations

import bisect
import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

from pipeline.ids import sample_key
from pipeline.transcripts.types import Word

REASONS = ("too_short", "no_words", "too_few_words", "too_much_silence")


@dataclass
class SegmentConfig:
    k: int = 4
    span_choices: list[float] = field(default_factory=lambda: [15.0, 19.0, 23.0])
    gap: float = 1.0
    frames: int = 16
    frames_per_bin: int = 1
    min_words_per_window: int = 3
    max_silence: float | None = 8.0
    max_samples_per_video: int = 8
    # Spans drawn in each slot. 1: samples never overlap. N > 1: N spans at different random starts in the
    # same slot, overlapping each other; so a small corpus gets more samples, and a sentence lands in
    # different window positions, as it does across the original's epochs (one random span per video
    # per epoch). Overlapping samples share frames.
    samples_per_slot: int = 1
    attempts_per_slot: int = 3
    seed: int = 0

    def validate(self) -> None:
        from common.config import ConfigError

        if self.k < 1:
            raise ConfigError(f"config key 'segment.k': must be >= 1, got {self.k}")
        if not self.span_choices:
            raise ConfigError("config key 'segment.span_choices': needs at least one span length")
        for span in self.span_choices:
            if self.window_length(span) <= 0:
                raise ConfigError(
                    f"config key 'segment.span_choices': span {span} s leaves no time for {self.k} windows "
                    f"with {self.gap} s gaps")
        if self.gap < 0:
            raise ConfigError(f"config key 'segment.gap': must be >= 0, got {self.gap}")
        if self.frames < 1 or self.frames_per_bin < 1:
            raise ConfigError("config keys 'segment.frames' and 'segment.frames_per_bin' must be >= 1")
        if self.max_samples_per_video < 1 or self.attempts_per_slot < 1 or self.samples_per_slot < 1:
            raise ConfigError("config keys 'segment.max_samples_per_video', 'segment.samples_per_slot' and "
                              "'segment.attempts_per_slot' must be >= 1")
        if self.min_words_per_window < 0:
            raise ConfigError("config key 'segment.min_words_per_window' must be >= 0")
        if self.max_silence is not None and self.max_silence <= 0:
            raise ConfigError("config key 'segment.max_silence' must be > 0 or null")

    def window_length(self, span: float) -> float:
        return (float(span) - (self.k - 1) * self.gap) / self.k


class Window(NamedTuple):
    start: float
    end: float
    text: str
    words: list[Word]


class SamplePlan(NamedTuple):
    key: str
    video_id: str
    start: float
    end: float
    windows: list[Window]
    frame_times: list[float]

    def to_json(self) -> dict:
        """The shard json's `key`, `video_id`, `span`, `windows` and `frames.times` fields."""
        return {
            "key": self.key,
            "video_id": self.video_id,
            "span": {"start": self.start, "end": self.end},
            "windows": [
                {"start": w.start, "end": w.end, "text": w.text,
                 "words": [{"word": x.word, "start": x.start, "end": x.end} for x in w.words]}
                for w in self.windows
            ],
            "frame_times": list(self.frame_times),
        }


def rng_for(video_id: str, seed: int) -> random.Random:
    """A random generator that depends only on (seed, video id): same samples on any machine/rerun."""
    digest = hashlib.sha256(f"tvts-segment:{seed}:{video_id}".encode("utf-8", "surrogatepass")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def window_bounds(span_start: float, span: float, cfg: SegmentConfig) -> list[tuple[float, float]]:
    length = cfg.window_length(span)
    return [(round(span_start + i * (length + cfg.gap), 6), round(span_start + i * (length + cfg.gap) + length, 6))
            for i in range(cfg.k)]


def frame_times(span_start: float, span: float, cfg: SegmentConfig) -> list[float]:
    """Bin-major frame times: `frames` equal bins over the span, `frames_per_bin` candidates per bin."""
    bin_width = span / cfg.frames
    per_bin = cfg.frames_per_bin
    return [round(span_start + b * bin_width + (j + 0.5) * bin_width / per_bin, 6)
            for b in range(cfg.frames) for j in range(per_bin)]


def _longest_silence(starts: Sequence[float], ends: Sequence[float], lo: int, hi: int,
                     span_start: float, span_end: float) -> float:
    """Longest stretch of [span_start, span_end] not covered by words lo..hi-1 (sorted by start)."""
    longest = 0.0
    cursor = span_start
    for i in range(lo, hi):
        if starts[i] > cursor:
            longest = max(longest, starts[i] - cursor)
        cursor = max(cursor, min(ends[i], span_end))
    return max(longest, span_end - cursor)


def _check_candidate(start: float, span: float, words: Sequence[Word], starts: list[float],
                     ends: list[float], cfg: SegmentConfig) -> tuple[str | None, list[Window]]:
    windows: list[Window] = []
    for ws, we in window_bounds(start, span, cfg):
        lo = bisect.bisect_right(starts, ws)  # strictly after the window start
        hi = bisect.bisect_left(starts, we)  # strictly before the window end
        inside = list(words[lo:hi])
        if len(inside) < cfg.min_words_per_window:
            return "too_few_words", []
        windows.append(Window(ws, we, " ".join(w.word for w in inside), inside))
    if cfg.max_silence is not None:
        end = start + span
        lo = bisect.bisect_left(starts, start)
        while lo > 0 and ends[lo - 1] > start:  # a word that began before the span may still cover it
            lo -= 1
        hi = bisect.bisect_left(starts, end)
        if _longest_silence(starts, ends, lo, hi, start, end) > cfg.max_silence:
            return "too_much_silence", []
    return None, windows


def plan_samples(video_id: str, duration: float | None, words: Sequence[Word],
                 cfg: SegmentConfig) -> tuple[list[SamplePlan], dict[str, int]]:
    """Place up to cfg.max_samples_per_video samples (see "Placement"); return them and reason -> count.

    `words` must be sorted by start (a Transcript's words are); `duration` is the video's duration in
    seconds (None or non-finite: the end of the last word is used).
    """
    words = list(words)
    if duration is None or not math.isfinite(duration):
        duration = max((w.end for w in words), default=0.0)
    # All placement is in integer milliseconds so that keys, starts and the no-overlap rule agree exactly.
    usable_ms = math.floor((float(duration) - 1.0) * 1000)  # spans start in [0, duration - span - 1)
    spans_ms = sorted({int(round(float(s) * 1000)) for s in cfg.span_choices})
    if not any(s < usable_ms for s in spans_ms):
        return [], {"too_short": 1}
    if not words:
        return [], {"no_words": 1}
    reasons: dict[str, int] = {}
    starts = [w.start for w in words]
    ends = [w.end for w in words]
    rng = rng_for(video_id, cfg.seed)
    n_slots = min(cfg.max_samples_per_video, max(1, usable_ms // spans_ms[-1]))
    plans: list[SamplePlan] = []
    taken: set[int] = set()  # start times (ms) already used: a key is never planned twice
    for slot in range(n_slots):
        slot_lo = -(-slot * usable_ms // n_slots)  # ceil
        slot_hi = (slot + 1) * usable_ms // n_slots  # floor
        choices = [s for s in spans_ms if s < slot_hi - slot_lo]
        if not choices:
            continue
        for _draw in range(cfg.samples_per_slot):
            if len(plans) >= cfg.max_samples_per_video:
                break
            for _attempt in range(cfg.attempts_per_slot):
                span_ms = rng.choice(choices)
                # start + span < slot_hi <= next slot's start: samples of different slots never overlap
                start_ms = slot_lo + rng.randrange(slot_hi - slot_lo - span_ms)
                if start_ms in taken:
                    continue
                start, span = start_ms / 1000.0, span_ms / 1000.0
                reason, windows = _check_candidate(start, span, words, starts, ends, cfg)
                if reason is not None:
                    reasons[reason] = reasons.get(reason, 0) + 1
                    continue
                taken.add(start_ms)
                plans.append(SamplePlan(sample_key(video_id, start), video_id, start,
                                        (start_ms + span_ms) / 1000.0, windows, frame_times(start, span, cfg)))
                break
    plans.sort(key=lambda plan: plan.start)
    return plans, reasons
