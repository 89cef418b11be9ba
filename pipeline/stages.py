"""The job's stages as plain callables over a list of `VideoWork` items (no Ray here; run.py composes them).

Each stage takes the items of a batch, does its part for those still `ok`, and turns any per-input
problem into the item's one outcome: `StageError` -> failed (stage, error class, message), `SkipSample`
-> skipped (reason), any other exception -> failed with error class `internal_<Type>` (a bug, but it
never stops the job). Items already failed or skipped pass through untouched. Every stage adds its
wall time to `item.seconds[stage]`.

    fetch      pipeline.sources.fetch.fetch: the video (and captions) as local files in the scratch folder
    probe      pipeline.media.probe.probe: duration, fps, size, rotation, audio
    transcript pipeline.transcripts.load.load_words for rows with captions; rows without get their audio
               decoded in-process (pipeline.media.audio: 16 kHz mono int16 on the caption clock, carried in
               the item so the ASR actor needs no file)
    asr        pipeline.transcripts.asr (faster-whisper) on the rows that need it, model loaded once per instance
    segment    pipeline.samples.segment.plan_samples: TVTS spans, K windows, 16 frame times
    decode     pipeline.media.decode.decode_video: every sample of a video at once -> JPEG members + json
    embed      features.embed.FrameEmbedder (optional): clip.npy per sample

Downloads are deleted (pipeline.sources.fetch.cleanup, unless fetch.keep_downloads) as soon as an item is
done with them: after decode, or when it fails or is skipped. On a cluster, decode may run on another
node than fetch; it fetches again when the file is not there (fetch reuses finished scratch files).
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from pipeline import PIPELINE_VERSION
from pipeline.config import PipelineConfig, asr_enabled
from pipeline.errors import FAULT_ERRNOS, JobFault, SkipSample, StageError
from pipeline.samples.shards import ShardSample
from pipeline.watchdog import Stalled, StallWatch


@dataclasses.dataclass
class VideoWork:
    """One input video on its way through the stages."""

    order: int                       # position in the manifest (after de-duplication): the write order
    row: dict                        # pipeline.sources.rows.ManifestRow.to_dict()
    status: str = "ok"               # ok | skipped | failed
    stage: str | None = None         # failed: the stage
    error_class: str | None = None
    message: str = ""
    reason: str | None = None        # skipped: the reason
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    fetched: dict | None = None      # pipeline.sources.fetch.Fetched.to_dict()
    info: dict | None = None         # pipeline.media.probe.VideoInfo as a dict
    words: list | None = None        # [(word, start, end)]
    transcript_source: str | None = None
    language: str | None = None
    needs_asr: bool = False
    audio_pcm: bytes | None = None   # 16 kHz mono int16 samples on the caption clock, for the ASR stage
    plans: list | None = None        # pipeline.samples.segment.SamplePlan
    segment_rejects: dict[str, int] = dataclasses.field(default_factory=dict)
    samples: list[ShardSample] = dataclasses.field(default_factory=list)
    dropped_samples: int = 0
    dropped_reasons: dict[str, int] = dataclasses.field(default_factory=dict)  # error class -> samples

    @property
    def video_id(self) -> str:
        return self.row["video_id"]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fail(self, stage: str, error_class: str, message: str) -> None:
        self.status, self.stage, self.error_class, self.message = "failed", stage, error_class, message

    def skip(self, reason: str, message: str = "") -> None:
        self.status, self.reason, self.message = "skipped", reason, message

    def video_info(self):
        from pipeline.media.probe import VideoInfo

        return VideoInfo(**self.info)


@dataclasses.dataclass
class ShardTask:
    """One input shard (or the retried rows of one) on its way through the stages, as one unit of work:
    every stage runs on its `items`, the write stage (pipeline/write.py) turns them into the piece
    `piece_name(input_shard, attempt)` in the output."""

    input_shard: int
    attempt: int
    rows_digest: str                 # sha256 of the video ids of `items`, in order
    items: list[VideoWork]


def _cleanup(item: VideoWork, cfg: PipelineConfig) -> None:
    if item.fetched:
        from pipeline.sources.fetch import cleanup

        cleanup(item.fetched, cfg.fetch)


def run_stage(name: str, items: list[VideoWork], fn: Callable[[VideoWork], None], cfg: PipelineConfig) -> list[VideoWork]:
    """Apply `fn` to each ok item, turning exceptions into outcomes, timing it under `name`; a step with
    no progress for `stall.timeout_s` is retried, then fails with `stalled` (pipeline.watchdog)."""
    watch = StallWatch(cfg.stall)
    for item in items:
        if not item.ok:
            continue
        started = time.perf_counter()
        try:
            watch.run(fn, item, f"{name} of {item.video_id}")
        except Stalled as exc:
            item.fail(name, "stalled", str(exc))
        except StageError as exc:
            item.fail(exc.stage or name, exc.error_class, exc.message)
        except SkipSample as exc:
            item.skip(exc.reason, exc.message)
        except JobFault:
            raise
        except OSError as exc:
            if exc.errno in FAULT_ERRNOS:   # the disk we write to is full or read-only: every video would fail
                raise JobFault(f"{name} of {item.video_id}: {exc.strerror}: {exc.filename or ''}".rstrip(": "))
            item.fail(name, f"internal_{type(exc).__name__}", f"{item.video_id}: {exc}"[:500])
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the job; it is counted by class
            item.fail(name, f"internal_{type(exc).__name__}", f"{item.video_id}: {exc}"[:500])
        finally:
            item.seconds[name] = item.seconds.get(name, 0.0) + time.perf_counter() - started
        if not item.ok:
            item.audio_pcm = None
            _cleanup(item, cfg)
    return items


def scratch_dir(cfg: PipelineConfig) -> Path:
    """Downloads, on the node that runs the stage: output.scratch_dir, else <output.dir>/scratch for a
    local output, else a folder of this node's temp dir named after the output URL (stable: reruns resume)."""
    from common import storage

    if cfg.output.scratch_dir:
        return Path(cfg.output.scratch_dir)
    if storage.is_local(cfg.output.dir):
        return storage.local_path(cfg.output.dir) / "scratch"
    return storage.local_state_dir(cfg.output.dir, root=Path(tempfile.gettempdir()) / "tvts-scratch")


