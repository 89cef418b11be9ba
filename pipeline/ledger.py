"""The run ledger: exactly one outcome per input video, in SQLite (WAL) under the output folder.

Outcomes: `written` (sample keys, shard), `skipped` (reason), `failed` (error class, message, stage).
A `written` outcome is committed in the same transaction as the shard that holds the video's samples,
after that shard's stats file exists (pipeline/samples/shards.py); `skipped` and `failed` are committed as soon
as they are known (they add nothing to any shard). So after a crash at any moment:
- every video in a done shard is `written` (or is re-imported from the shard's stats file by
  `reconcile`, when the crash fell between the stats file and the ledger commit);
- every other video is either recorded skipped/failed or has no row, and is redone.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    video_id    TEXT PRIMARY KEY,
    line        INTEGER,
    status      TEXT NOT NULL CHECK (status IN ('written', 'skipped', 'failed')),
    shard       TEXT,
    keys        TEXT,          -- JSON list of sample keys (written)
    samples     INTEGER NOT NULL DEFAULT 0,
    reason      TEXT,          -- skipped
    error_class TEXT,          -- failed
    message     TEXT,
    stage       TEXT,
    seconds     TEXT,          -- JSON {stage: seconds}
    attempts    INTEGER NOT NULL DEFAULT 1,
    updated     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS shards (
    idx     INTEGER PRIMARY KEY,
    name    TEXT NOT NULL,
    samples INTEGER NOT NULL,
    bytes   INTEGER NOT NULL
);
"""


