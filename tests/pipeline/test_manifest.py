"""pipeline.sources.manifest: every format, malformed rows, duplicates, safe ids, relative paths."""
from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ids import safe_file_stem, safe_key_part
from pipeline.sources.manifest import DedupeStats, convert, dedupe_rows, main, read_manifest
from pipeline.sources.rows import ManifestError, ManifestFormatError, ManifestRow

NASTY_IDS = ["-rf", "../../etc/passwd", "a b;rm -rf /", "vidéo", "$(id)", "`id`", "x|y&z>w", "..", ".", "-",
             "tab\there", "new\nline", "名字", "a" * 300]
SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def rows_only(items):
    return [i for i in items if isinstance(i, ManifestRow)]


def errors_only(items):
    return [i for i in items if isinstance(i, ManifestError)]


NATIVE = [
    {"video_id": "v1", "url": "videos/a.mp4", "captions": "caps/a.vtt", "meta": {"lang": "en"}, "split": "train"},
    {"video_id": "v2", "url": "/abs/b.mp4"},
    {"video_id": "v3", "url": "https://127.0.0.1/c.mp4", "captions": None},
    {"video_id": "dQw4w9WgXcQ", "url": "dQw4w9WgXcQ"},
    {"video_id": "v5", "url": "s3://bucket/e.mp4", "meta": {"k": 1}},
]


def check_native_rows(rows: list[ManifestRow], folder: Path, source: str) -> None:
    assert [r.video_id for r in rows] == ["v1", "v2", "v3", "dQw4w9WgXcQ", "v5"]
    v1 = rows[0]
    assert v1.url == str(folder / "videos" / "a.mp4")  # relative to the manifest's folder
    assert v1.captions == str(folder / "caps" / "a.vtt")
    assert v1.meta["lang"] == "en" and v1.meta["split"] == "train"  # unknown field kept in meta
    assert rows[1].url == "/abs/b.mp4"
    assert rows[2].url == "https://127.0.0.1/c.mp4" and rows[2].captions is None
    assert rows[3].url == "dQw4w9WgXcQ"  # a YouTube id stays an id
    assert rows[4].url == "s3://bucket/e.mp4"
    assert all(r.source_file == source for r in rows)


def test_jsonl_and_gzip(tmp_path):
    text = "".join(json.dumps(r) + "\n" for r in NATIVE)
    plain = tmp_path / "m.jsonl"
    plain.write_text(text)
    packed = tmp_path / "m.jsonl.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        rows = rows_only(read_manifest(path))
        check_native_rows(rows, tmp_path, str(path))
        assert [r.line for r in rows] == [1, 2, 3, 4, 5]


def _csv_text(delimiter: str) -> str:
    header = ["video_id", "url", "captions", "meta", "split"]
    lines = [delimiter.join(header)]
    for r in NATIVE:
        meta = json.dumps(r.get("meta", {})) if r.get("meta") else ""
        values = [r["video_id"], r["url"], r.get("captions") or "", meta, r.get("split", "")]
        if delimiter == ",":
            values = ['"' + v.replace('"', '""') + '"' for v in values]
        lines.append(delimiter.join(values))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name,delimiter,compress", [("m.csv", ",", False), ("m.tsv", "\t", False),
                                                      ("m.csv.gz", ",", True)])
def test_csv_tsv(tmp_path, name, delimiter, compress):
    data = _csv_text(delimiter).encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if compress else data)
    items = list(read_manifest(path))
    assert not errors_only(items)
    rows = rows_only(items)
    check_native_rows(rows, tmp_path, str(path))
    assert rows[4].meta == {"k": 1}  # the meta column is parsed as JSON
    assert rows[0].line == 2  # the header is line 1


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "video_id": [r["video_id"] for r in NATIVE],
        "url": [r["url"] for r in NATIVE],
        "captions": [r.get("captions") for r in NATIVE],
        "split": [r.get("split") for r in NATIVE],
    })
    path = tmp_path / "m.parquet"
    pq.write_table(table, path)
    rows = rows_only(read_manifest(path))
    assert [r.video_id for r in rows] == [r["video_id"] for r in NATIVE]
    assert rows[0].url == str(tmp_path / "videos" / "a.mp4")
    assert rows[0].meta == {"split": "train"} and rows[1].meta == {}
    assert rows[2].line == 3


