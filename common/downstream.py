"""Downstream evaluation sets from their official annotation files: one reader per format.

Shared by dedup/ (the leakage check reads every downstream video) and training/ (downstream evaluation:
t2v, v2v, linear probe), which may not import each other; plain stdlib, nothing heavy.

Every reader yields `DownstreamVideo`s (video id, resolved path, split, the source's YouTube id when the
format has one, label, captions). Files are read as published, quirks included: CRLF line endings,
quoted CSV labels, YouTube ids that start with `-`, UCF-101's `HandstandPushups` vs `v_HandStandPushups`,
HMDB-51's trailing spaces, DiDeMo names with `@` and odd extensions.

Formats (`annotations:` lists the files; the reader tells them apart by name or content):
  ssv2      labels json ({template: index}) + split jsons ([{"id", "template", ...}]); videos <id>.webm
  kinetics  csv `label,youtube_id,time_start,time_end,split[,is_cc]` (test: no label); videos
            <youtube_id>_<start:06d>_<end:06d>.mp4 (or <youtube_id>.mp4), in any sub-folder
  ucf101    classInd.txt + trainlistNN.txt / testlistNN.txt; videos <Class>/v_<Class>_gNN_cNN.avi
  hmdb51    <class>_test_splitN.txt (`name.avi id`, 1 train, 2 test, 0 unused); videos <class>/<name>.avi
  msrvtt    MSRVTT_JSFUSION_test.csv, MSRVTT_train.*.csv, MSRVTT_data.json; videos videoN.mp4
  msvd      {train,val,test}_list.txt, youtube_mapping.txt (clip id -> vidN), captions json; videos
            <clip id>.avi or vidN.avi; the clip id is `<youtube_id>_<start>_<end>`
  didemo    {train,val,test}_data.json ([{"video", "dl_link", "description", ...}]); videos by file name
  lsmdc     tab-separated, no header, 6 fields: clip id, 4 times, sentence; videos <movie>/<clip id>.avi
  folder    every video file under `video_root` (id: path relative to the root, without extension)

Image-text probes are not videos: their reader is common/downstream_svo.py (`read_svo`, format `svo`),
which dedup/'s leakage check does not read:
  svo       SVO-Probes: a jsonl of {"sentence", "pos_image", "neg_image", "neg_type": subject|verb|object}
            (image paths relative to the jsonl's folder), or the release's csv (`sentence`, `subj_neg`,
            `verb_neg`, `obj_neg`, `pos_image_id`/`pos_url`, `neg_image_id`/`neg_url`) with the images
            downloaded under `video_root` (found by image id or by the url's file name)

A file that lacks a required column is a `DownstreamFormatError` (one line: which file, which column);
a malformed row is counted in `ReadResult.bad_rows` and skipped.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp", ".mts",
                    ".flv", ".ogv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
YOUTUBE_URL = re.compile(r"(?:v=|youtu\.be/|/embed/|/shorts/)([A-Za-z0-9_-]{11})")


class DownstreamFormatError(ValueError):
    """An annotation file that cannot be read as its format (missing column, not JSON, ...)."""


@dataclass
class DownstreamVideo:
    dataset: str
    video_id: str
    split: str = ""
    path: str | None = None  # resolved video file, None when absent under video_root
    youtube_id: str | None = None
    start: float | None = None  # seconds into the YouTube source (Kinetics, MSVD, MSR-VTT)
    end: float | None = None
    label: str | None = None
    captions: list[str] = field(default_factory=list)
    candidates: tuple[str, ...] = ()  # file names/relative paths tried under video_root, best first


@dataclass
class ReadResult:
    videos: list[DownstreamVideo]
    bad_rows: int = 0
    errors: list[str] = field(default_factory=list)  # first few bad-row messages


def read_text(path: str | os.PathLike) -> str:
    """Whole file as text, CRLF/CR normalised, BOM dropped."""
    data = Path(path).read_bytes().decode("utf-8-sig", errors="replace")
    return data.replace("\r\n", "\n").replace("\r", "\n")


def _load_json(path: str | os.PathLike):
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DownstreamFormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _split_from_name(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    for key, split in (("train", "train"), ("val", "val"), ("test", "test"), ("publictect", "test")):
        if key in name:
            return split
    return ""


def _csv_rows(path: str | os.PathLike, required: Iterable[str]) -> tuple[list[str], Iterator[dict]]:
    reader = csv.DictReader(io.StringIO(read_text(path)))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in required if c not in header]
    if missing:
        raise DownstreamFormatError(f"{path}: missing column {missing[0]!r} (header: {','.join(header) or 'empty'})")
    return header, reader


class _Rows:
    """Collects videos and bad-row counts while a reader walks its files."""

    def __init__(self) -> None:
        self.result = ReadResult(videos=[])
        self._seen: dict[str, DownstreamVideo] = {}

    def bad(self, where: str, why: str) -> None:
        self.result.bad_rows += 1
        if len(self.result.errors) < 10:
            self.result.errors.append(f"{where}: {why}")

    def add(self, video: DownstreamVideo) -> DownstreamVideo:
        """Keep the first record of a video id; later ones add their captions."""
        old = self._seen.get(video.video_id)
        if old is not None:
            old.captions.extend(c for c in video.captions if c not in old.captions)
            return old
        self._seen[video.video_id] = video
        self.result.videos.append(video)
        return video

    def get(self, video_id: str) -> DownstreamVideo | None:
        return self._seen.get(video_id)


# ---- one reader per format -----------------------------------------------------------------------------
def read_ssv2(name: str, files: list[str]) -> ReadResult:
    rows = _Rows()
    classes: dict[str, str] = {}
    for path in files:
        data = _load_json(path)
        if isinstance(data, dict):  # labels json: {"Approaching something with your camera": "0", ...}
            classes.update({k.strip(): str(v) for k, v in data.items()})
    for path in files:
        data = _load_json(path)
        if isinstance(data, dict):
            continue
        if not isinstance(data, list):
            raise DownstreamFormatError(f"{path}: expected a JSON list of {{\"id\": ...}} entries")
        split = _split_from_name(path)
        for i, entry in enumerate(data):
            if not isinstance(entry, dict) or "id" not in entry:
                raise DownstreamFormatError(f"{path}: entry {i} has no 'id' field")
            vid = str(entry["id"]).strip()
            template = str(entry.get("template", "")).replace("[", "").replace("]", "").strip()
            label = classes.get(template, template) if template else None
            rows.add(DownstreamVideo(name, vid, split, label=label, candidates=(f"{vid}.webm", vid)))
    return rows.result


def kinetics_clip_id(youtube_id: str, start: float, end: float) -> str:
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}"


def read_kinetics(name: str, files: list[str]) -> ReadResult:
    rows = _Rows()
    for path in files:
        header, reader = _csv_rows(path, ("youtube_id", "time_start", "time_end"))
        for line, row in enumerate(reader, start=2):
            ytid = (row.get("youtube_id") or "").strip()
            try:
                start, end = float(row["time_start"]), float(row["time_end"])
            except (TypeError, ValueError):
                rows.bad(f"{path}:{line}", f"bad time_start/time_end {row.get('time_start')!r}/{row.get('time_end')!r}")
                continue
            if not ytid:
                rows.bad(f"{path}:{line}", "empty youtube_id")
                continue
            clip = kinetics_clip_id(ytid, start, end)
            label = (row.get("label") or "").strip() or None
            split = (row.get("split") or "").strip() or _split_from_name(path)
            cands = [f"{clip}.mp4", clip, f"{ytid}.mp4", ytid]
            if label:
                cands = [f"{label}/{clip}.mp4", f"{label.replace(' ', '_')}/{clip}.mp4"] + cands
            rows.add(DownstreamVideo(name, clip, split, youtube_id=ytid, start=start, end=end, label=label,
                                     candidates=tuple(cands)))
    return rows.result


def read_ucf101(name: str, files: list[str]) -> ReadResult:
    rows = _Rows()
    classes: dict[str, str] = {}  # lower-case class name -> class name as classInd spells it
    for path in files:
        if "classind" in Path(path).name.lower():
            for line_no, line in enumerate(read_text(path).split("\n"), start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or not parts[0].isdigit():
                    raise DownstreamFormatError(f"{path}:{line_no}: expected '<index> <ClassName>', got {line!r}")
                classes[parts[1].lower()] = parts[1]
    for path in files:
        lower = Path(path).name.lower()
        if "classind" in lower:
            continue
        split = "train" if "train" in lower else "test" if "test" in lower else ""
        for line_no, line in enumerate(read_text(path).split("\n"), start=1):
            parts = line.split()
            if not parts:
                continue
            rel = parts[0]
            if "/" not in rel or not rel.lower().endswith(".avi"):
                rows.bad(f"{path}:{line_no}", f"expected '<Class>/v_<Class>_gNN_cNN.avi [label]', got {line!r}")
                continue
            folder, file_name = rel.split("/", 1)
            # classInd says HandstandPushups, the files say v_HandStandPushups_...: match without case.
            label = classes.get(folder.lower(), folder)
            vid = Path(file_name).stem
            rows.add(DownstreamVideo(name, vid, split, label=label,
                                     candidates=(rel, f"{label}/{file_name}", file_name, vid)))
    return rows.result


HMDB_SPLIT = {"0": "unused", "1": "train", "2": "test"}


def read_hmdb51(name: str, files: list[str]) -> ReadResult:
    rows = _Rows()
    for path in sorted(files):  # split1 files before split2/3: a video keeps its split-1 role
        match = re.match(r"(.+)_test_split(\d+)\.txt$", Path(path).name)
        if not match:
            if "readme" in Path(path).name.lower():
                continue
            raise DownstreamFormatError(f"{path}: expected a file named <class>_test_split<N>.txt")
        label = match.group(1)
        for line_no, line in enumerate(read_text(path).split("\n"), start=1):
            parts = line.split()  # "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 " (trailing space)
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in HMDB_SPLIT:
                rows.bad(f"{path}:{line_no}", f"expected '<name>.avi <0|1|2>', got {line!r}")
                continue
            vid = Path(parts[0]).stem
            rows.add(DownstreamVideo(name, vid, HMDB_SPLIT[parts[1]], label=label,
                                     candidates=(f"{label}/{parts[0]}", parts[0], vid)))
    return rows.result


def read_msrvtt(name: str, files: list[str]) -> ReadResult:
    rows = _Rows()
    json_files = [p for p in files if Path(p).suffix.lower() == ".json"]
    for path in json_files:  # MSRVTT_data.json: {"videos": [...], "sentences": [...]}
        data = _load_json(path)
        if not isinstance(data, dict) or "videos" not in data:
            raise DownstreamFormatError(f"{path}: expected MSRVTT_data.json with a 'videos' list")
        for i, video in enumerate(data["videos"]):
            if "video_id" not in video:
                rows.bad(f"{path}:videos[{i}]", "no video_id")
                continue
            vid = str(video["video_id"])
            url = str(video.get("url", ""))
            match = YOUTUBE_URL.search(url)
            rows.add(DownstreamVideo(name, vid, str(video.get("split", "")), youtube_id=match.group(1) if match else None,
                                     start=video.get("start time"), end=video.get("end time"),
                                     label=str(video.get("category")) if "category" in video else None,
                                     candidates=(f"{vid}.mp4", vid)))
        for sentence in data.get("sentences", []):
            found = rows.get(str(sentence.get("video_id")))
            if found is not None and sentence.get("caption"):
                found.captions.append(str(sentence["caption"]))
    for path in files:
        if path in json_files:
            continue
        header, reader = _csv_rows(path, ("video_id",))
        split = "test" if "sentence" in header else _split_from_name(path) or "train"
        for line, row in enumerate(reader, start=2):
            vid = (row.get("video_id") or "").strip()
            if not vid:
                rows.bad(f"{path}:{line}", "empty video_id")
                continue
            caption = (row.get("sentence") or "").strip()
            existing = rows.get(vid)
            if existing is not None and not existing.split:
                existing.split = split
            rows.add(DownstreamVideo(name, vid, split, captions=[caption] if caption else [],
                                     candidates=(f"{vid}.mp4", vid)))
    return rows.result


def msvd_youtube_id(clip_id: str) -> tuple[str | None, float | None, float | None]:
    """`-4wsuPCjDBc_5_15` -> ("-4wsuPCjDBc", 5, 15); YouTube ids may contain `_` themselves."""
    parts = clip_id.rsplit("_", 2)
    if len(parts) == 3:
        try:
            return parts[0], float(parts[1]), float(parts[2])
        except ValueError:
            pass
    return None, None, None


def read_msvd(name: str, files: list[str]) -> ReadResult:
    rows = _Rows()
    mapping: dict[str, str] = {}
    captions: dict[str, list[str]] = {}
    lists = []
    for path in files:
        lower = Path(path).name.lower()
        if "mapping" in lower:
            for line_no, line in enumerate(read_text(path).split("\n"), start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    rows.bad(f"{path}:{line_no}", f"expected '<clip id> vidN', got {line!r}")
                    continue
                mapping[parts[0]] = parts[1]
        elif lower.endswith(".json"):
            data = _load_json(path)
            if not isinstance(data, dict):
                raise DownstreamFormatError(f"{path}: expected {{clip id: [captions]}}")
            captions.update({k: [str(c) for c in v] for k, v in data.items()})
        else:
            lists.append(path)
    clip_splits: list[tuple[str, str]] = []
    for path in lists:
        split = _split_from_name(path)
        for line in read_text(path).split("\n"):
            if line.strip():
                clip_splits.append((line.strip(), split))
    if not lists:  # the mapping (or captions) alone lists every clip
        clip_splits = [(clip, "") for clip in (mapping or captions)]
    for clip, split in clip_splits:
        ytid, start, end = msvd_youtube_id(clip)
        if ytid is None:
            rows.bad(clip, "clip id is not <youtube_id>_<start>_<end>")
        cands = [f"{clip}.avi", clip]
        if clip in mapping:
            cands += [f"{mapping[clip]}.avi", mapping[clip]]
        rows.add(DownstreamVideo(name, clip, split, youtube_id=ytid, start=start, end=end,
                                 captions=list(captions.get(clip, [])), candidates=tuple(cands)))
    return rows.result


def read_didemo(name: str, files: list[str]) -> ReadResult:
    rows = _Rows()
    for path in files:
        data = _load_json(path)
        if not isinstance(data, list):
            raise DownstreamFormatError(f"{path}: expected a JSON list of DiDeMo annotations")
        split = _split_from_name(path)
        for i, entry in enumerate(data):
            if not isinstance(entry, dict) or "video" not in entry:
                raise DownstreamFormatError(f"{path}: entry {i} has no 'video' field")
            video = str(entry["video"])  # "26292851@N04_4253489686_265c3c8051.m4v" (some end in a bare '.')
            link = str(entry.get("dl_link") or entry.get("download_link") or "")
            match = YOUTUBE_URL.search(link)
            stem = video.rsplit(".", 1)[0] if "." in video else video
            desc = str(entry.get("description", "")).strip()
            rows.add(DownstreamVideo(name, video, split, youtube_id=match.group(1) if match else None,
                                     captions=[desc] if desc else [],
                                     candidates=(video, stem, f"{stem}.mp4")))
    return rows.result


def read_lsmdc(name: str, files: list[str]) -> ReadResult:
    rows = _Rows()
    for path in files:
        split = _split_from_name(path)
        for line_no, line in enumerate(read_text(path).split("\n"), start=1):
            line = line.strip()
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != 6:
                rows.bad(f"{path}:{line_no}", f"expected 6 tab-separated fields, got {len(fields)}")
                continue
            clip, _sa, _ea, start, end, sentence = fields
            movie = clip.rsplit("_", 1)[0]
            try:
                t0, t1 = _lsmdc_time(start), _lsmdc_time(end)
            except ValueError:
                t0 = t1 = None
            rows.add(DownstreamVideo(name, clip, split, start=t0, end=t1, captions=[sentence.strip()],
                                     candidates=(f"{movie}/{clip}.avi", f"{clip}.avi", clip)))
    return rows.result


def _lsmdc_time(text: str) -> float:
    """`00.00.51.926` -> 51.926 seconds."""
    parts = text.strip().split(".")
    if len(parts) != 4:
        raise ValueError(text)
    h, m, s, ms = (int(p) for p in parts)
    return h * 3600 + m * 60 + s + ms / 1000


def read_folder(name: str, files: list[str], video_root: str = "") -> ReadResult:
    rows = _Rows()
    root = Path(video_root)
    if not root.is_dir():
        raise DownstreamFormatError(f"video_root {video_root} is not a folder")
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
            rel = path.relative_to(root).as_posix()
            vid = rel.rsplit(".", 1)[0]
            ytid = path.stem if YOUTUBE_ID.match(path.stem) else None
            rows.add(DownstreamVideo(name, vid, "", youtube_id=ytid, path=str(path), candidates=(rel,)))
    return rows.result


READERS: dict[str, Callable[[str, list[str]], ReadResult]] = {
    "ssv2": read_ssv2, "kinetics": read_kinetics, "ucf101": read_ucf101, "hmdb51": read_hmdb51,
    "msrvtt": read_msrvtt, "msvd": read_msvd, "didemo": read_didemo, "lsmdc": read_lsmdc,
}


# ---- resolve files under the video root -----------------------------------------------------------------
class VideoIndex:
    """Every file under a video root, found by relative path, file name or name without extension (for
    files with one of `extensions`: SVO-Probes' image folder passes IMAGE_EXTENSIONS)."""

    def __init__(self, root: str | os.PathLike | None, extensions: tuple[str, ...] = VIDEO_EXTENSIONS):
        self.by_rel: dict[str, str] = {}
        self.by_name: dict[str, str] = {}
        self.by_stem: dict[str, str] = {}
        if not root or not Path(root).is_dir():
            return
        root = Path(root)
        for dirpath, _dirs, names in os.walk(root):
            for file_name in sorted(names):
                full = os.path.join(dirpath, file_name)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                self.by_rel.setdefault(rel.lower(), full)
                self.by_name.setdefault(file_name.lower(), full)
                stem = file_name.rsplit(".", 1)[0] if "." in file_name else file_name
                if Path(file_name).suffix.lower() in extensions or not Path(file_name).suffix:
                    self.by_stem.setdefault(stem.lower(), full)

    def resolve(self, candidates: Iterable[str]) -> str | None:
        for cand in candidates:
            key = cand.lower()  # UCF-101's folder/file case mismatch
            for table in (self.by_rel, self.by_name, self.by_stem):
                if key in table:
                    return table[key]
        return None


def read_dataset(name: str, fmt: str, files: list[str], video_root: str = "", splits: Iterable[str] = (),
                 max_videos: int = 0) -> ReadResult:
    """Read one downstream dataset and resolve its videos under `video_root`."""
    for path in files:
        if not Path(path).is_file():
            raise DownstreamFormatError(f"annotation file {path} of dataset {name!r} does not exist")
    if fmt == "folder":
        result = read_folder(name, files, video_root)
    else:
        if fmt not in READERS:
            raise DownstreamFormatError(f"unknown downstream format {fmt!r}; known: {sorted(READERS) + ['folder']}")
        result = READERS[fmt](name, list(files))
        index = VideoIndex(video_root)
        for video in result.videos:
            video.path = index.resolve(video.candidates)
    keep = set(splits)
    if keep:
        result.videos = [v for v in result.videos if v.split in keep]
    if max_videos:
        result.videos = result.videos[:max_videos]
    return result

