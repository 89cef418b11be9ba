"""pipeline.ledger: one outcome per video, one transaction per piece, rebuilt from the pieces' stats files."""
from __future__ import annotations

from pipeline.ledger import Ledger
from pipeline.samples.shards import ShardWriter, done_pieces, read_stats
from tests.pipeline.test_shards import _sample


def _stats(name, shard, attempt, outcomes, samples=0, nbytes=0):
    return {"shard": name, "input_shard": shard, "attempt": attempt, "rows_digest": f"d{shard}-{attempt}",
            "samples": samples, "bytes": nbytes, "outcomes": outcomes}


def test_outcomes_and_counts(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        assert ledger.record_failed_rows([{"video_id": "line-9", "line": 9, "stage": "manifest",
                                           "error_class": "manifest_row", "message": "bad json"}]) == 1
        ledger.commit_piece(_stats("shard-000000", 0, 0, {
            "ok": {"status": "written", "line": 1, "keys": ["ok_1000", "ok_20000"], "seconds": {"decode": 2.0}},
            "bad": {"status": "failed", "line": 3, "stage": "probe", "error_class": "not_video",
                    "message": "x.mp4 is not a video", "seconds": {"probe": 0.5}},
            "short": {"status": "skipped", "line": 4, "reason": "too_short", "seconds": {"probe": 0.25}}},
            samples=2, nbytes=100))
        assert ledger.outcome("ok")["keys"] == ["ok_1000", "ok_20000"]
        assert ledger.outcome("ok")["shard"] == "shard-000000" and ledger.outcome("ok")["input_shard"] == 0
        assert ledger.outcome("bad")["error_class"] == "not_video"
        assert ledger.failed_rows() == {0: {"bad"}} and ledger.rows_per_shard() == {0: 3}
        counts = ledger.counts()
        assert (counts["written"], counts["skipped"], counts["failed"]) == (1, 1, 2)
        assert (counts["samples"], counts["shards"], counts["bytes"]) == (2, 1, 100)
        assert counts["errors"] == {"manifest_row": 1, "not_video": 1} and counts["skip_reasons"] == {"too_short": 1}
        assert counts["stage_seconds"] == {"decode": 2.0, "probe": 0.75}
        # a retry piece that now works replaces the outcome: still one row per video
        ledger.commit_piece(_stats("shard-000000_r1", 0, 1, {"bad": {"status": "written", "line": 3,
                                                                      "keys": ["bad_0"]}}, samples=1, nbytes=10))
        assert ledger.outcome("bad")["status"] == "written" and ledger.outcome("bad")["attempts"] == 2
        assert len(ledger.outcomes()) == 4 and ledger.latest_attempts() == {0: 1}
        assert ledger.base_digests() == {0: "d0-0"}
        assert ledger.record_failed_rows([{"video_id": "line-9", "line": 9, "stage": "manifest",
                                           "error_class": "manifest_row", "message": "again"}]) == 0
    # persisted (WAL) and reopened
    with Ledger(tmp_path / "ledger.sqlite") as again:
        assert again.counts()["written"] == 2 and again.counts()["shards"] == 2


def test_reconcile_rebuilds_from_the_stats_files(tmp_path):
    shards = tmp_path / "shards"
    writer = ShardWriter(shards, name="shard-000000")
    writer.add(_sample("v1", 1.0))
    writer.add(_sample("v2", 1.0))
    writer.close_shard(extra_stats=_stats("shard-000000", 0, 0, {
        "v1": {"status": "written", "line": 1, "keys": ["v1_1000"], "seconds": {"decode": 1.0}},
        "v2": {"status": "written", "line": 2, "keys": ["v2_1000"]},
        "v3": {"status": "failed", "line": 3, "stage": "fetch", "error_class": "not_found", "message": "gone"}}))
    writer = ShardWriter(shards, name="shard-000000_r1")
    writer.add(_sample("v3", 1.0))
    writer.close_shard(extra_stats=_stats("shard-000000_r1", 0, 1, {
        "v3": {"status": "written", "line": 3, "keys": ["v3_1000"]}}))
    # crash: the stats files exist, the ledger transactions never ran
    load = lambda names: read_stats(shards, names)  # noqa: E731
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        assert ledger.reconcile(done_pieces(shards), load) == {"imported": 2, "dropped": 0}
        assert ledger.outcome("v1")["line"] == 1 and ledger.outcome("v2")["keys"] == ["v2_1000"]
        assert ledger.outcome("v3")["status"] == "written"   # the later attempt wins
        assert ledger.reconcile(done_pieces(shards), load) == {"imported": 0, "dropped": 0}
        # the retry piece's files vanish: its row has no outcome any more (the driver redoes it)
        for path in shards.glob("shard-000000_r1*"):
            path.unlink()
        assert ledger.reconcile(done_pieces(shards), load) == {"imported": 0, "dropped": 1}
        assert ledger.outcome("v3") is None and ledger.rows_per_shard() == {0: 2}

