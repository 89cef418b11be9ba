"""The run ledger: exactly one outcome per input video, in SQLite (WAL) in the run's local state folder.

Outcomes: `written` (sample keys, piece), `skipped` (reason), `failed` (error class, message, stage).
The durable record is the output itself: every piece's stats file (pipeline/samples/shards.py) lists the
outcome of each of its input rows, and is written by the worker last. The ledger is the driver's index
of those stats files (plus the manifest's malformed rows, which the driver finds itself every run):
- `commit_piece` records a piece and the outcomes of its rows in one transaction (one per input shard,
  not one per row: the driver keeps up with thousands of rows a second);
- `reconcile` makes it agree with the done pieces in the output after any crash: a piece whose stats
  file exists but is not in the ledger is imported, a piece of the ledger whose files are gone is
  dropped (its rows are redone). So the ledger may even be lost (a new machine for a job on S3): the next
  run rebuilds it from the stats files.
A later attempt at a row (a retry piece, `--retry-failed`) replaces its outcome; `attempts` counts them.
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
    input_shard INTEGER,       -- NULL: a malformed manifest row (in no input shard)
    shard       TEXT,          -- the piece that recorded this outcome
    keys        TEXT,          -- JSON list of sample keys (written)
    samples     INTEGER NOT NULL DEFAULT 0,
    reason      TEXT,          -- skipped
    error_class TEXT,          -- failed
    message     TEXT,
    stage       TEXT,
    seconds     TEXT,          -- JSON {stage: seconds}
    fingerprint TEXT,          -- the row's fields and file facts when it was done (pipeline.driver)
    attempts    INTEGER NOT NULL DEFAULT 1,
    updated     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_by_shard ON outcomes (input_shard, status);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pieces (
    name        TEXT PRIMARY KEY,
    input_shard INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    rows_digest TEXT NOT NULL,  -- sha256 of the input shard's video ids (attempt 0) / of the retried ids
    rows        INTEGER NOT NULL,
    samples     INTEGER NOT NULL,
    bytes       INTEGER NOT NULL
);
"""

_UPSERT = """
INSERT INTO outcomes (video_id, line, status, input_shard, shard, keys, samples, reason, error_class, message,
                      stage, seconds, fingerprint, attempts, updated)
VALUES (:video_id, :line, :status, :input_shard, :shard, :keys, :samples, :reason, :error_class, :message,
        :stage, :seconds, :fingerprint, 1, :updated)
ON CONFLICT (video_id) DO UPDATE SET
    line = excluded.line, status = excluded.status, input_shard = excluded.input_shard, shard = excluded.shard,
    keys = excluded.keys, samples = excluded.samples, reason = excluded.reason, error_class = excluded.error_class,
    message = excluded.message, stage = excluded.stage, seconds = excluded.seconds, fingerprint = excluded.fingerprint,
    attempts = outcomes.attempts + 1, updated = excluded.updated
"""

_FIELDS = ("line", "status", "input_shard", "shard", "keys", "samples", "reason", "error_class", "message", "stage",
           "seconds", "fingerprint")


def outcome_row(video_id: str, outcome: dict[str, Any], *, input_shard: int | None, shard: str | None,
                now: float) -> dict[str, Any]:
    """An outcome as the stats files hold it -> the ledger's row."""
    keys = outcome.get("keys") or []
    return {"video_id": video_id, "line": outcome.get("line"), "status": outcome["status"],
            "input_shard": input_shard, "shard": shard, "keys": json.dumps(keys) if keys else None,
            "samples": len(keys), "reason": outcome.get("reason"), "error_class": outcome.get("error_class"),
            "message": (outcome.get("message") or "")[:2000], "stage": outcome.get("stage"),
            "seconds": json.dumps(outcome.get("seconds") or {}), "fingerprint": outcome.get("fingerprint"),
            "updated": now}