class FetchStage:
    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg

    def one(self, item: VideoWork) -> None:
        from pipeline.sources.fetch import fetch
        from pipeline.sources.rows import ManifestRow

        fetched = fetch(ManifestRow.from_dict(item.row), scratch_dir(self.cfg), self.cfg.fetch)
        item.fetched = fetched.to_dict()

    def __call__(self, items: list[VideoWork]) -> list[VideoWork]:
        return run_stage("fetch", items, self.one, self.cfg)


class ProbeStage:
    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg

    def one(self, item: VideoWork) -> None:
        from pipeline.media.probe import probe

        item.info = dataclasses.asdict(probe(item.fetched["video_path"], self.cfg.probe))

    def __call__(self, items: list[VideoWork]) -> list[VideoWork]:
        return run_stage("probe", items, self.one, self.cfg)


class TranscriptStage:
    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg

    def one(self, item: VideoWork) -> None:
        from pipeline.transcripts.load import load_words

        captions = item.fetched.get("captions_path")
        if captions:
            transcript = load_words(captions, clean=self.cfg.transcript.clean, duration=item.info["duration"])
            from pipeline.transcripts.clean import ensure_language

            ensure_language(transcript, self.cfg.transcript.clean, captions)
            item.words = [tuple(w) for w in transcript.words]
            item.transcript_source, item.language = transcript.source_kind, transcript.language
            return
        if not asr_enabled(self.cfg):
            raise SkipSample("no_transcript", f"{item.video_id}: no captions and ASR is disabled")
        if not item.info.get("has_audio"):
            raise SkipSample("no_transcript", f"{item.video_id}: no captions and no audio stream for ASR")
        from pipeline.media.audio import decode_pcm16

        item.audio_pcm = decode_pcm16(item.fetched["video_path"], item.video_info().clock_zero,
                                      self.cfg.decode.audio_sample_rate)
        item.needs_asr = True

    def __call__(self, items: list[VideoWork]) -> list[VideoWork]:
        return run_stage("transcript", items, self.one, self.cfg)


