"""The demo's downstream evaluation sets: what `python -m training.evaluate` scores a demo checkpoint on,
beside the leakage sets of pipeline.demo.downstream. Shapes drawn by the corpus renderer, from scenes
of the corpus's kind (pipeline.demo.script) but never from a corpus video, in official file formats so
the same readers (common/downstream.py) read them as the real sets:

    shapes_actions/   classification, UCF-101 layout: 6 motion classes, 10 train + 5 test clips each
        ucfTrainTestlist/classInd.txt                "1 Grow" (1-based, CRLF, as the official file)
        ucfTrainTestlist/trainlist01.txt             "MoveLeft/v_MoveLeft_g08_c01.avi 3" (CRLF)
        ucfTrainTestlist/testlist01.txt              "MoveLeft/v_MoveLeft_g01_c01.avi" (CRLF)
        UCF-101/<Class>/v_<Class>_gNN_c01.avi         MPEG-4 Part 2 AVI, 320x240, 15 fps, 3 s, no audio
    shapes_captions/  text-to-video retrieval, MSVD layout: 40 clips, 2-4 captions each
        test_list.txt                                one clip id per line, `<youtube id>_<start>_<end>`
        captions_msvd.json                           {clip id: [caption, ...]}
        YouTubeClips/<clip id>.avi                   MPEG-4 Part 2 AVI, 320x240, 15 fps, 3 s, no audio
    eval_sets.json                                   per set: format, annotation files, video folder
    .eval-sets-done.json                             written last: version + seed

Classes are motions (MoveLeft, MoveRight, MoveUp, MoveDown, Grow, Shrink): shape, colour, count, size,
place and background are drawn at random per clip, so only what moves and how tells a class, the kind
of thing the narration ("A red star moves to the left.") pairs with the frames in pretraining. UCF-101
groups as the official split 1 numbers them: groups 1-7 test, 8-25 train. Captions are the corpus's
"scenes" sentences of the clip's scene (each names colour and shape; MSVD has ~40 captions per clip,
these 2-4).

Made once per (version, seed) beside the corpus (`ensure`), about 15 s on 2 cores, and kept across
corpus reruns: a corpus that predates these sets gains them without being made again (so its demo
outputs stay valid). Deterministic: a pure function of the seed, written with bit-exact encoder flags.
"""
from __future__ import annotations

import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common.atomic import write_json, write_text
from pipeline.demo.render import background, draw_scene, encode_stream
from pipeline.demo.script import (
    COLOURS,
    FPS,
    MOVES,
    POSITIONS,
    SHAPES,
    Scene,
    next_scene,
    random_background,
    self_contained_sentences,
    video_rng,
)

__all__ = ["VERSION", "ACTION_CLASSES", "EvalClip", "plan", "annotation_files", "DATASETS", "ensure", "is_done"]

VERSION = "1"
DONE_FILE = ".eval-sets-done.json"
FOLDERS = ("shapes_actions", "shapes_captions")
# UCF-style class name -> the scene motion it shows.
ACTION_CLASSES = {"MoveLeft": "left", "MoveRight": "right", "MoveUp": "up", "MoveDown": "down",
                  "Grow": "grow", "Shrink": "shrink"}
TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 5
CAPTION_CLIPS = 40
SECONDS = 3.0
# MPEG-4 Part 2 in AVI as UCF-101 and MSVD ship; single-threaded so the bytes repeat.
MPEG4_AVI = ["-c:v", "mpeg4", "-q:v", "4", "-pix_fmt", "yuv420p", "-threads", "1", "-an"]


@dataclass
class EvalClip:
    relpath: str                      # under downstream/
    scene: Scene
    background: dict
    label: str = ""                   # shapes_actions: the class
    split: str = ""                   # shapes_actions: train | test
    captions: tuple[str, ...] = ()    # shapes_captions


def _action_scene(motion: str, rng: random.Random) -> Scene:
    count = rng.choice((1, 1, 2, 3))
    size = rng.randint(30, 42) if count == 1 else rng.randint(16, 24)
    position = MOVES[motion][1] if motion in MOVES else rng.choice(list(POSITIONS))
    return Scene(rng.choice(SHAPES), rng.choice(list(COLOURS)), count, position, motion, size)


def _fake_youtube_id(rng: random.Random) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    return "".join(rng.choice(alphabet) for _ in range(11))


