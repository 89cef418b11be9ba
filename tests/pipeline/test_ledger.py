"""pipeline.ledger: one outcome per video, shard commits, reconcile with the shards on disk."""
from __future__ import annotations

import json

from pipeline.ledger import Ledger
from pipeline.samples.shards import ShardWriter, read_stats
from tests.pipeline.test_shards import _sample


def test_outcomes_and_counts(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.record_failed("bad", 3, "probe", "not_video", "x.mp4 is not a video", {"probe": 0.5})
        ledger.record_skipped("short", 4, "too_short", "", {"probe": 0.25})
        ledger.commit_shard(0, "shard-000000", 2, 100, [
            {"video_id": "ok", "line": 1, "keys": ["ok_1000", "ok_20000"], "seconds": {"decode": 2.0}}])
        assert ledger.finished_ids() == {"bad", "short", "ok"}
        assert ledger.finished_ids(retry_failed=True) == {"short", "ok"}
        assert ledger.outcome("ok")["keys"] == ["ok_1000", "ok_20000"]
        assert ledger.outcome("ok")["shard"] == "shard-000000"
        assert ledger.outcome("bad")["error_class"] == "not_video"
        counts = ledger.counts()
        assert (counts["written"], counts["skipped"], counts["failed"]) == (1, 1, 1)
        assert (counts["samples"], counts["shards"], counts["bytes"]) == (2, 1, 100)
        assert counts["errors"] == {"not_video": 1} and counts["skip_reasons"] == {"too_short": 1}
        assert counts["stage_seconds"] == {"decode": 2.0, "probe": 0.75}
        assert ledger.next_shard_index() == 1
        # a retried failure that now works replaces its outcome: still one row per video
        ledger.commit_shard(1, "shard-000001", 1, 10, [{"video_id": "bad", "line": 3, "keys": ["bad_0"]}])
        assert ledger.outcome("bad")["status"] == "written" and ledger.outcome("bad")["attempts"] == 2
        assert len(ledger.outcomes()) == 3
    # persisted (WAL) and reopened
    with Ledger(tmp_path / "ledger.sqlite") as again:
        assert again.counts()["written"] == 2


def test_reconcile_imports_a_shard_committed_after_a_crash(tmp_path):
    shards = tmp_path / "shards"
    writer = ShardWriter(shards)
    writer.add(_sample("v1", 1.0))
    writer.add(_sample("v2", 1.0))
    writer.close_shard(extra_stats={"outcomes": {"v1": {"line": 1, "seconds": {"decode": 1.0}},
                                                 "v2": {"line": 2, "seconds": {}}}})
    # crash: the stats file exists, the ledger transaction never ran
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        assert ledger.reconcile(read_stats(shards)) == {"imported": 1, "dropped": 0}
        assert ledger.finished_ids() == {"v1", "v2"}
        assert ledger.outcome("v1")["line"] == 1 and ledger.outcome("v2")["keys"] == ["v2_1000"]
        assert ledger.reconcile(read_stats(shards)) == {"imported": 0, "dropped": 0}
        # the shard's files vanish: its videos are to be redone
        for path in shards.iterdir():
            path.unlink()
        assert ledger.reconcile(read_stats(shards)) == {"imported": 0, "dropped": 1}
        assert ledger.finished_ids() == set() and ledger.next_shard_index() == 0
        assert json.loads(json.dumps(ledger.counts()))["shards"] == 0
