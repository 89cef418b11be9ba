"""pipeline.samples.shards: safe keys, atomic commit order, cleanup of incomplete shards, readable by webdataset/tar."""
from __future__ import annotations

import json
import re
import tarfile

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from pipeline.ids import sample_key
from pipeline.samples.shards import (
    ShardSample,
    ShardWriter,
    clean_incomplete,
    done_pieces,
    list_shards,
    parse_piece,
    piece_name,
    read_stats,
)

SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def _sample(video_id: str, start: float, n_frames: int = 3) -> ShardSample:
    key = sample_key(video_id, start)
    members = {f"{i:03d}.jpg": bytes([i]) * 10 for i in range(n_frames)}
    members["json"] = json.dumps({"key": key, "video_id": video_id}).encode()
    return ShardSample(key=key, video_id=video_id, members=members, span_start=start, span_end=start + 15,
                       n_words=7)


@pytest.mark.parametrize("video_id", ["abc", "-rf", "../../etc/passwd", "a b;$(touch x)|`y`", "vidéo 東京",
                                      "x" * 300, "a.b.c", ""])
def test_keys_are_safe(video_id):
    key = sample_key(video_id, 12.3456)
    assert SAFE.match(key) and key.endswith("_12346")
    assert "." not in key and "/" not in key


def test_distinct_ids_give_distinct_keys():
    ids = ["a b", "a_b", "a/b", "a..b", "A B"]
    assert len({sample_key(v, 1.0) for v in ids}) == len(ids)


def test_commit_order_and_readback(tmp_path):
    writer = ShardWriter(tmp_path, next_index=3)
    writer.add(_sample("v1", 1.0))
    writer.add(_sample("v1", 20.0))
    assert (tmp_path / ".shard-000003.tar.tmp").exists() and not (tmp_path / "shard-000003.tar").exists()
    assert read_stats(tmp_path) == {}
    committed = writer.close_shard(extra_stats={"outcomes": {"v1": {"line": 1}}})
    assert committed.name == "shard-000003" and committed.samples == 2
    assert committed.videos == {"v1": ["v1_1000", "v1_20000"]}
    stats = read_stats(tmp_path)["shard-000003"]
    assert stats["samples"] == 2 and stats["outcomes"] == {"v1": {"line": 1}}
    tar_path = tmp_path / "shard-000003.tar"
    # the temp file is gone; plain tar and webdataset both read the shard
    assert not list(tmp_path.glob(".*tmp"))
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
    assert names[:4] == ["v1_1000.000.jpg", "v1_1000.001.jpg", "v1_1000.002.jpg", "v1_1000.json"]
    samples = list(wds.WebDataset(str(tar_path), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["v1_1000", "v1_20000"]
    assert json.loads(samples[0]["json"])["video_id"] == "v1"
    table = pq.read_table(tmp_path / "shard-000003.parquet")
    assert table.column("key").to_pylist() == ["v1_1000", "v1_20000"]
    assert table.column("n_words").to_pylist() == [7, 7]
    assert list_shards(tmp_path) == [str(tar_path)]
    assert writer.next_index == 4 and writer.close_shard() is None


def test_duplicate_key_in_a_shard_is_refused(tmp_path):
    writer = ShardWriter(tmp_path)
    writer.add(_sample("v", 1.0))
    with pytest.raises(ValueError):
        writer.add(_sample("v", 1.0))


def test_same_input_gives_byte_identical_shards(tmp_path):
    digests = []
    for run in ("a", "b"):
        writer = ShardWriter(tmp_path / run)
        for start in (1.0, 2.0, 3.0):
            writer.add(_sample("v", start))
        writer.close_shard()
        digests.append((tmp_path / run / "shard-000000.tar").read_bytes())
    assert digests[0] == digests[1]


def test_clean_incomplete(tmp_path):
    writer = ShardWriter(tmp_path)
    writer.add(_sample("done", 1.0))
    writer.close_shard()
    writer.add(_sample("open", 1.0))  # a run killed here leaves the temp file
    (tmp_path / "shard-000001.tar").write_bytes(b"half")  # a tar whose parquet/stats never came
    (tmp_path / "shard-000001.parquet").write_bytes(b"half")
    (tmp_path / "shard-000002_stats.json").write_text("{not json")  # unreadable stats: not done
    removed = clean_incomplete(tmp_path)
    assert set(removed) == {".shard-000001.tar.tmp", "shard-000001.tar", "shard-000001.parquet",
                            "shard-000002_stats.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.parquet", "shard-000000.tar",
                                                          "shard-000000_stats.json"]
    # a done shard whose tar was deleted by hand is not done any more
    (tmp_path / "shard-000000.tar").unlink()
    clean_incomplete(tmp_path)
    assert read_stats(tmp_path) == {}


def test_pieces_of_an_input_shard(tmp_path):
    """A worker's piece: named after its input shard and attempt; a piece of only failures is done too."""
    assert piece_name(7) == "shard-000007" and piece_name(7, 2) == "shard-000007_r2"
    assert parse_piece("shard-000007_r2_stats.json") == (7, 2) and parse_piece("shard-000007") == (7, 0)
    assert parse_piece("other.tar") is None
    writer = ShardWriter(tmp_path, name=piece_name(7, 2))
    writer.add(_sample("v", 1.0))
    assert writer.close_shard().name == "shard-000007_r2"
    empty = ShardWriter(tmp_path, name=piece_name(3))
    empty.add_video("failed-one")
    assert empty.close_shard() is None                     # nothing to write...
    empty = ShardWriter(tmp_path, name=piece_name(3))
    assert empty.close_shard(allow_empty=True, extra_stats={"outcomes": {}}).samples == 0  # ...unless asked
    assert done_pieces(tmp_path) == ["shard-000003", "shard-000007_r2"]
    assert not (tmp_path / "shard-000003.tar").exists()
    assert list_shards(tmp_path) == [str(tmp_path / "shard-000007_r2.tar")]   # only pieces with samples
    assert clean_incomplete(tmp_path) == []