def plan(seed: int) -> list[EvalClip]:
    """Every clip of both sets, a pure function of the seed."""
    clips: list[EvalClip] = []
    for c, (name, motion) in enumerate(ACTION_CLASSES.items()):
        for k in range(TEST_PER_CLASS + TRAIN_PER_CLASS):
            rng = video_rng(seed, c * 100 + k, "eval-actions")
            test = k < TEST_PER_CLASS
            group = k + 1 if test else 8 + k - TEST_PER_CLASS           # split 1: groups 1-7 test, 8-25 train
            file_name = f"v_{name}_g{group:02d}_c01.avi"
            clips.append(EvalClip(f"shapes_actions/UCF-101/{name}/{file_name}", _action_scene(motion, rng),
                                  random_background(rng), label=name, split="test" if test else "train"))
    for k in range(CAPTION_CLIPS):
        rng = video_rng(seed, k, "eval-captions")
        scene = next_scene(None, rng)
        start = rng.randint(0, 200)
        clip_id = f"{_fake_youtube_id(rng)}_{start}_{start + int(SECONDS)}"
        captions = tuple(self_contained_sentences(scene, rng))
        clips.append(EvalClip(f"shapes_captions/YouTubeClips/{clip_id}.avi", scene, random_background(rng),
                              captions=captions))
    return clips


def annotation_files(clips: list[EvalClip]) -> dict[str, str]:
    """Official-format annotation files (path under downstream/ -> text)."""
    actions = [c for c in clips if c.label]
    classes = sorted(ACTION_CLASSES)
    index = {name: i for i, name in enumerate(classes, start=1)}
    rel = lambda c: c.relpath.split("UCF-101/", 1)[1]  # noqa: E731 - "Class/v_Class_gNN_cNN.avi"
    lists = "shapes_actions/ucfTrainTestlist"
    files = {f"{lists}/classInd.txt": "".join(f"{index[c]} {c}\r\n" for c in classes),
             f"{lists}/trainlist01.txt": "".join(f"{rel(c)} {index[c.label]}\r\n" for c in actions if c.split == "train"),
             f"{lists}/testlist01.txt": "".join(f"{rel(c)}\r\n" for c in actions if c.split == "test")}
    captioned = [c for c in clips if c.captions]
    ids = [Path(c.relpath).stem for c in captioned]
    files["shapes_captions/test_list.txt"] = "".join(f"{i}\n" for i in ids)
    files["shapes_captions/captions_msvd.json"] = json.dumps({i: list(c.captions) for i, c in zip(ids, captioned)},
                                                             indent=1) + "\n"
    return files


DATASETS = {
    "shapes_actions": {"format": "ucf101", "task": "linear-probe, v2v",
                       "annotations": ["shapes_actions/ucfTrainTestlist/classInd.txt",
                                       "shapes_actions/ucfTrainTestlist/trainlist01.txt",
                                       "shapes_actions/ucfTrainTestlist/testlist01.txt"],
                       "videos": "shapes_actions/UCF-101"},
    "shapes_captions": {"format": "msvd", "task": "t2v",
                        "annotations": ["shapes_captions/test_list.txt", "shapes_captions/captions_msvd.json"],
                        "videos": "shapes_captions/YouTubeClips"},
}


def make_clip(clip: EvalClip, downstream_dir: Path) -> Path:
    """Draw and encode one clip (atomically, bit-exact encoder flags; an existing file is kept)."""
    from PIL import Image

    out = downstream_dir / clip.relpath
    if out.is_file():
        return out
    base = Image.fromarray(background(clip.background))
    n = int(round(SECONDS * FPS))
    frames = (draw_scene(base, clip.scene, (k + 0.5) / n if clip.scene.motion != "still" else 0.0).tobytes()
              for k in range(n))
    encode_stream(frames, out, timeout=120, codec=MPEG4_AVI)
    return out


def is_done(corpus_dir: Path, seed: int) -> bool:
    try:
        marker = json.loads((Path(corpus_dir) / "downstream" / DONE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return marker == {"version": VERSION, "seed": seed}


def ensure(corpus_dir: Path, seed: int, workers: int = 2) -> bool:
    """Make both sets under corpus_dir/downstream unless they are there for (VERSION, seed); True when made.
    The caller holds the corpus lock (pipeline.demo.corpus.generate)."""
    down = Path(corpus_dir) / "downstream"
    if is_done(corpus_dir, seed):
        return False
    for folder in FOLDERS:                      # another version's or seed's clips, or a killed run's
        shutil.rmtree(down / folder, ignore_errors=True)
    clips = plan(seed)
    # Threads are enough: each clip's time is mostly its ffmpeg child encoding.
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(lambda c: make_clip(c, down), clips))
    for rel, text in annotation_files(clips).items():
        write_text(down / rel, text)
    write_json(down / "eval_sets.json", DATASETS)
    write_json(down / DONE_FILE, {"version": VERSION, "seed": seed})
    return True

