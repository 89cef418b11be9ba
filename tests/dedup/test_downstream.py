"""Downstream readers on the real annotation files in shared/data/downstream_annotations (quirks included)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from common.downstream import DownstreamFormatError, read_dataset


@pytest.fixture(scope="module")
def ann(shared_data: Path) -> Path:
    return shared_data / "downstream_annotations"


def by_id(result):
    return {v.video_id: v for v in result.videos}


def test_ucf101_official_split_counts_and_case_mismatch(ann: Path, tmp_path: Path):
    files = [str(ann / "ucf101" / n) for n in ("classInd.txt", "trainlist01.txt", "testlist01.txt")]
    # A video root laid out as the official UCF-101 folder, with classInd's spelling of the folder.
    (tmp_path / "HandstandPushups").mkdir()
    (tmp_path / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi").write_bytes(b"x")
    result = read_dataset("ucf101", "ucf101", files, str(tmp_path))
    splits = Counter(v.split for v in result.videos)
    assert splits == {"train": 9537, "test": 3783}  # the official split-1 sizes
    assert result.bad_rows == 0
    video = by_id(result)["v_HandStandPushups_g01_c01"]
    assert video.label == "HandstandPushups"  # classInd's spelling, matched without case
    assert video.path and video.path.endswith("v_HandStandPushups_g01_c01.avi")
    assert not any("\r" in v.video_id or "\r" in (v.label or "") for v in result.videos)


def test_kinetics_quoted_labels_dash_ids_and_test_format(ann: Path):
    result = read_dataset("k400", "kinetics", [str(ann / "kinetics400" / "kinetics-400_val.3perclass.csv")])
    assert len(result.videos) == 1200
    assert len({v.label for v in result.videos}) == 400
    drum = [v for v in result.videos if v.label == "air drumming"]
    assert drum and drum[0].youtube_id == "--nQbRBEz2s" and drum[0].video_id == "--nQbRBEz2s_000104_000114"
    assert (drum[0].start, drum[0].end, drum[0].split) == (104.0, 114.0, "val")
    test = read_dataset("k400", "kinetics", [str(ann / "kinetics400" / "kinetics-400_test.first300.csv")])
    assert len(test.videos) == 300 and all(v.label is None and v.youtube_id for v in test.videos)


def test_kinetics_missing_column_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "kinetics_val.csv"
    bad.write_text("label,time_start,time_end,split\nabseiling,1,11,val\n")
    with pytest.raises(DownstreamFormatError, match="missing column 'youtube_id'"):
        read_dataset("k400", "kinetics", [str(bad)])


def test_hmdb51_trailing_spaces_and_split_ids(ann: Path):
    files = sorted(str(p) for p in (ann / "hmdb51").glob("*.txt"))
    result = read_dataset("hmdb", "hmdb51", files)
    videos = by_id(result)
    assert videos["April_09_brush_hair_u_nm_np1_ba_goo_0"].split == "train"  # from split 1 (id 1)
    assert videos["April_09_brush_hair_u_nm_np1_ba_goo_0"].label == "brush_hair"
    # split 1 of the official 70/30 split (id 0 = unused)
    assert Counter(v.split for v in result.videos if v.label == "brush_hair") == {"train": 70, "test": 30, "unused": 7}
    assert all(not v.video_id.endswith(" ") for v in result.videos)
    only_test = read_dataset("hmdb", "hmdb51", files, splits=["test"])
    assert only_test.videos and all(v.split == "test" for v in only_test.videos)


def test_msrvtt_csvs_and_data_json(ann: Path, tmp_path: Path):
    files = [str(ann / "msrvtt" / n) for n in ("MSRVTT_JSFUSION_test.csv", "MSRVTT_train.9k.csv")]
    result = read_dataset("msrvtt", "msrvtt", files)
    videos = by_id(result)
    assert len(result.videos) == 10000
    assert videos["video9770"].split == "test"
    assert videos["video9770"].captions == ["a person is connecting something to system"]
    assert videos["video0"].split == "train"
    # MSRVTT_data.json in the official layout ("start time" with a space, url with the YouTube id).
    data = {"info": {}, "videos": [{"id": 0, "video_id": "video0", "category": 9, "split": "train",
                                    "url": "https://www.youtube.com/watch?v=9lZi22qLlEo", "start time": 137.72,
                                    "end time": 149.44}],
            "sentences": [{"sen_id": 0, "video_id": "video0", "caption": "a car is shown"}]}
    path = tmp_path / "MSRVTT_data.json"
    path.write_text(json.dumps(data))
    full = by_id(read_dataset("msrvtt", "msrvtt", [str(path)]))
    assert full["video0"].youtube_id == "9lZi22qLlEo"
    assert full["video0"].start == 137.72 and full["video0"].captions == ["a car is shown"]


def test_msvd_lists_mapping_captions(ann: Path, tmp_path: Path):
    files = [str(ann / "msvd" / n) for n in ("train_list.txt", "val_list.txt", "test_list.txt", "youtube_mapping.txt",
                                             "captions_msvd.subset160.json")]
    (tmp_path / "vid1.avi").write_bytes(b"x")  # videos named by the vidN mapping
    result = read_dataset("msvd", "msvd", files, str(tmp_path))
    assert Counter(v.split for v in result.videos) == {"train": 1200, "val": 100, "test": 670}
    first = by_id(result)["-4wsuPCjDBc_5_15"]
    assert first.youtube_id == "-4wsuPCjDBc" and (first.start, first.end) == (5.0, 15.0)
    assert first.path and first.path.endswith("vid1.avi")
    assert "a squirrel is eating a peanut in it s shell" in first.captions
    assert by_id(result)["bQJQGoJF7_k_162_169"].youtube_id == "bQJQGoJF7_k"  # '_' inside the YouTube id


def test_didemo_at_signs_and_odd_extensions(ann: Path, tmp_path: Path):
    files = [str(ann / "didemo" / n) for n in ("test_data.first300.json", "val_data.first300.json")]
    (tmp_path / "26292851@N04_4253489686_265c3c8051.m4v").write_bytes(b"x")
    result = read_dataset("didemo", "didemo", files, str(tmp_path))
    videos = by_id(result)
    assert len(videos) < 600  # one record per video, several annotations merged
    video = videos["26292851@N04_4253489686_265c3c8051.m4v"]
    assert video.path and "@" in video.path and video.split == "test"
    assert "someone kicks the bug towards some rocks." in video.captions


def test_ssv2_templates_map_to_classes(ann: Path):
    files = [str(ann / "ssv2" / n) for n in ("something-something-v2-labels.json",
                                             "something-something-v2-validation.first1000.json",
                                             "something-something-v2-test.first500.json")]
    result = read_dataset("ssv2", "ssv2", files)
    videos = by_id(result)
    assert Counter(v.split for v in result.videos) == {"val": 1000, "test": 500}
    assert videos["74225"].label is not None and videos["74225"].label.isdigit()  # bracketed template -> index
    assert videos["1420"].label is None


def test_lsmdc_six_fields_and_bad_rows(tmp_path: Path):
    path = tmp_path / "LSMDC16_annos_val.csv"
    path.write_text("0001_American_Beauty_00.00.51.926-00.00.54.129\t00.00.51.926\t00.00.54.129\t00.00.51.000"
                    "\t00.00.55.000\tSOMEONE looks out.\n"
                    "broken line with no tabs\n")
    (tmp_path / "videos" / "0001_American_Beauty").mkdir(parents=True)
    clip = tmp_path / "videos" / "0001_American_Beauty" / "0001_American_Beauty_00.00.51.926-00.00.54.129.avi"
    clip.write_bytes(b"x")
    result = read_dataset("lsmdc", "lsmdc", [str(path)], str(tmp_path / "videos"))
    assert len(result.videos) == 1 and result.bad_rows == 1 and "6 tab-separated" in result.errors[0]
    assert result.videos[0].path == str(clip) and result.videos[0].split == "val"
    assert result.videos[0].captions == ["SOMEONE looks out."]


def test_folder_reader(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "dQw4w9WgXcQ.mp4").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a video")
    result = read_dataset("f", "folder", [], str(tmp_path))
    assert [v.video_id for v in result.videos] == ["a/dQw4w9WgXcQ"]
    assert result.videos[0].youtube_id == "dQw4w9WgXcQ"
