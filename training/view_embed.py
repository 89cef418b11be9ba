"""Items (videos, images) -> the video tower's [CLS] per view, in batches of whole items. No Ray here.

    item_groups(n, views, batch_size)   consecutive items, ceil(batch_size / views) of them per group
    embed_groups(model, source, groups, ...)   one forward pass per group (split at batch_size views)
    merge(parts, n, views, dim)         the parts of several callers (Ray actors) back in item order

A source is a map-style dataset: `source[i] -> (i, views [V, 3, T, S, S] or None, error class, message)`
(decode errors travel as values, so one broken file does not stop a DataLoader). The groups fix which
items share a forward pass whatever runs them: this process (training/downstream_features.py) and
Ray actors given whole groups (training/ray_features.py) compute the same batches, so the same
features (a batch's composition could otherwise change float rounding).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

__all__ = ["Embedded", "item_groups", "embed_groups", "merge", "resolve_device", "MAX_EXAMPLES"]

MAX_EXAMPLES = 10                     # failure messages kept per extraction


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Embedded:
    indices: list[int]                # the items, in order
    cls: np.ndarray                   # float32 [len(indices), V, Dv]; rows of failed items are zeros
    ok: np.ndarray                    # bool [len(indices)]
    failures: Counter = field(default_factory=Counter)     # error class -> items
    examples: list[tuple[int, str]] = field(default_factory=list)   # (item, message), first few


def item_groups(n: int, views: int, batch_size: int) -> list[list[int]]:
    """Items 0..n-1 in consecutive groups of ceil(batch_size / views): a group's views fill a batch."""
    per = max(1, -(-batch_size // max(1, views)))
    return [list(range(start, min(n, start + per))) for start in range(0, n, per)]


@torch.no_grad()
def embed_groups(model, source, groups: list[list[int]], views: int, batch_size: int, num_workers: int,
                 device: torch.device, on_item: Callable[[], None] | None = None) -> Embedded:
    """[CLS] (after the final norm, not projected) of every view of the items in `groups`; `on_item` is
    called once per item read (a progress bar)."""
    indices = [i for group in groups for i in group]
    dim = model.cfg.video.dim
    out = np.zeros((len(indices), views, dim), np.float32)
    ok = np.zeros(len(indices), bool)
    row = {i: r for r, i in enumerate(indices)}
    failures: Counter = Counter()
    examples: list[tuple[int, str]] = []
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(source, indices), batch_size=None, shuffle=False,
                                         num_workers=num_workers)
    group_of = {i: g for g, group in enumerate(groups) for i in group}
    pending: list[tuple[int, torch.Tensor]] = []        # the current group's decoded items

    def flush() -> None:
        if not pending:
            return
        batch = torch.cat([v for _, v in pending]).to(device)
        cls = torch.cat([model.video(chunk)[0][:, 0].float().cpu() for chunk in batch.split(batch_size)])
        at = 0
        for i, v in pending:
            out[row[i]] = cls[at:at + len(v)].numpy()
            ok[row[i]] = True
            at += len(v)
        pending.clear()

    current = None
    for i, v, error_class, message in loader:
        if group_of[i] != current:
            flush()
            current = group_of[i]
        if on_item is not None:
            on_item()
        if v is None:
            failures[error_class] += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append((i, message))
            continue
        pending.append((i, v))
    flush()
    return Embedded(indices, out, ok, failures, examples)


def merge(parts: list[Embedded], n: int, views: int, dim: int) -> Embedded:
    """Parts covering items 0..n-1 (any order) -> one Embedded in item order."""
    cls = np.zeros((n, views, dim), np.float32)
    ok = np.zeros(n, bool)
    failures: Counter = Counter()
    examples: list[tuple[int, str]] = []
    for part in parts:
        cls[part.indices] = part.cls
        ok[part.indices] = part.ok
        failures.update(part.failures)
        examples += part.examples
    examples.sort()
    return Embedded(list(range(n)), cls, ok, failures, examples[:MAX_EXAMPLES])
