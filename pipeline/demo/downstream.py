"""The demo's downstream evaluation set: three datasets in their official annotation formats, with
planted leaks of the demo corpus among unrelated clips.

Layout under DIR/downstream/ (paths as each official format's readers expect them):

    msrvtt/MSRVTT_JSFUSION_test.csv          key,vid_key,video_id,sentence (the CLIP4Clip 1k-A test csv)
    msrvtt/videos/all/<video_id>.mp4          e.g. videos/all/video7012.mp4
    ucf101/ucfTrainTestlist/classInd.txt      "1 ApplyEyeMakeup" (1-based; the classes this set uses), CRLF
    ucf101/ucfTrainTestlist/trainlist01.txt   "Class/v_Class_gXX_cYY.avi <label>", CRLF
    ucf101/ucfTrainTestlist/testlist01.txt    "Class/v_Class_gXX_cYY.avi", CRLF
    ucf101/UCF-101/<Class>/v_<Class>_gXX_cYY.avi   (MPEG-4 Part 2 in AVI, 320x240, 25 fps, no audio)
    kinetics400/kinetics-400_val.csv          label,youtube_id,time_start,time_end,split (CVDF release form)
    kinetics400/val/<label>/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4
    datasets.json                             per dataset: format, annotation files, video folder (relative)
    ground_truth.json                         the planted leaks and the unrelated clips (tests only)

Downstream video ids: MSR-VTT `video_id` (video7012), UCF-101 the file stem (v_Biking_g03_c01),
Kinetics `<youtube_id>_<time_start:06d>_<time_end:06d>` (the file stem).

Planted leaks (kind "visual"): six segments of corpus videos, each re-encoded and transformed
(stronger compression, upscaling, centre crop, fps + brightness change, resize to short side 256, corner
crop + squash), two per dataset. One leak of kind "source_id": a Kinetics row whose youtube_id is a
corpus video's `meta.youtube_id`; its clip's pixels are unrelated, so only the id gives it away.
Unrelated clips: ffmpeg test sources (testsrc2, mandelbrot, life, cellauto, smptebars,
rgbtestsrc) and a moving drawbox, plus two "hard negatives": shape videos drawn by the corpus renderer
from scripts that are not in the corpus.
"""
from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.demo.render import AAC, X264, encode_lavfi, encode_stream, frames, transcode
from pipeline.demo.script import FPS, VideoScript, make_script, normalize_words, video_rng

MPEG4_AVI = ["-c:v", "mpeg4", "-q:v", "4", "-threads", "1", "-an"]
KINETICS_LABELS = ("abseiling", "archery", "bowling", "yoga", "snowboarding", "skateboarding", "welding", "yawning")
UCF_CLASSES = ("ApplyEyeMakeup", "Basketball", "Biking", "Drumming", "JumpRope", "PlayingGuitar", "Rowing", "YoYo")
HARD_NEGATIVE_BASE = 100_000  # script indices of the hard negatives (never part of a corpus)


@dataclass
class Clip:
    """One downstream video to make: from a corpus segment ("leak"), a test source or a script."""

    dataset: str
    downstream_video_id: str
    relpath: str  # under DIR/downstream
    seconds: float
    description: str
    kind: str = "unrelated"  # "visual" | "source_id" | "unrelated"
    # leak fields
    corpus_video_id: str | None = None
    corpus_start: float | None = None
    corpus_end: float | None = None
    transform: str = ""
    video_filters: str = ""
    codec: list[str] = field(default_factory=list)
    fps: int | None = None
    # unrelated fields
    lavfi: str = ""
    lavfi_filters: str = ""
    size: str = "320x240"
    hard_negative_index: int | None = None
    annotation: dict = field(default_factory=dict)  # dataset-specific row fields


def _fake_id(rng) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    return "".join(rng.choice(alphabet) for _ in range(11))