def test_merlot_json_file_gzip_folder_and_glob(tmp_path, shared_data):
    src = shared_data / "yttemporal"
    grover = src / "WAaKRUoY6Io.grover.json"
    (row,) = list(read_manifest(grover))
    assert isinstance(row, ManifestRow)
    assert row.video_id == "WAaKRUoY6Io"
    assert row.captions == str(grover)  # the transcript stage reads the JSON's word times
    assert row.url == "https://www.youtube.com/watch?v=WAaKRUoY6Io"
    assert row.meta["title"].startswith("Lemon Tomato Penne Pasta")
    assert row.meta["duration"] == 255 and row.meta["n_subtitle_words"] > 100

    folder = tmp_path / "yt"
    folder.mkdir()
    shutil.copy(grover, folder / grover.name)
    shutil.copy(src / "WAaKRUoY6Io.info.json", folder / "WAaKRUoY6Io.info.json")
    (folder / "WAaKRUoY6Io.mp4").write_bytes(b"\x00")  # a downloaded video beside the JSON wins
    rows = list(read_manifest(folder))
    assert len(rows) == 1  # the info.json of the same video is not a second row
    assert rows[0].url == str(folder / "WAaKRUoY6Io.mp4")

    packed = tmp_path / "gz" / "WAaKRUoY6Io.json.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(grover.read_bytes()))
    (row_gz,) = list(read_manifest(packed))
    assert row_gz.video_id == "WAaKRUoY6Io" and row_gz.captions == str(packed)

    glob_rows = list(read_manifest(str(tmp_path / "*" / "*.json*")))
    assert len(glob_rows) == 2 and all(isinstance(r, ManifestRow) for r in glob_rows)


def test_info_json_alone_uses_sibling_vtt(shared_data):
    (row,) = list(read_manifest(shared_data / "yttemporal" / "WAaKRUoY6Io.info.json"))
    assert row.video_id == "WAaKRUoY6Io"
    assert row.captions == str(shared_data / "yttemporal" / "WAaKRUoY6Io.en.vtt")
    assert row.meta["manifest_format"] == "info_json"


def test_malformed_rows_are_counted_not_fatal(tmp_path):
    lines = [
        json.dumps({"video_id": "ok1", "url": "a.mp4"}),
        "{not json",
        json.dumps({"url": "b.mp4"}),
        json.dumps({"video_id": "no_url"}),
        json.dumps({"video_id": ["x"], "url": "c.mp4"}),
        json.dumps({"video_id": "bad_meta", "url": "c.mp4", "meta": "oops"}),
        json.dumps({"video_id": "bad_caps", "url": "c.mp4", "captions": 5}),
        json.dumps([1, 2]),
        json.dumps({"video_id": "", "url": "c.mp4"}),
        "",
        json.dumps({"video_id": 42, "url": "d.mp4"}),
    ]
    path = tmp_path / "m.jsonl"
    data = ("\n".join(lines[:2]) + "\n").encode() + b'{"video_id": "bad\xff", "url": "x"}\n' + \
        ("\n".join(lines[2:]) + "\n").encode()
    path.write_bytes(data)
    items = list(read_manifest(path))
    rows, errors = rows_only(items), errors_only(items)
    assert [r.video_id for r in rows] == ["ok1", "42"]
    assert len(errors) == 9
    assert all(e.error_class == "manifest_row" and e.source_file == str(path) for e in errors)
    by_line = {e.line: e for e in errors}
    assert "bad JSON" in by_line[2].message
    assert "UTF-8" in by_line[3].message
    assert "missing 'video_id'" in by_line[4].message
    assert "missing 'url'" in by_line[5].message and by_line[5].video_id == "no_url"
    assert str(by_line[2]).startswith(f"{path}:2: ")
    assert by_line[5].as_record()["stage"] == "manifest"