class AsrStage:
    """faster-whisper on the items that need it (pipeline.transcripts.asr.Transcriber): model loaded once, in __init__."""

    def __init__(self, cfg: PipelineConfig, model_path: str | None = None):
        self.cfg = cfg
        self.transcriber = None
        if asr_enabled(cfg):
            from pipeline.transcripts.asr import Transcriber

            self.transcriber = Transcriber(cfg.asr, model_path)

    def one(self, item: VideoWork) -> None:
        if not item.needs_asr:
            return
        import numpy as np

        pcm = np.frombuffer(item.audio_pcm or b"", dtype=np.int16)
        item.audio_pcm = None
        result = self.transcriber.transcribe(pcm.astype(np.float32) / 32768.0)
        item.words = [tuple(w) for w in result.words]
        item.transcript_source, item.language = "asr", result.language
        item.needs_asr = False

    def __call__(self, items: list[VideoWork]) -> list[VideoWork]:
        if self.transcriber is None:
            return items
        return run_stage("asr", items, self.one, self.cfg)


class SegmentStage:
    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg

    def one(self, item: VideoWork) -> None:
        from pipeline.samples.segment import plan_samples
        from pipeline.transcripts.types import Word

        if item.needs_asr:   # run.py routes such videos through the ASR actors; never pair frames with no words
            raise StageError("asr", "asr_not_run", f"{item.video_id}: needs ASR words but went past the ASR stage")
        words = [Word(*w) for w in item.words or []]
        # Spans lie within the picture (caption clock 0 .. the video stream's end), not the container's
        # duration: audio running on after the picture would otherwise get samples of a repeated frame.
        plans, rejects = plan_samples(item.video_id, item.video_info().video_duration, words, self.cfg.segment)
        item.segment_rejects = dict(rejects)
        if not plans:
            reason = Counter(rejects).most_common(1)[0][0] if rejects else "no_samples"
            raise SkipSample(reason, f"{item.video_id}: no sample passes the segment filters ({dict(rejects)})")
        item.plans = list(plans)

    def __call__(self, items: list[VideoWork]) -> list[VideoWork]:
        return run_stage("segment", items, self.one, self.cfg)


def sample_json(item: VideoWork, plan: Any, frames: Any, cfg: PipelineConfig) -> dict:
    """The shard's `json` member (ARCHITECTURE.md, "Sample in a shard")."""
    planned = plan.to_json()
    meta = dict(item.row.get("meta") or {})
    return {
        "key": plan.key,
        "video_id": item.video_id,
        "source": item.row.get("url"),
        "span": planned["span"],
        "windows": planned["windows"],
        "frames": {"times": list(plan.frame_times), "decoded_times": frames.times,
                   "per_bin": cfg.segment.frames_per_bin, "width": frames.width, "height": frames.height},
        "video": item.video_info().to_json(),
        "transcript": {"source": item.transcript_source, "language": item.language},
        "meta": meta,
        "pipeline_version": PIPELINE_VERSION,
    }


