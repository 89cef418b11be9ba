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
    shapes_svo/       SVO-Probes, our jsonl (format svo): 3 x 24 probes, a sentence, a positive and a negative image
        svo_probes.jsonl                             {"sentence", "pos_image", "neg_image", "neg_type", "pos_triplet", ...}
        images/NNN_pos.png, NNN_neg.png              320x240 PNG frames drawn by the corpus renderer
        .done.json                                   written last: SVO_VERSION + seed
    eval_sets.json                                   per set: format, annotation files, video (image) folder
    .eval-sets-done.json                             written last: version + seed (of the two clip sets)

Classes are motions (MoveLeft, MoveRight, MoveUp, MoveDown, Grow, Shrink): shape, colour, count, size,
place and background are drawn at random per clip, so only what moves and how tells a class, the kind
of thing the narration ("A red star moves to the left.") pairs with the frames in pretraining. UCF-101
groups as the official split 1 numbers them: groups 1-7 test, 8-25 train. Captions are the corpus's
"scenes" sentences of the clip's scene (each names colour and shape; MSVD has ~40 captions per clip,
these 2-4).

SVO probes (shapes_svo): the sentence is the main sentence the narration says of a moving scene ("A red
star moves to the left.", "Two blue squares grow on the left."): subject = the shape, verb = the motion
(the six of shapes_actions), object = the colour (the sentences have no grammatical object; the colour
is the other thing they name that a frame shows). Per type 24 probes; the positive image is the scene's
frame at 3/4 of its motion, the negative the same frame (same background, count, size, place) with one
of shape, motion or colour changed (a verb negative moves to its own end place: "moves up" ends at the
top). One frame cannot show a motion: at 3/4 of it a mover is most of the way to the side it moves to
and a growing shape is larger than a shrinking one, which is all a verb negative leaves to see. Verbs
are what SVO-Probes is hard on (the paper's lowest scores are on verb negatives); here even more so.

Made once per (version, seed) beside the corpus (`ensure`), about 15 s on 2 cores (shapes_svo a few of them), and
kept across corpus reruns: a corpus that predates these sets gains them without being made again (so its
demo outputs stay valid), and one that has the first two gains shapes_svo alone. shapes_svo has its own
marker, so the clip sets' marker stays what generators before it wrote and read (a corpus shared with
one of them is not remade back and forth). Deterministic: a pure function of the seed, written with
bit-exact encoder flags (the PNGs are lossless).
"""
from __future__ import annotations

import io
import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from common.atomic import write_bytes, write_json, write_text
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

__all__ = ["VERSION", "SVO_VERSION", "ACTION_CLASSES", "EvalClip", "SvoProbe", "plan", "svo_plan",
           "annotation_files", "DATASETS", "ensure", "is_done"]

# Bump a version when what its sets hold changes: only those are made again.
VERSION = "1"                         # shapes_actions + shapes_captions, marker downstream/.eval-sets-done.json
SVO_VERSION = "1"                     # shapes_svo, its own marker inside its folder
DONE_FILE = ".eval-sets-done.json"
SVO_DONE_FILE = ".done.json"
CLIP_SETS = ("shapes_actions", "shapes_captions")
# UCF-style class name -> the scene motion it shows.
ACTION_CLASSES = {"MoveLeft": "left", "MoveRight": "right", "MoveUp": "up", "MoveDown": "down",
                  "Grow": "grow", "Shrink": "shrink"}
TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 5
CAPTION_CLIPS = 40
SVO_PER_TYPE = 24
SVO_FRAME_AT = 0.75                   # fraction of the motion the probe images show
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
    "shapes_svo": {"format": "svo", "task": "svo-probes", "annotations": ["shapes_svo/svo_probes.jsonl"],
                   "images": "shapes_svo/images"},
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


# ---- shapes_svo: a sentence, a positive and a negative image ------------------------------------------
SVO_TYPES = ("subject", "verb", "object")


@dataclass
class SvoProbe:
    index: int
    neg_type: str                     # what the negative changes: subject (shape), verb (motion), object (colour)
    sentence: str                     # the narration's main sentence of `positive`
    positive: Scene
    negative: Scene
    background: dict

    def image(self, side: str) -> str:
        """The image's path relative to the jsonl ("images/007_pos.png")."""
        return f"images/{self.index:03d}_{side}.png"


def _svo_negative(scene: Scene, kind: str, rng: random.Random) -> Scene:
    """`scene` with exactly its subject (shape), verb (motion) or object (colour) changed."""
    if kind == "subject":
        return replace(scene, shape=rng.choice([s for s in SHAPES if s != scene.shape]))
    if kind == "object":
        return replace(scene, colour=rng.choice([c for c in COLOURS if c != scene.colour]))
    motion = rng.choice([m for m in ACTION_CLASSES.values() if m != scene.motion])
    # A move ends at its own place (MOVES); a resize stays where the shapes were.
    return replace(scene, motion=motion, position=MOVES[motion][1] if motion in MOVES else scene.position)


def svo_plan(seed: int) -> list[SvoProbe]:
    """SVO_PER_TYPE probes per negative type, every motion equally often; a pure function of the seed."""
    motions = list(ACTION_CLASSES.values())
    probes = []
    for t, kind in enumerate(SVO_TYPES):
        for k in range(SVO_PER_TYPE):
            index = t * SVO_PER_TYPE + k
            rng = video_rng(seed, index, "eval-svo")
            scene = _action_scene(motions[k % len(motions)], rng)
            sentence = self_contained_sentences(scene, rng)[0]
            probes.append(SvoProbe(index, kind, sentence, scene, _svo_negative(scene, kind, rng), random_background(rng)))
    return probes


def _triplet(scene: Scene) -> str:
    """SVO-Probes' `pos_triplet` form: "star,moves left,red"."""
    verb = {"grow": "grows", "shrink": "shrinks"}.get(scene.motion, f"moves {scene.motion}")
    return f"{scene.shape},{verb},{scene.colour}"


def svo_jsonl(probes: list[SvoProbe]) -> str:
    return "".join(json.dumps({"sentence": p.sentence, "pos_image": p.image("pos"), "neg_image": p.image("neg"),
                               "neg_type": p.neg_type, "pos_triplet": _triplet(p.positive),
                               "neg_triplet": _triplet(p.negative)}) + "\n" for p in probes)


def make_svo(probes: list[SvoProbe], downstream_dir: Path) -> None:
    """Both images of every probe (PNG, the renderer's frame at SVO_FRAME_AT of the motion) and the jsonl."""
    from PIL import Image

    folder = downstream_dir / "shapes_svo"
    for probe in probes:
        base = Image.fromarray(background(probe.background))
        for side, scene in (("pos", probe.positive), ("neg", probe.negative)):
            buffer = io.BytesIO()
            draw_scene(base, scene, SVO_FRAME_AT).save(buffer, format="PNG")
            write_bytes(folder / probe.image(side), buffer.getvalue())
    write_text(folder / "svo_probes.jsonl", svo_jsonl(probes))


# ---- which sets are made --------------------------------------------------------------------------------
def _marker_is(path: Path, expected: dict) -> bool:
    try:
        return json.loads(path.read_text()) == expected
    except (OSError, ValueError):
        return False


def _clip_sets_done(down: Path, seed: int) -> bool:
    return _marker_is(down / DONE_FILE, {"version": VERSION, "seed": seed})


def _svo_done(down: Path, seed: int) -> bool:
    return _marker_is(down / "shapes_svo" / SVO_DONE_FILE, {"version": SVO_VERSION, "seed": seed})


def is_done(corpus_dir: Path, seed: int) -> bool:
    down = Path(corpus_dir) / "downstream"
    return _clip_sets_done(down, seed) and _svo_done(down, seed)


def ensure(corpus_dir: Path, seed: int, workers: int = 2) -> bool:
    """Make the sets under corpus_dir/downstream that are not there for (their version, seed); True when
    any was made. A set that is there is left as it is (its files keep their bytes and mtimes, so the
    features cached from them stay valid). The caller holds the corpus lock (pipeline.demo.corpus.generate)."""
    down = Path(corpus_dir) / "downstream"
    made = False
    if not _clip_sets_done(down, seed):
        for folder in CLIP_SETS:                # another version's or seed's clips, or a killed run's
            shutil.rmtree(down / folder, ignore_errors=True)
        clips = plan(seed)
        # Threads are enough: each clip's time is mostly its ffmpeg child encoding.
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(lambda c: make_clip(c, down), clips))
        for rel, text in annotation_files(clips).items():
            write_text(down / rel, text)
        write_json(down / "eval_sets.json", DATASETS)
        write_json(down / DONE_FILE, {"version": VERSION, "seed": seed})
        made = True
    if not _svo_done(down, seed):
        shutil.rmtree(down / "shapes_svo", ignore_errors=True)
        make_svo(svo_plan(seed), down)
        write_json(down / "eval_sets.json", DATASETS)
        write_json(down / "shapes_svo" / SVO_DONE_FILE, {"version": SVO_VERSION, "seed": seed})
        made = True
    return made
