"""Tiny downstream sets in the official file formats for the evaluation tests: clips written with PyAV
(a few frames of 32x32, MPEG-4 Part 2), annotation files as the real datasets publish them."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

COLOURS = {"Red": (220, 30, 30), "Green": (30, 200, 60), "Blue": (40, 80, 230), "Yellow": (240, 220, 40)}


def write_clip(path: Path, colour: tuple[int, int, int], seed: int, frames: int = 8, size: int = 48,
               fps: int = 8) -> Path:
    """A clip of `colour` with a moving bright square and per-frame noise (clips of one colour differ)."""
    import av

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        stream.codec_context.options = {"qscale": "3"}
        for t in range(frames):
            image = np.clip(np.array(colour, float) + rng.normal(0, 20, (size, size, 3)), 0, 255)
            x = (seed * 7 + t * 4) % (size - 8)
            image[8:16, x:x + 8] = 255
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def ucf_set(root: Path, classes=("Red", "Green", "Blue"), train: int = 6, test: int = 3) -> dict:
    """UCF-101 layout (classInd, trainlist01, testlist01 with CRLF; UCF-101/<Class>/v_<Class>_gNN_cNN.avi)."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_bytes("".join(f"{i} {c}\r\n" for i, c in enumerate(classes, 1)).encode())
    train_lines, test_lines = [], []
    for i, name in enumerate(classes, 1):
        for k in range(train + test):
            group = k + 1 if k < test else 8 + k
            rel = f"{name}/v_{name}_g{group:02d}_c01.avi"
            write_clip(root / "UCF-101" / rel, COLOURS[name], seed=i * 100 + k)
            (test_lines if k < test else train_lines).append(rel if k < test else f"{rel} {i}")
    (lists / "trainlist01.txt").write_bytes("".join(f"{line}\r\n" for line in train_lines).encode())
    (lists / "testlist01.txt").write_bytes("".join(f"{line}\r\n" for line in test_lines).encode())
    return {"format": "ucf101", "annotations": [str(lists / n) for n in ("classInd.txt", "trainlist01.txt", "testlist01.txt")],
            "video_root": str(root / "UCF-101")}


def msvd_set(root: Path, videos: int = 4) -> dict:
    """MSVD layout: test_list.txt, a captions json with several captions per clip, YouTubeClips/<clip>.avi."""
    names = list(COLOURS)
    ids, captions = [], {}
    for k in range(videos):
        clip = f"abcdefghij{k}_{k * 10}_{k * 10 + 5}"
        write_clip(root / "YouTubeClips" / f"{clip}.avi", COLOURS[names[k % 4]], seed=k)
        ids.append(clip)
        captions[clip] = [f"a {names[k % 4].lower()} screen", f"something {names[k % 4].lower()} {k}", "a square moves"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "test_list.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "captions_msvd.json").write_text(json.dumps(captions))
    return {"format": "msvd", "annotations": [str(root / "test_list.txt"), str(root / "captions_msvd.json")],
            "video_root": str(root / "YouTubeClips")}


def didemo_set(root: Path, videos: int = 3) -> dict:
    """DiDeMo layout: test_data.json, one entry per sentence (several per video), videos by file name."""
    entries = []
    for k in range(videos):
        name = f"1234@N0{k}_56789_abc.mp4"
        write_clip(root / "videos" / name, list(COLOURS.values())[k], seed=k)
        for s in range(2):
            entries.append({"video": name, "description": f"sentence {s} of video {k}", "times": [[s, s]],
                            "dl_link": ""})
    (root / "test_data.json").write_text(json.dumps(entries))
    return {"format": "didemo", "annotations": [str(root / "test_data.json")], "video_root": str(root / "videos")}


def ssv2_set(root: Path, per_class: int = 3) -> dict:
    """SSV2 layout: the labels json and a validation json (no train split); videos <id>.avi here (the
    reader finds <id>.webm or any <id>.*)."""
    templates = {"Pushing [something] from left to right": "0", "Lifting [something] up": "1"}
    entries, vid = [], 1000
    for c, template in enumerate(templates):
        for _ in range(per_class):
            write_clip(root / "videos" / f"{vid}.avi", list(COLOURS.values())[c], seed=vid)   # found by stem
            entries.append({"id": str(vid), "label": template.replace("[", "").replace("]", ""),
                            "template": template, "placeholders": ["it"]})
            vid += 1
    root.mkdir(parents=True, exist_ok=True)
    (root / "something-something-v2-labels.json").write_text(json.dumps(templates))
    (root / "something-something-v2-validation.json").write_text(json.dumps(entries))
    return {"format": "ssv2", "annotations": [str(root / "something-something-v2-labels.json"),
                                              str(root / "something-something-v2-validation.json")],
            "video_root": str(root / "videos")}


def msrvtt_videos_for(csv_path: Path, root: Path, count: int) -> list[str]:
    """Tiny videos for the first `count` rows of a JSFUSION csv (the real one has 1000)."""
    with open(csv_path, newline="") as handle:
        ids = [row["video_id"] for row in csv.DictReader(handle)][:count]
    for k, vid in enumerate(ids):
        write_clip(root / f"{vid}.mp4", list(COLOURS.values())[k % 4], seed=k)
    return ids
