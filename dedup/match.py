"""From nearest-neighbour frames to flagged (corpus sample, downstream video) pairs.

For a batch of corpus samples, every corpus frame's k nearest downstream frames are grouped by the
downstream video they belong to. Per (sample, downstream video) pair:
  similarity       max cosine over frame pairs (the evidence a person checks first)
  matching_frames  how many of the sample's frames have a frame of that video above the threshold
  the best frame pair (corpus frame index, downstream frame index), and `frame_matches`: the MATCHES best
  corpus frames with their best downstream frame and both times, for the report's strip of thumbnails;
  `corpus_span` / `downstream_span`: the time range the frames over the threshold span on each clock.
Corpus frame indexes and times are the sample's original ones: when only some frames were searched
(corpus.frames_per_sample), a sample's `frame_indices` maps feature rows back to stored frames.
A pair is flagged when similarity >= threshold and matching_frames >= min_matching_frames. Every pair
also goes into a histogram (for the threshold sweep) and the best unflagged ones into a bounded
"near misses" list, so memory stays bounded however large the corpus is.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

HIST_BINS = np.linspace(-1.0, 1.0, 801)  # 0.0025 wide
MATCHES = 4  # frame matches kept per pair (the report's strip shows the best 4 of a video pair)


@dataclass
class FrameTable:
    """Downstream frames as indexed: row -> (global video index, frame index in that video, time)."""
    video: np.ndarray  # int64 [F]
    frame: np.ndarray  # int32 [F]
    time: np.ndarray  # float32 [F]


@dataclass
class PairStats:
    threshold: float
    min_matching_frames: int = 1
    near_miss_cap: int = 200
    hist: np.ndarray = field(default_factory=lambda: np.zeros(len(HIST_BINS) - 1, np.int64))
    best_per_sample: np.ndarray = field(default_factory=lambda: np.zeros(len(HIST_BINS) - 1, np.int64))
    flagged: list[dict] = field(default_factory=list)
    _near: list = field(default_factory=list)  # min-heap of (similarity, counter, pair)
    _count: int = 0
    samples: int = 0

    def near_misses(self) -> list[dict]:
        return [p for _s, _c, p in sorted(self._near, key=lambda t: (-t[0], t[1]))]

    def _keep_near(self, pair: dict) -> None:
        self._count += 1
        item = (pair["similarity"], -self._count, pair)
        if len(self._near) < self.near_miss_cap:
            heapq.heappush(self._near, item)
        elif item[0] > self._near[0][0]:
            heapq.heapreplace(self._near, item)


def aggregate_batch(stats: PairStats, samples: list[dict], frame_counts: list[int], sims: np.ndarray,
                    ids: np.ndarray, table: FrameTable) -> None:
    """Fold one batch of search results into `stats`.

    samples: per corpus sample a dict {key, video_id, shard, frame_times, frame_indices (optional: the
    original frame index of each feature row; absent or None: row i is frame i)}; frame_counts: its
    number of feature rows (frames searched); sims/ids: [sum(frame_counts), k] from the index, rows in
    sample order.
    """
    if not len(sims):
        return
    n_frames, k = sims.shape
    sample_of_row = np.repeat(np.arange(len(samples)), frame_counts)  # [n_frames]
    frame_in_sample = np.concatenate([np.arange(c) for c in frame_counts]) if frame_counts else np.zeros(0, int)
    valid = ids >= 0
    s_idx = np.broadcast_to(sample_of_row[:, None], (n_frames, k))[valid]
    f_idx = np.broadcast_to(frame_in_sample[:, None], (n_frames, k))[valid]
    d_row = ids[valid]
    sim = sims[valid]
    vid = table.video[d_row]
    # Best neighbour per (sample, corpus frame, downstream video): sort by those keys, similarity descending.
    order = np.lexsort((-sim, vid, f_idx, s_idx))
    s_idx, f_idx, d_row, sim, vid = s_idx[order], f_idx[order], d_row[order], sim[order], vid[order]
    first = np.ones(len(order), bool)
    first[1:] = (s_idx[1:] != s_idx[:-1]) | (f_idx[1:] != f_idx[:-1]) | (vid[1:] != vid[:-1])
    s_idx, f_idx, d_row, sim, vid = s_idx[first], f_idx[first], d_row[first], sim[first], vid[first]
    # Per (sample, downstream video): max over frames and count of frames over the threshold.
    order = np.lexsort((-sim, vid, s_idx))
    s_idx, f_idx, d_row, sim, vid = s_idx[order], f_idx[order], d_row[order], sim[order], vid[order]
    starts = np.flatnonzero(np.r_[True, (s_idx[1:] != s_idx[:-1]) | (vid[1:] != vid[:-1])])
    over = (sim >= stats.threshold).astype(np.int64)
    matching = np.add.reduceat(over, starts) if len(starts) else np.zeros(0, np.int64)
    pair_sim = sim[starts]
    stats.hist += np.histogram(np.clip(pair_sim, -1, 1), HIST_BINS)[0]
    best = np.full(len(samples), -np.inf, np.float32)
    np.maximum.at(best, s_idx[starts], pair_sim)
    stats.best_per_sample += np.histogram(np.clip(best[np.isfinite(best)], -1, 1), HIST_BINS)[0]
    stats.samples += len(samples)
    ends = np.r_[starts[1:], len(s_idx)] if len(starts) else starts
    for j, start in enumerate(starts):
        similarity = float(pair_sim[j])
        flagged = similarity >= stats.threshold and matching[j] >= stats.min_matching_frames
        if not flagged and (stats._near and len(stats._near) >= stats.near_miss_cap
                            and similarity <= stats._near[0][0]):
            continue
        sample = samples[int(s_idx[start])]
        indices = sample.get("frame_indices")
        times = sample.get("frame_times") or []
        frame = _original(int(f_idx[start]), indices)
        row = int(d_row[start])
        # Entries start..end are this pair's corpus frames, best first: the first MATCHES for the report's strip,
        # the first matching[j] (those over the threshold) for the time ranges the match spans on both clocks.
        matches = []
        for t in range(start, min(int(ends[j]), start + MATCHES)):
            original = _original(int(f_idx[t]), indices)
            matches.append({"corpus_frame_index": original, "corpus_time": _time(times, original),
                            "downstream_frame_index": int(table.frame[d_row[t]]),
                            "downstream_time": round(float(table.time[d_row[t]]), 3),
                            "similarity": round(float(sim[t]), 5)})
        over = range(start, start + int(matching[j]))
        c_times = [x for x in (_time(times, _original(int(f_idx[t]), indices)) for t in over) if x is not None]
        d_times = [round(float(table.time[d_row[t]]), 3) for t in over]
        pair = {
            "corpus_key": sample["key"],
            "corpus_video_id": sample["video_id"],
            "corpus_shard": sample.get("shard", ""),
            "downstream_global": int(vid[start]),
            "similarity": round(similarity, 5),
            "matching_frames": int(matching[j]),
            "corpus_frames": int(frame_counts[int(s_idx[start])]),
            "corpus_frame_index": frame,
            "corpus_time": _time(times, frame),
            "downstream_frame_index": int(table.frame[row]),
            "downstream_time": float(table.time[row]),
            "frame_matches": matches,
            "corpus_span": [min(c_times), max(c_times)] if c_times else None,
            "downstream_span": [min(d_times), max(d_times)] if d_times else None,
        }
        if flagged:
            stats.flagged.append(pair)
        else:
            stats._keep_near(pair)


def _original(row: int, indices) -> int:
    """A feature row of a sample -> the stored frame it was made from (rows are a subset with frames_per_sample)."""
    return int(indices[row]) if indices is not None and row < len(indices) else row


def _time(times: list, frame: int) -> float | None:
    return float(times[frame]) if frame < len(times) else None


def sweep_counts(hist: np.ndarray, thresholds: list[float]) -> list[int]:
    """How many pairs have similarity >= t, for each t (from the histogram; bin-exact to 0.0025)."""
    tail = np.cumsum(hist[::-1])[::-1]  # tail[i] = pairs in bins i..end
    out = []
    for t in thresholds:
        i = int(np.searchsorted(HIST_BINS, t, side="left"))
        i = min(max(i, 0), len(hist))
        out.append(int(tail[i]) if i < len(hist) else 0)
    return out