class Ledger:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- reading
    def outcome(self, video_id: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM outcomes WHERE video_id = ?", (video_id,))
        row = cur.fetchone()
        if row is None:
            return None
        record = dict(zip([c[0] for c in cur.description], row))
        record["keys"] = json.loads(record["keys"]) if record["keys"] else []
        record["seconds"] = json.loads(record["seconds"]) if record["seconds"] else {}
        return record

    def outcomes(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT video_id FROM outcomes ORDER BY line, video_id")
        return [self.outcome(vid) for (vid,) in cur.fetchall()]

    def finished_ids(self, retry_failed: bool = False) -> set[str]:
        """Videos that a run does not redo: written and skipped, and failed unless `retry_failed`."""
        statuses = ("written", "skipped") if retry_failed else ("written", "skipped", "failed")
        marks = ",".join("?" * len(statuses))
        cur = self.db.execute(f"SELECT video_id FROM outcomes WHERE status IN ({marks})", statuses)
        return {vid for (vid,) in cur.fetchall()}

    def attempts(self, video_id: str) -> int:
        row = self.db.execute("SELECT attempts FROM outcomes WHERE video_id = ?", (video_id,)).fetchone()
        return int(row[0]) if row else 0

    def shard_indices(self) -> list[int]:
        return [i for (i,) in self.db.execute("SELECT idx FROM shards ORDER BY idx").fetchall()]

    def next_shard_index(self) -> int:
        row = self.db.execute("SELECT MAX(idx) FROM shards").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def counts(self) -> dict[str, Any]:
        """Totals over the whole ledger (every run of this output folder)."""
        by_status = dict(self.db.execute("SELECT status, COUNT(*) FROM outcomes GROUP BY status").fetchall())
        errors = dict(self.db.execute(
            "SELECT error_class, COUNT(*) FROM outcomes WHERE status = 'failed' GROUP BY error_class "
            "ORDER BY COUNT(*) DESC, error_class").fetchall())
        reasons = dict(self.db.execute(
            "SELECT reason, COUNT(*) FROM outcomes WHERE status = 'skipped' GROUP BY reason "
            "ORDER BY COUNT(*) DESC, reason").fetchall())
        samples, nbytes, nshards = self.db.execute(
            "SELECT COALESCE(SUM(samples), 0), COALESCE(SUM(bytes), 0), COUNT(*) FROM shards").fetchone()
        seconds: dict[str, float] = {}
        for (blob,) in self.db.execute("SELECT seconds FROM outcomes WHERE seconds IS NOT NULL"):
            for stage, value in json.loads(blob).items():
                seconds[stage] = seconds.get(stage, 0.0) + float(value)
        return {
            "written": by_status.get("written", 0),
            "skipped": by_status.get("skipped", 0),
            "failed": by_status.get("failed", 0),
            "samples": int(samples),
            "shards": int(nshards),
            "bytes": int(nbytes),
            "errors": errors,
            "skip_reasons": reasons,
            "stage_seconds": {k: round(v, 3) for k, v in sorted(seconds.items())},
        }

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- writing
    def _upsert(self, video_id: str, fields: dict[str, Any]) -> None:
        attempts = self.attempts(video_id) + 1
        fields = dict(fields, video_id=video_id, attempts=attempts, updated=time.time())
        for name in ("keys", "seconds"):
            if name in fields and not isinstance(fields[name], (str, type(None))):
                fields[name] = json.dumps(fields[name])
        columns = ",".join(fields)
        marks = ",".join("?" * len(fields))
        self.db.execute(f"INSERT OR REPLACE INTO outcomes ({columns}) VALUES ({marks})", tuple(fields.values()))

    def record_skipped(self, video_id: str, line: int | None, reason: str, message: str = "",
                       seconds: dict[str, float] | None = None) -> None:
        self._upsert(video_id, {"line": line, "status": "skipped", "reason": reason, "message": message,
                                "seconds": seconds or {}, "samples": 0})

    def record_failed(self, video_id: str, line: int | None, stage: str, error_class: str, message: str,
                      seconds: dict[str, float] | None = None) -> None:
        self._upsert(video_id, {"line": line, "status": "failed", "stage": stage, "error_class": error_class,
                                "message": message[:2000], "seconds": seconds or {}, "samples": 0})

    def commit_shard(self, index: int, name: str, samples: int, nbytes: int,
                     videos: Iterable[dict[str, Any]]) -> None:
        """One transaction: the shard row and a `written` outcome for each of its videos.

        `videos`: dicts with video_id, line, keys, seconds.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("INSERT OR REPLACE INTO shards (idx, name, samples, bytes) VALUES (?, ?, ?, ?)",
                            (index, name, samples, nbytes))
            for video in videos:
                self._upsert(video["video_id"], {
                    "line": video.get("line"), "status": "written", "shard": name, "keys": video["keys"],
                    "samples": len(video["keys"]), "seconds": video.get("seconds") or {}})
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def reconcile(self, stats_by_index: dict[int, dict[str, Any]]) -> dict[str, int]:
        """Make the ledger agree with the done shards on disk (`shards.read_stats`).

        - a done shard missing from the ledger (crash after its stats file, before the ledger commit)
          is imported from its stats file;
        - a ledger shard without its files on disk is dropped, and its videos are redone.
        """
        imported = dropped = 0
        known = set(self.shard_indices())
        for index, stats in sorted(stats_by_index.items()):
            if index in known:
                continue
            outcomes = stats.get("outcomes") or {}
            videos = [{"video_id": vid, "keys": keys, "line": (outcomes.get(vid) or {}).get("line"),
                       "seconds": (outcomes.get(vid) or {}).get("seconds")}
                      for vid, keys in (stats.get("videos") or {}).items()]
            self.commit_shard(index, stats["shard"], int(stats["samples"]), int(stats["bytes"]), videos)
            imported += 1
        for index in known - set(stats_by_index):
            name = self.db.execute("SELECT name FROM shards WHERE idx = ?", (index,)).fetchone()[0]
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM outcomes WHERE status = 'written' AND shard = ?", (name,))
            self.db.execute("DELETE FROM shards WHERE idx = ?", (index,))
            self.db.execute("COMMIT")
            dropped += 1
        return {"imported": imported, "dropped": dropped}