class Ledger:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash loses at most the last commits,
        self.db.executescript(SCHEMA)                 # which reconcile re-imports from the stats files
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(outcomes)")}
        if "fingerprint" not in columns:              # a ledger of an earlier version
            self.db.execute("ALTER TABLE outcomes ADD COLUMN fingerprint TEXT")

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
        return None if row is None else self._record(cur.description, row)

    @staticmethod
    def _record(description: Any, row: tuple) -> dict[str, Any]:
        record = dict(zip([c[0] for c in description], row))
        record["keys"] = json.loads(record["keys"]) if record["keys"] else []
        record["seconds"] = json.loads(record["seconds"]) if record["seconds"] else {}
        return record

    def outcomes(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM outcomes ORDER BY line, video_id")
        return [self._record(cur.description, row) for row in cur.fetchall()]

    def attempts(self, video_id: str) -> int:
        row = self.db.execute("SELECT attempts FROM outcomes WHERE video_id = ?", (video_id,)).fetchone()
        return int(row[0]) if row else 0

    def pieces(self) -> dict[str, dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM pieces ORDER BY input_shard, attempt")
        names = [c[0] for c in cur.description]
        return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}

    def base_digests(self) -> dict[int, str]:
        """Input shard -> rows digest of its done attempt-0 piece."""
        return dict(self.db.execute("SELECT input_shard, rows_digest FROM pieces WHERE attempt = 0"))

    def latest_attempts(self) -> dict[int, int]:
        return dict(self.db.execute("SELECT input_shard, MAX(attempt) FROM pieces GROUP BY input_shard"))

    def rows_per_shard(self) -> dict[int, int]:
        return dict(self.db.execute("SELECT input_shard, COUNT(*) FROM outcomes WHERE input_shard IS NOT NULL "
                                    "GROUP BY input_shard"))

    def recorded_ids_of(self, input_shard: int) -> set[str]:
        return {v for (v,) in self.db.execute("SELECT video_id FROM outcomes WHERE input_shard = ?", (input_shard,))}

    def fingerprints_of(self, input_shard: int) -> dict[str, str]:
        return dict(self.db.execute("SELECT video_id, fingerprint FROM outcomes WHERE input_shard = ?",
                                    (input_shard,)))

    def failed_rows(self) -> dict[int, set[str]]:
        """Input shard -> its rows whose outcome is failed."""
        out: dict[int, set[str]] = {}
        for shard, vid in self.db.execute(
                "SELECT input_shard, video_id FROM outcomes WHERE status = 'failed' AND input_shard IS NOT NULL"):
            out.setdefault(int(shard), set()).add(vid)
        return out

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
            "SELECT COALESCE(SUM(samples), 0), COALESCE(SUM(bytes), 0), COALESCE(SUM(samples > 0), 0) "
            "FROM pieces").fetchone()
        seconds: dict[str, float] = {}
        for (blob,) in self.db.execute("SELECT seconds FROM outcomes WHERE seconds IS NOT NULL AND seconds != '{}'"):
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

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- writing
    def record_failed_rows(self, rows: Iterable[dict[str, Any]]) -> int:
        """Malformed manifest rows (in no input shard): dicts with video_id, line, stage, error_class, message.
        One transaction for all of them; a row already recorded is left as it is."""
        now = time.time()
        batch = [outcome_row(r["video_id"], dict(r, status="failed"), input_shard=None, shard=None, now=now)
                 for r in rows]
        if not batch:
            return 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = self.db.executemany(
                f"INSERT OR IGNORE INTO outcomes (video_id, {', '.join(_FIELDS)}, attempts, updated) VALUES "
                f"(:video_id, {', '.join(':' + f for f in _FIELDS)}, 1, :updated)", batch)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return cur.rowcount

    def commit_piece(self, stats: dict[str, Any]) -> None:
        """One transaction: the piece and the outcome of each of its rows (`stats`: its stats file)."""
        now = time.time()
        name, shard = stats["shard"], int(stats["input_shard"])
        rows = [outcome_row(vid, outcome, input_shard=shard, shard=name, now=now)
                for vid, outcome in (stats.get("outcomes") or {}).items()]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("INSERT OR REPLACE INTO pieces (name, input_shard, attempt, rows_digest, rows, samples, "
                            "bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (name, shard, int(stats["attempt"]), stats["rows_digest"], len(rows),
                             int(stats["samples"]), int(stats["bytes"])))
            self.db.executemany(_UPSERT, rows)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def forget_shard(self, input_shard: int) -> list[str]:
        """Drop an input shard's pieces and row outcomes (its rows changed: it is redone from scratch)."""
        names = [n for (n,) in self.db.execute("SELECT name FROM pieces WHERE input_shard = ?", (input_shard,))]
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM outcomes WHERE input_shard = ?", (input_shard,))
        self.db.execute("DELETE FROM pieces WHERE input_shard = ?", (input_shard,))
        self.db.execute("COMMIT")
        return names

    def reconcile(self, done: list[str], load_stats) -> dict[str, int]:
        """Make the ledger agree with the done pieces of the output.

        `done`: the names of the pieces whose stats file exists, in (input shard, attempt) order;
        `load_stats(names) -> {name: stats}` reads the stats files of the pieces the ledger lacks (only
        those: a resumed job on S3 does not re-read every stats file).
        - a done piece missing from the ledger (the crash fell after its stats file, or the ledger is new)
          is imported, in attempt order, so the latest attempt's outcome wins;
        - a ledger piece whose stats file is gone is dropped with the outcomes it recorded (redone).
        """
        known = self.pieces()
        missing = [n for n in done if n not in known]
        imported = 0
        for name, stats in load_stats(missing).items():
            if "input_shard" in stats and "rows_digest" in stats:
                self.commit_piece(stats)
                imported += 1
        dropped = 0
        for name in set(known) - set(done):
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM outcomes WHERE shard = ?", (name,))
            self.db.execute("DELETE FROM pieces WHERE name = ?", (name,))
            self.db.execute("COMMIT")
            dropped += 1
        return {"imported": imported, "dropped": dropped}