def plan(seed: int, scripts: list[VideoScript]) -> list[Clip]:
    """Every downstream clip, a pure function of the seed and the corpus scripts."""
    rng = video_rng(seed, 0, "downstream")
    n = len(scripts)
    clips: list[Clip] = []
    msr_ids = iter(rng.sample(range(7010, 10000), 8))
    ucf_groups = itertools.count(1)

    def segment(k: int, seconds: float) -> tuple[VideoScript, float]:
        script = scripts[(k * 5 + 1) % n]
        start = round(rng.uniform(0.5, script.duration - seconds - 0.5), 1)
        return script, start

    def scene_text(script: VideoScript, t: float) -> str:
        step = next(s for s in script.steps if s.start <= t < s.end)
        return " ".join(normalize_words(step.main_sentence))  # e.g. "a red diamond moves to the left"

    def msrvtt(kind_args: dict, description: str, seconds: float) -> Clip:
        vid = f"video{next(msr_ids)}"
        return Clip("msrvtt", vid, f"msrvtt/videos/all/{vid}.mp4", seconds, description, **kind_args)

    def ucf(kind_args: dict, description: str, seconds: float, cls: str, train: bool) -> Clip:
        group = next(ucf_groups) + (7 if train else 0)  # official split 1: groups 1-7 test, 8-25 train
        name = f"v_{cls}_g{group:02d}_c{rng.randint(1, 4):02d}"
        return Clip("ucf101", name, f"ucf101/UCF-101/{cls}/{name}.avi", seconds, description,
                    annotation={"class": cls, "split": "train" if train else "test"}, **kind_args)

    def kinetics(kind_args: dict, description: str, label: str, youtube_id: str, start: int) -> Clip:
        vid = f"{youtube_id}_{start:06d}_{start + 10:06d}"
        return Clip("kinetics400", vid, f"kinetics400/val/{label}/{vid}.mp4", 10.0, description,
                    annotation={"label": label, "youtube_id": youtube_id, "time_start": start,
                                "time_end": start + 10, "split": "val"}, **kind_args)

    leak_specs = [
        ("msrvtt", 12.0, "re-encoded at lower quality (x264 crf 34)", "", X264[:4] + ["-crf", "34"] + X264[6:] + AAC, None),
        ("msrvtt", 12.0, "upscaled to 480x360 and re-encoded", "scale=480:360", X264 + AAC, None),
        ("ucf101", 7.0, "centre crop 80%, resized to 320x240, 25 fps, MPEG-4 AVI", "crop=iw*0.8:ih*0.8,scale=320:240", MPEG4_AVI, 25),
        ("ucf101", 7.0, "brightness +0.12, 25 fps, MPEG-4 AVI", "eq=brightness=0.12", MPEG4_AVI, 25),
        ("kinetics400", 10.0, "resized to short side 256 (342x256)", "scale=342:256", X264 + AAC, None),
        ("kinetics400", 10.0, "top-left crop 70%, squashed to 224x224", "crop=iw*0.7:ih*0.7:0:0,scale=224:224", X264 + AAC, None),
    ]
    for k, (dataset, seconds, transform, vf, codec, fps) in enumerate(leak_specs):
        script, start = segment(k, seconds)
        leak = {"kind": "visual", "corpus_video_id": script.video_id, "corpus_start": start,
                "corpus_end": round(start + seconds, 1), "transform": transform, "video_filters": vf,
                "codec": codec, "fps": fps}
        description = scene_text(script, start + seconds / 2)
        if dataset == "msrvtt":
            clips.append(msrvtt(leak, description, seconds))
        elif dataset == "ucf101":
            clips.append(ucf(leak, description, seconds, UCF_CLASSES[k], train=k % 2 == 1))
        else:
            clips.append(kinetics(leak, description, KINETICS_LABELS[k], _fake_id(rng), rng.randint(0, 300)))

    # The source-id leak: the corpus video's YouTube id in a Kinetics row; the clip itself is unrelated.
    target = scripts[(len(leak_specs) * 5 + 1) % n]
    id_start = rng.randint(0, int(target.duration) - 11)
    clips.append(kinetics(
        {"kind": "source_id", "corpus_video_id": target.video_id, "corpus_start": float(id_start),
         "corpus_end": float(id_start + 10), "transform": "none: unrelated pixels, the row names the corpus video's YouTube id",
         "lavfi": "life=ratio=0.3:mold=10:seed=7", "codec": X264 + AAC},
        "a game of life pattern", "archery", target.youtube_id, id_start))

    unrelated = [
        ("msrvtt", "testsrc2", "", "a test pattern with a moving counter"),
        ("msrvtt", "mandelbrot", "", "a zooming mandelbrot fractal"),
        ("msrvtt", "smptebars", "hue=H=2*PI*t/10", "colour bars slowly changing hue"),
        ("msrvtt", None, "", "shapes on a striped background"),
        ("ucf101", "life=ratio=0.5:seed=3", "", "cells of a game of life"),
        ("ucf101", "cellauto=rule=110:seed=11", "", "a cellular automaton growing"),
        ("ucf101", None, "", "shapes on a striped background"),
        ("kinetics400", "testsrc2", "hue=h=t*40,boxblur=4", "a blurred, colour-cycling test pattern"),
        ("kinetics400", "rgbtestsrc", "boxblur=2", "a blurred rgb test pattern"),
        ("kinetics400", "color=c=0x203040",
         "drawbox=x='mod(t*60\\,280)':y=100:w=40:h=40:color=yellow:t=fill", "a yellow square sliding right"),
    ]
    hard_negatives = itertools.count(HARD_NEGATIVE_BASE)
    for k, (dataset, source, filters, description) in enumerate(unrelated):
        args: dict = {"lavfi": source or "", "lavfi_filters": filters, "codec": X264 + AAC}
        if source is None:
            args["hard_negative_index"] = next(hard_negatives)
        if dataset == "msrvtt":
            clips.append(msrvtt(args, description, 10.0))
        elif dataset == "ucf101":
            args["codec"], args["fps"] = MPEG4_AVI, 25
            clips.append(ucf(args, description, 7.0, UCF_CLASSES[-1 - k % 3], train=k % 2 == 0))
        else:
            clips.append(kinetics(args, description, KINETICS_LABELS[-1 - k % 3], _fake_id(rng), rng.randint(0, 300)))
    return clips