class DecodeStage:
    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg

    def _video_path(self, item: VideoWork) -> str:
        path = item.fetched["video_path"]
        if "://" in path or os.path.exists(path):
            return path
        # Another node fetched it (Ray placed decode elsewhere): fetch here; finished files are reused.
        from pipeline.sources.fetch import fetch
        from pipeline.sources.rows import ManifestRow

        item.fetched = fetch(ManifestRow.from_dict(item.row), scratch_dir(self.cfg), self.cfg.fetch).to_dict()
        return item.fetched["video_path"]

    def one(self, item: VideoWork) -> None:
        from pipeline.media.decode import check_frame_times, decode_video

        path = self._video_path(item)
        info = item.video_info()
        first_error: StageError | None = None
        # All samples of the video at once: the in-process decoder reads it in one pass, sharing frames
        # between overlapping spans. A failure of the whole video (unreadable, timeout) raises here.
        decoded = decode_video(path, info, [plan.frame_times for plan in item.plans], self.cfg.decode)
        for plan, frames in zip(item.plans, decoded):
            try:
                if isinstance(frames, StageError):
                    raise frames
                # Frames from other times than the windows they are paired with (a clock mapped
                # wrongly, the last frame standing in past the picture's end) are never written.
                why = check_frame_times(plan.frame_times, frames.times, info.fps)
                if why is not None:
                    raise StageError("decode", "frame_time_mismatch", f"{item.video_id} {plan.key}: {why}")
            except StageError as exc:
                item.dropped_samples += 1
                item.dropped_reasons[exc.error_class] = item.dropped_reasons.get(exc.error_class, 0) + 1
                first_error = first_error or exc
                continue
            members = {f"{i:03d}.jpg": jpeg for i, jpeg in enumerate(frames.jpegs)}
            meta = sample_json(item, plan, frames, self.cfg)
            members["json"] = json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8")
            n_words = sum(len(w["words"]) for w in meta["windows"])
            item.samples.append(ShardSample(key=plan.key, video_id=item.video_id, members=members,
                                            span_start=plan.start, span_end=plan.end, n_words=n_words))
        item.plans = None
        _cleanup(item, self.cfg)  # the frames are in memory now: the download is no longer needed
        if not item.samples and first_error is not None:
            raise first_error

    def __call__(self, items: list[VideoWork]) -> list[VideoWork]:
        return run_stage("decode", items, self.one, self.cfg)


class EmbedStage:
    """open_clip features of each sample's frames -> `clip.npy` (float16 [n_frames, D]); model per actor."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        from features.embed import FrameEmbedder

        e = cfg.embed
        self.embedder = FrameEmbedder(model=e.model, pretrained=e.pretrained, random_init=e.random_init,
                                      device=e.device, seed=cfg.seed, batch_size=e.batch_size)

    def one(self, item: VideoWork) -> None:
        import numpy as np

        for sample in item.samples:
            frames = [sample.members[f"{i:03d}.jpg"] for i in range(len(sample.members)) if f"{i:03d}.jpg" in sample.members]
            feats = np.asarray(self.embedder.embed(frames), dtype=np.float16)
            buffer = io.BytesIO()
            np.save(buffer, feats)
            sample.members["clip.npy"] = buffer.getvalue()
            meta = json.loads(sample.members["json"])
            meta.setdefault("meta", {})["clip_model"] = self.embedder.fingerprint
            sample.members["json"] = json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8")

    def __call__(self, items: list[VideoWork]) -> list[VideoWork]:
        return run_stage("embed", items, self.one, self.cfg)


def run_local(items: list[VideoWork], cfg: PipelineConfig) -> list[VideoWork]:
    """All stages in this process, in order (tests, debugging; the job uses Ray, pipeline/run.py)."""
    stages: list[Callable] = [FetchStage(cfg), ProbeStage(cfg), TranscriptStage(cfg)]
    if asr_enabled(cfg):
        stages.append(AsrStage(cfg))
    stages += [SegmentStage(cfg), DecodeStage(cfg)]
    if cfg.embed.enabled:
        stages.append(EmbedStage(cfg))
    for stage in stages:
        items = stage(items)
    return items
