"""Blocklists (ARCHITECTURE.md, "Blocklist"): one sample key or video id per line, `#` starts a comment.

`write_blocklist` writes one entry per line with the reason as a trailing comment (to a local path or an
fsspec URL, atomically: common.storage); `read_blocklist` parses the same way the training loader does;
`rewrite_shards` copies shards (local or URLs) without the blocked samples into a folder or URL (members
byte for byte; sidecar parquet and stats file through `pipeline.samples.shards.ShardWriter`, stats last,
so a rewritten shard is done only when complete).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

from common import storage

SAFE_ENTRY = re.compile(r"^[^\s#]+$")


def write_blocklist(path: str | Path, entries: dict[str, str], header: Iterable[str] = ()) -> int:
    """entries: blocked key or video id -> reason. Sorted output (a rerun writes the same bytes)."""
    lines = [f"# {line}" for line in header]
    for entry in sorted(entries):
        if not SAFE_ENTRY.match(entry):
            raise ValueError(f"blocklist entry {entry!r} has whitespace or '#': block its sample keys instead")
        reason = entries[entry].replace("\n", " ")
        lines.append(f"{entry}  # {reason}" if reason else entry)
    storage.write_bytes(path, ("\n".join(lines) + "\n").encode())  # local temp+rename, or one PUT
    return len(entries)


def read_blocklist(paths: Iterable[str | Path]) -> set[str]:
    """Entries of blocklist files, local paths or fsspec URLs."""
    blocked: set[str] = set()
    for path in paths:
        for line in storage.read_bytes(path).decode("utf-8", errors="replace").splitlines():
            entry = line.split("#", 1)[0].strip()
            if entry:
                blocked.add(entry)
    return blocked


def rewrite_shards(shards: list[str], blocked: set[str], out_dir: str | Path) -> dict:
    """Write `out_dir/shard-NNNNNN.tar` (+ parquet, stats) holding every sample not blocked by key or video id;
    `out_dir` a local folder or an fsspec URL."""
    from common.shard_io import tar_samples
    from pipeline.samples.shards import ShardSample, ShardWriter

    writer = ShardWriter(str(out_dir))  # a local folder or a URL (each piece atomic, stats last)
    counts = Counter()
    for shard in shards:  # local paths or fsspec URLs
        for record in tar_samples([shard]):
            members = {k: v for k, v in record.items() if not k.startswith("__")}
            info = {}
            if "json" in members:
                try:
                    info = json.loads(members["json"])
                except ValueError:
                    info = {}
            key = record["__key__"]
            video_id = str(info.get("video_id") or key.rsplit("_", 1)[0])
            if key in blocked or info.get("key") in blocked or video_id in blocked:
                counts["blocked"] += 1
                continue
            span = info.get("span") or {}
            n_words = sum(len(w.get("words") or []) for w in info.get("windows") or [] if isinstance(w, dict))
            writer.add(ShardSample(key=key, video_id=video_id, members=members,
                                   span_start=float(span.get("start", 0.0)), span_end=float(span.get("end", 0.0)),
                                   n_words=n_words))
            counts["kept"] += 1
        writer.close_shard({"rewritten_from": shard})
    return {"kept": counts["kept"], "blocked": counts["blocked"], "out_dir": str(out_dir)}