def make_clip(clip: Clip, corpus_dir: Path, seed: int, narration: str) -> Path:
    """Write one downstream clip (atomically; an existing file is kept). Runs in a worker process."""
    out = corpus_dir / "downstream" / clip.relpath
    if out.is_file():
        return out
    if clip.kind == "visual":
        src = corpus_dir / "videos" / f"{clip.corpus_video_id}.mp4"
        return transcode(src, out, clip.corpus_start, clip.corpus_end - clip.corpus_start, clip.video_filters,
                         clip.codec, fps=clip.fps)
    if clip.hard_negative_index is not None:
        script = make_script(seed, clip.hard_negative_index, with_audio=False, narration=narration)
        shapes = itertools.islice(frames(script), int(clip.seconds * FPS))
        if clip.codec != MPEG4_AVI:
            encode_stream(shapes, out, timeout=120)
            return out
        tmp = out.with_name(f".{out.stem}.src.mp4")
        try:
            encode_stream(shapes, tmp, timeout=120)
            return transcode(tmp, out, 0.0, clip.seconds, "", clip.codec, fps=clip.fps)
        finally:
            tmp.unlink(missing_ok=True)
    return encode_lavfi(clip.lavfi, clip.seconds, out, clip.lavfi_filters, codec=clip.codec, fps=clip.fps or FPS)


def annotation_files(clips: list[Clip]) -> dict[str, str]:
    """Official-format annotation files (relative path -> text)."""
    files: dict[str, str] = {}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["key", "vid_key", "video_id", "sentence"])
    for i, c in enumerate(x for x in clips if x.dataset == "msrvtt"):
        writer.writerow([f"ret{i}", c.downstream_video_id.replace("video", "msr"), c.downstream_video_id, c.description])
    files["msrvtt/MSRVTT_JSFUSION_test.csv"] = buf.getvalue()

    ucf = [c for c in clips if c.dataset == "ucf101"]
    classes = sorted({c.annotation["class"] for c in ucf})
    index = {cls: i for i, cls in enumerate(classes, start=1)}
    files["ucf101/ucfTrainTestlist/classInd.txt"] = "".join(f"{index[c]} {c}\r\n" for c in classes)
    rel = lambda c: c.relpath.split("UCF-101/", 1)[1]  # noqa: E731 - "Class/v_Class_gXX_cYY.avi"
    files["ucf101/ucfTrainTestlist/trainlist01.txt"] = "".join(
        f"{rel(c)} {index[c.annotation['class']]}\r\n" for c in ucf if c.annotation["split"] == "train")
    files["ucf101/ucfTrainTestlist/testlist01.txt"] = "".join(
        f"{rel(c)}\r\n" for c in ucf if c.annotation["split"] == "test")

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
    for c in clips:
        if c.dataset == "kinetics400":
            a = c.annotation
            writer.writerow([a["label"], a["youtube_id"], a["time_start"], a["time_end"], a["split"]])
    files["kinetics400/kinetics-400_val.csv"] = buf.getvalue()
    return files


DATASETS = {
    "msrvtt": {"format": "msrvtt_jsfusion_csv", "annotations": ["msrvtt/MSRVTT_JSFUSION_test.csv"],
               "videos": "msrvtt/videos/all", "video_file": "{video_id}.mp4"},
    "ucf101": {"format": "ucf101_splits", "annotations": ["ucf101/ucfTrainTestlist/classInd.txt",
                                                          "ucf101/ucfTrainTestlist/trainlist01.txt",
                                                          "ucf101/ucfTrainTestlist/testlist01.txt"],
               "videos": "ucf101/UCF-101", "video_file": "{list_path}"},
    "kinetics400": {"format": "kinetics_csv", "annotations": ["kinetics400/kinetics-400_val.csv"],
                    "videos": "kinetics400/val",
                    "video_file": "{label}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"},
}


def ground_truth(clips: list[Clip], downstream_dir: Path) -> dict:
    leaks, unrelated = [], []
    for c in clips:
        row = {"dataset": c.dataset, "downstream_video_id": c.downstream_video_id,
               "path": str(downstream_dir / c.relpath), "relpath": c.relpath}
        if c.kind == "unrelated":
            row.update(source=c.lavfi or "demo renderer (a script not in the corpus)",
                       hard_negative=c.hard_negative_index is not None)
            unrelated.append(row)
        else:
            row.update(kind=c.kind, corpus_video_id=c.corpus_video_id, corpus_start=c.corpus_start,
                       corpus_end=c.corpus_end, transform=c.transform)
            leaks.append(row)
    return {"leaks": leaks, "unrelated": unrelated}