def test_csv_row_with_wrong_field_count(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("video_id,url\na,a.mp4\nb,b.mp4,extra\n,c.mp4\nd,d.mp4\n")
    items = list(read_manifest(path))
    assert [r.video_id for r in rows_only(items)] == ["a", "d"]
    assert [(e.line, e.error_class) for e in errors_only(items)] == [(3, "manifest_row"), (4, "manifest_row")]


def test_corrupt_gzip_yields_a_file_error(tmp_path):
    text = "".join(json.dumps({"video_id": f"v{i}", "url": f"{i}.mp4"}) + "\n" for i in range(2000))
    packed = gzip.compress(text.encode())
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(packed[: len(packed) // 2])
    items = list(read_manifest(path))
    assert len(rows_only(items)) > 0
    assert errors_only(items)[-1].error_class == "manifest_file"


def test_missing_and_unknown_manifests_are_job_errors(tmp_path):
    with pytest.raises(ManifestFormatError, match="does not exist"):
        list(read_manifest(tmp_path / "nope.jsonl"))
    (tmp_path / "m.xlsx").write_text("x")
    with pytest.raises(ManifestFormatError, match="unknown format"):
        list(read_manifest(tmp_path / "m.xlsx"))


def test_duplicates_keep_first(tmp_path):
    path = tmp_path / "m.jsonl"
    ids = ["a", "b", "a", "c", "b", "a"]
    path.write_text("".join(json.dumps({"video_id": v, "url": f"{v}{i}.mp4"}) + "\n" for i, v in enumerate(ids)))
    stats = DedupeStats()
    rows = rows_only(dedupe_rows(read_manifest(path), stats))
    assert [(r.video_id, r.line) for r in rows] == [("a", 1), ("b", 2), ("c", 4)]
    assert stats.duplicates == 3 and stats.examples == ["a", "b", "a"]


def test_nasty_ids_map_to_safe_distinct_stable_keys(tmp_path):
    keys = [safe_key_part(v) for v in NASTY_IDS]
    assert all(SAFE.match(k) for k in keys), keys
    assert len(set(keys)) == len(NASTY_IDS)
    assert keys == [safe_key_part(v) for v in NASTY_IDS]  # stable
    assert safe_key_part("-rf") == "-rf"  # already safe: unchanged
    assert safe_key_part("WAaKRUoY6Io") == "WAaKRUoY6Io"
    assert safe_key_part("vidéo").startswith("video-")
    assert safe_key_part("../../etc/passwd").startswith("etc_passwd-")
    stems = [safe_file_stem(v) for v in NASTY_IDS]
    assert not any(s.startswith("-") or s in (".", "..") for s in stems)
    for stem in stems:  # a file named after any id stays in its folder
        assert (tmp_path / stem).resolve().parent == tmp_path.resolve()


def test_nasty_ids_survive_reading(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"video_id": v, "url": "a.mp4"}, ensure_ascii=False) + "\n"
                            for v in NASTY_IDS))
    rows = rows_only(read_manifest(path))
    assert [r.video_id for r in rows] == NASTY_IDS  # the real id is kept as is
    assert all(SAFE.match(r.key) for r in rows)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=80))
def test_safe_key_part_property(video_id):
    key = safe_key_part(video_id)
    assert SAFE.match(key)
    if SAFE.match(video_id) and len(video_id) <= 128:
        assert key == video_id
    else:
        assert key != video_id and re.search(r"-[0-9a-f]{10}$", key)


def test_relative_youtube_id_vs_existing_file(tmp_path):
    (tmp_path / "abcdefghijk").write_bytes(b"x")  # a local file whose name looks like an id
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"video_id": "a", "url": "abcdefghijk"}) + "\n"
                    + json.dumps({"video_id": "b", "url": "-bcdefghijk"}) + "\n"
                    + json.dumps({"video_id": "c", "url": "sub/../x.mp4"}) + "\n"
                    + json.dumps({"video_id": "-rf", "url": "-rf.mp4"}) + "\n")
    rows = rows_only(read_manifest(path))
    assert rows[3].url == str(tmp_path / "-rf.mp4")  # absolute: can never look like an option
    assert rows[0].url == str(tmp_path / "abcdefghijk")
    assert rows[1].url == "-bcdefghijk"
    assert rows[2].url == str(tmp_path / "x.mp4")


def test_fsspec_manifest_resolves_relative_to_its_folder():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/corpus/m.jsonl", (json.dumps({"video_id": "a", "url": "clips/a.mp4", "captions": "a.vtt"}) + "\n").encode())
    (row,) = list(read_manifest("memory://corpus/m.jsonl"))
    assert row.url == "memory://corpus/clips/a.mp4"
    assert row.captions == "memory://corpus/a.vtt"


def test_convert_to_native_jsonl(tmp_path, capsys):
    src = tmp_path / "m.csv"
    src.write_text(_csv_text(",") + '"v1","dup.mp4","","",""\n' + '"bad"\n')
    dst = tmp_path / "out" / "m.jsonl"
    code = main(["convert", str(src), str(dst)])
    assert code == 1  # a malformed row was reported
    out = capsys.readouterr()
    assert json.loads(out.out)["rows"] == 5 and json.loads(out.out)["duplicates"] == 1
    assert "malformed row" in out.err
    rows = rows_only(read_manifest(dst))
    check_native_rows(rows, tmp_path, str(dst))
    counts = convert(str(dst), str(tmp_path / "again.jsonl"))
    assert counts["rows"] == 5 and counts["errors"] == 0
    assert main(["convert", str(tmp_path / "missing.csv"), str(tmp_path / "x.jsonl")]) == 2


def test_http_manifest_on_localhost(http_server):
    http_server.add_file("m.jsonl", (json.dumps({"video_id": "a", "url": "clips/a.mp4"}) + "\n").encode())
    http_server.add_file("m.csv.gz", gzip.compress(b"video_id,url\nb,b.mp4\n"))
    (row,) = list(read_manifest(http_server.url("/files/m.jsonl")))
    assert row.url == http_server.url("/files/clips/a.mp4")
    (row,) = list(read_manifest(http_server.url("/files/m.csv.gz")))
    assert row.video_id == "b" and row.url == http_server.url("/files/b.mp4")
    with pytest.raises(ManifestFormatError, match="does not exist"):
        list(read_manifest(http_server.url("/files/none.jsonl")))
