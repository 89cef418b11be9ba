"""decisions.json: a person's verdict per review row (leak / not a leak / unsure), and the blocklist made from it.

The file lives beside report.html in the leakage job's output folder:

    {"format": "tvts-leakage-decisions/1", "report_id": "<16 hex>", "report": {identity}, "saved_at": "...",
     "decisions": [{"corpus_video_id", "downstream_dataset", "downstream_video_id",
                    "decision": "leak" | "not_leak" | "unsure", "decided_at", "similarity", "corpus_keys"}]}

A decision is about a (corpus video, downstream dataset, downstream video) pair (dedup/rows.py), not about a
sample or a threshold, so it survives a rerun of the job: a rerun keeps every decision, shows the rows it
still flags with theirs and new rows as undecided. `report_id` is a hash of what the pairs are made of (the
feature model's fingerprint, the corpus shards, the downstream sets: `report_identity`), not of the
threshold or frames_per_sample, which only change which pairs are flagged. A file that belongs to another
report id, or that cannot be read, is never overwritten: it is moved aside (`decisions-<its id>.json`, put
back when that report is back; `decisions.unreadable-<time>.json`) and this report starts undecided.

Blocklist (`blocklist_entries`): pairs decided as leaks (also those the current run no longer flags: a
person saw the frames, a threshold change does not undo a copy), plus the undecided and unsure rows over the
threshold when `output.blocklist_undecided` is true (the default: an unattended run blocks everything it
flags). The format is the one the training loader reads (ARCHITECTURE.md, "Blocklist").
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import storage
from dedup.blocklist import SAFE_ENTRY, write_blocklist
from dedup.rows import pair_key

FORMAT = "tvts-leakage-decisions/1"
FILE = "decisions.json"
VALUES = {"leak": "leak", "not_leak": "not a leak", "unsure": "unsure"}
KEY_FIELDS = ("corpus_video_id", "downstream_dataset", "downstream_video_id")


class DecisionsError(ValueError):
    """A decisions payload or file that cannot be used (one line)."""


def report_identity(summary: dict) -> dict:
    """What a report's pairs are made of, from its summary.json (so old reports have one too)."""
    return {"model": summary.get("model", ""),
            "corpus": (summary.get("corpus") or {}).get("shards_pattern", ""),
            "downstream": sorted(f"{name}:{d.get('format', '')}" for name, d in (summary.get("datasets") or {}).items())}


