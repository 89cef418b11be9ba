"""Give clean, punctuated words the times of the noisy timed words they transcribe (TVTS-SPEC: "aligned
(dynamic time warping over edit distance) to a punctuated, denoised transcript").

Public API (stable):

- `align_words(clean: list[str], timed: list[Word], band=None) -> list[Word]`: the clean tokens with
  times taken from `timed`. Both sequences are compared after `norm_token` (lowercase, letters/digits
  only). The warping path is monotone and covers both sequences end to end; each noisy word's time is
  shared among the clean words mapped to it in proportion to their character length, and a clean word
  mapped to several noisy words spans from the first one's start to the last one's end. The result is
  sorted and its times are non-decreasing.
- `dtw_path(n, m, cost, band) -> list[(i, j)]`: the minimum-cost monotone path from (0, 0) to (n-1, m-1)
  with steps (1, 1), (1, 0), (0, 1), restricted to cells within `band` of the scaled diagonal
  (Sakoe-Chiba; None = max(25, 10% of the longer side)): O(n * band) time and memory.
- `token_cost(a, b)`: Levenshtein distance of the normalised tokens divided by the longer length (0 for
  equal tokens, 1 for nothing in common).
"""
from __future__ import annotations

import math
import re
from functools import lru_cache

from pipeline.transcripts.types import Word

_NON_ALNUM = re.compile(r"[\W_]+", re.UNICODE)


def norm_token(token: str) -> str:
    return _NON_ALNUM.sub("", token.lower())


@lru_cache(maxsize=65536)
def token_cost(a: str, b: str) -> float:
    """Normalised Levenshtein distance in [0, 1] of two already-normalised tokens."""
    if a == b:
        return 0.0
    if not a or not b:
        return 1.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return prev[-1] / max(len(a), len(b))


def dtw_path(n: int, m: int, cost, band: int | None = None) -> list[tuple[int, int]]:
    """Minimum-cost warping path over an n x m grid; `cost(i, j)` is the local cost."""
    if n == 0 or m == 0:
        return []
    if band is None:
        band = max(25, int(0.1 * max(n, m)))
    band = max(band, abs(n - m) + 1)  # the end cell must be reachable
    inf = math.inf
    # Row i keeps only the columns [lo_i, hi_i): the band around the diagonal j = i * (m - 1) / (n - 1).
    ranges = []
    for i in range(n):
        centre = i * (m - 1) / (n - 1) if n > 1 else 0
        ranges.append((max(0, int(centre) - band), min(m, int(centre) + band + 1)))
    acc: list[list[float]] = []
    back: list[list[int]] = []  # 0: diagonal, 1: from above (i-1, j), 2: from the left (i, j-1)
    for i in range(n):
        lo, hi = ranges[i]
        row = [inf] * (hi - lo)
        moves = [0] * (hi - lo)
        plo, phi = ranges[i - 1] if i else (0, 0)
        prev = acc[i - 1] if i else None
        for j in range(lo, hi):
            c = cost(i, j)
            if i == 0 and j == 0:
                row[0], moves[0] = c, 0
                continue
            best, move = inf, 0
            if prev is not None and plo <= j - 1 < phi and prev[j - 1 - plo] < best:
                best, move = prev[j - 1 - plo], 0
            if prev is not None and plo <= j < phi and prev[j - plo] < best:
                best, move = prev[j - plo], 1
            if j - 1 >= lo and row[j - 1 - lo] < best:
                best, move = row[j - 1 - lo], 2
            row[j - lo] = best + c
            moves[j - lo] = move
        acc.append(row)
        back.append(moves)
    path = []
    i, j = n - 1, m - 1
    while True:
        path.append((i, j))
        if i == 0 and j == 0:
            break
        move = back[i][j - ranges[i][0]]
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    path.reverse()
    return path


def align_words(clean: list[str], timed: list[Word], band: int | None = None) -> list[Word]:
    """Clean tokens with times from the noisy timed words (see module doc)."""
    clean = [c for c in clean if c]
    if not clean or not timed:
        return []
    a = [norm_token(c) for c in clean]
    b = [norm_token(w.word) for w in timed]
    path = dtw_path(len(a), len(b), lambda i, j: token_cost(a[i], b[j]), band)
    clean_of: dict[int, list[int]] = {}  # noisy j -> clean words mapped to it
    noisy_of: dict[int, list[int]] = {}  # clean i -> noisy words mapped to it
    for i, j in path:
        clean_of.setdefault(j, []).append(i)
        noisy_of.setdefault(i, []).append(j)

    def share(i: int, j: int) -> tuple[float, float]:
        """The part of noisy word j's interval that clean word i gets (by character length)."""
        members = clean_of[j]
        w = timed[j]
        if len(members) == 1:
            return w.start, w.end
        weights = [len(clean[k]) + 1 for k in members]
        total = float(sum(weights))
        before = sum(weights[: members.index(i)])
        own = weights[members.index(i)]
        length = w.end - w.start
        return w.start + length * before / total, w.start + length * (before + own) / total

    out: list[Word] = []
    for i, token in enumerate(clean):
        js = noisy_of[i]
        start = share(i, js[0])[0]
        end = share(i, js[-1])[1]
        out.append(Word(token, round(start, 3), round(max(end, start), 3)))
    return out