def report_id(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Decisions:
    report_id: str
    identity: dict
    entries: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what loading did (a file kept aside, one put back)

    def state(self, key: tuple[str, str, str]) -> str:
        entry = self.entries.get(key)
        return entry["decision"] if entry else "undecided"

    def to_json(self) -> dict:
        return {"format": FORMAT, "report_id": self.report_id, "report": self.identity, "saved_at": now(),
                "decisions": [self.entries[k] for k in sorted(self.entries)]}


def _entry(raw: Any, where: str) -> dict:
    if not isinstance(raw, dict):
        raise DecisionsError(f"{where}: a decision must be an object, got {type(raw).__name__}")
    for name in KEY_FIELDS:
        if not isinstance(raw.get(name), str) or not raw[name]:
            raise DecisionsError(f"{where}: decision without a {name!r} string")
    if raw.get("decision") not in VALUES:
        raise DecisionsError(f"{where}: decision {raw.get('decision')!r} is not one of {sorted(VALUES)}")
    keys = raw.get("corpus_keys") or []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise DecisionsError(f"{where}: corpus_keys must be a list of sample keys")
    sim = raw.get("similarity")
    return {**{n: raw[n] for n in KEY_FIELDS}, "decision": raw["decision"], "decided_at": str(raw.get("decided_at") or ""),
            "similarity": float(sim) if isinstance(sim, (int, float)) else None, "corpus_keys": list(keys)}


def parse(data: bytes, where: str) -> dict:
    """A decisions file's content, checked whole: any bad part makes the file uninterpretable (kept aside)."""
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise DecisionsError(f"{where} is not JSON ({exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise DecisionsError(f"{where} is not a decisions file (format {FORMAT!r} expected)")
    if not isinstance(obj.get("report_id"), str) or not isinstance(obj.get("decisions"), list):
        raise DecisionsError(f"{where} has no report_id string or decisions list")
    entries, cleared = {}, set()
    for i, raw in enumerate(obj["decisions"]):
        if isinstance(raw, dict) and raw.get("decision") is None and all(isinstance(raw.get(n), str) for n in KEY_FIELDS):
            cleared.add(pair_key(raw))  # a page's download lists its undecided rows too (decision null)
            continue
        entry = _entry(raw, f"{where} decision {i}")
        entries[pair_key(entry)] = entry
    return {"report_id": obj["report_id"], "report": obj.get("report") or {}, "entries": entries,
            "cleared": cleared - set(entries)}


def _move(src: str, dest: str) -> None:
    """Rename when local (atomic); on an object store copy then delete (the copy first: nothing is lost)."""
    if storage.is_local(src):
        storage.local_path(src).replace(storage.local_path(dest))
        return
    storage.write_bytes(dest, storage.read_bytes(src))
    storage.remove(src)


def _free_name(report_dir: str | Path, name: str) -> str:
    path = storage.join(report_dir, name)
    if not storage.exists(path):
        return path
    stem = name[: -len(".json")]
    return storage.join(report_dir, f"{stem}.{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json")


def load(report_dir: str | Path, rid: str, identity: dict) -> Decisions:
    """This report's decisions (none yet: empty). Files of another report or unreadable ones are kept aside."""
    out = Decisions(report_id=rid, identity=identity)
    path = storage.join(report_dir, FILE)
    if not storage.exists(path):
        parked = storage.join(report_dir, f"decisions-{rid}.json")
        if not storage.exists(parked):
            return out
        _move(parked, path)  # this report was set aside by a run of another one; it is back
        out.notes.append(f"decisions of this report put back from decisions-{rid}.json")
    try:
        parsed = parse(storage.read_bytes(path), FILE)
    except DecisionsError as exc:
        aside = _free_name(report_dir, f"decisions.unreadable-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json")
        _move(path, aside)
        out.notes.append(f"{exc}: kept as {aside.rsplit('/', 1)[-1]}, this report starts undecided")
        return out
    if parsed["report_id"] != rid:
        aside = _free_name(report_dir, f"decisions-{parsed['report_id']}.json")
        _move(path, aside)
        other = parsed["report"]
        out.notes.append(f"decisions.json belongs to another report ({parsed['report_id']}: model "
                         f"{other.get('model', '?')}, corpus {other.get('corpus', '?')}, not {identity.get('model')}, "
                         f"{identity.get('corpus')}): kept as {aside.rsplit('/', 1)[-1]} (put back when that report is "
                         f"back), this report starts undecided")
        return out
    out.entries = parsed["entries"]
    return out


def save(report_dir: str | Path, decisions: Decisions) -> str:
    """Write decisions.json whole: a temp file renamed over it (local), or one PUT (object store)."""
    path = storage.join(report_dir, FILE)
    storage.write_bytes(path, (json.dumps(decisions.to_json(), indent=2) + "\n").encode())
    return path


def apply(decisions: Decisions, posted: list[Any], rows: list[dict]) -> int:
    """Fold a page's decisions in (decision null: back to undecided); pairs not posted keep theirs.
    Each kept entry records the row's best similarity and sample keys (so a sample blocklist can name them
    after the pair stops being flagged). Returns how many entries changed."""
    if not isinstance(posted, list):
        raise DecisionsError("decisions must be a list")
    by_key = {tuple(r["key"]): r for r in rows}
    changed = 0
    for i, raw in enumerate(posted):
        if isinstance(raw, dict) and raw.get("decision") in (None, "", "undecided"):
            key = tuple(str(raw.get(n, "")) for n in KEY_FIELDS)
            changed += decisions.entries.pop(key, None) is not None
            continue
        entry = _entry(raw, f"decision {i}")
        key = pair_key(entry)
        before = decisions.entries.get(key)
        if before and before["decision"] == entry["decision"]:
            continue
        row = by_key.get(key)
        if row is not None:
            entry["similarity"] = row["similarity"]
            entry["corpus_keys"] = [s["key"] for s in row["samples"]]
        entry["decided_at"] = entry["decided_at"] or now()
        decisions.entries[key] = entry
        changed += 1
    return changed


def _targets(corpus_video_id: str, keys: list[str], unit: str) -> list[str]:
    if unit == "video" and SAFE_ENTRY.match(corpus_video_id or ""):
        return [corpus_video_id]
    return [k for k in keys if SAFE_ENTRY.match(k)]  # a video id with spaces or '#': its sample keys instead


def blocklist_entries(rows: list[dict], decisions: Decisions, unit: str, block_undecided: bool) -> tuple[dict, dict]:
    """(entry -> reason, counts): what blocklist.txt holds, and how many rows of each state there are."""
    counts = {"leak": 0, "not_leak": 0, "unsure": 0, "undecided": 0, "leak_not_flagged": 0,
              "blocked_leak": 0, "blocked_undecided": 0}
    entries: dict[str, str] = {}
    flagged = set()
    for row in rows:
        key = tuple(row["key"])
        flagged.add(key)
        state = decisions.state(key)
        counts[state] += 1
        if state == "leak" or (block_undecided and state in ("undecided", "unsure")):
            counts["blocked_leak" if state == "leak" else "blocked_undecided"] += 1
            sim = "" if row["similarity"] is None else f" {row['similarity']:.3f}"
            reason = f"{'leak (decided)' if state == 'leak' else state} {row['kind']}{sim} {key[1]}/{key[2]}"
            for target in _targets(key[0], [s["key"] for s in row["samples"]], unit):
                entries.setdefault(target, reason)
    for key, entry in sorted(decisions.entries.items()):
        if key in flagged or entry["decision"] != "leak":
            continue
        counts["leak_not_flagged"] += 1
        for target in _targets(key[0], entry["corpus_keys"], unit):
            entries.setdefault(target, f"leak (decided; not flagged in this run) {key[1]}/{key[2]}")
    counts["entries"] = len(entries)
    return entries, counts


def blocklist_header(summary: dict, rows: list[dict], counts: dict, block_undecided: bool) -> list[str]:
    n_pairs = sum(len(r["samples"]) for r in rows)
    undecided = counts["undecided"] + counts["unsure"]
    lines = [f"leakage check: {len(rows)} video pairs flagged ({n_pairs} sample pairs), threshold "
             f"{summary.get('threshold')}, model {summary.get('model')}",
             f"decisions (decisions.json): {counts['leak']} leak, {counts['not_leak']} not a leak, "
             f"{counts['unsure']} unsure, {counts['undecided']} undecided"
             + (f"; {counts['leak_not_flagged']} decided leaks no longer flagged" if counts["leak_not_flagged"] else "")]
    blocked = f"blocked: decided leaks {counts['blocked_leak'] + counts['leak_not_flagged']}"
    if block_undecided:
        blocked += f" + undecided or unsure over the threshold {counts['blocked_undecided']} (output.blocklist_undecided: true)"
    else:
        blocked += f"; undecided or unsure, not blocked {undecided} (output.blocklist_undecided: false)"
    lines.append(f"{blocked} -> {counts['entries']} entries")
    lines.append("one sample key or video id per line; the training loader skips them (data.blocklist)")
    return lines


def write(report_dir: str | Path, summary: dict, rows: list[dict], decisions: Decisions, unit: str,
          block_undecided: bool) -> tuple[dict, dict]:
    """blocklist.txt from the decisions (atomic); returns (entries, counts)."""
    entries, counts = blocklist_entries(rows, decisions, unit, block_undecided)
    write_blocklist(storage.join(report_dir, "blocklist.txt"), entries,
                    blocklist_header(summary, rows, counts, block_undecided))
    return entries, counts
