"""The project is an installed package: its commands run from any working directory, with no PYTHONPATH."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_elsewhere(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(list(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("module", ["pipeline", "pipeline.demo", "dedup", "training.pretrain", "training.evaluate"])
def test_module_help_from_another_folder(tmp_path, module):
    result = run_elsewhere(tmp_path, sys.executable, "-m", module, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()


def test_words_and_describe_from_another_folder(tmp_path, shared_data):
    vtt = sorted((shared_data / "youtube_vtt").glob("*.vtt"))[0]
    words = run_elsewhere(tmp_path, sys.executable, "-m", "pipeline", "words", str(vtt))
    assert words.returncode == 0, words.stderr[-2000:]
    first = json.loads(words.stdout.splitlines()[0])
    assert set(first) == {"word", "start", "end"} and first["end"] >= first["start"]
    described = run_elsewhere(tmp_path, sys.executable, "-m", "training", "describe", "--preset", "tiny")
    assert described.returncode == 0, described.stderr[-2000:]
    counts = json.loads(described.stdout)
    assert counts["preset"] == "tiny" and min(counts["video"], counts["text"], counts["sort"]) > 0
    assert counts["total"] >= counts["video"] + counts["text"] + counts["sort"]


def test_console_scripts_are_installed(tmp_path):
    bin_dir = Path(sys.executable).parent
    for name in ("tvts-pipeline", "tvts-demo-corpus", "tvts-dedup", "tvts-pretrain", "tvts-evaluate", "tvts-training"):
        script = bin_dir / name
        assert script.is_file() or shutil.which(name), f"{name} is not installed: run scripts/setup.sh"
    result = run_elsewhere(tmp_path, str(bin_dir / "tvts-pipeline"), "manifest", "--help")
    assert result.returncode == 0 and "convert" in result.stdout, result.stderr[-2000:]


def test_package_is_the_checkout():
    """The editable install points at this checkout, not at a stale copy in site-packages."""
    result = subprocess.run([sys.executable, "-c", "import pipeline, training; print(pipeline.__file__)"],
                            cwd="/", capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve() == ROOT / "pipeline" / "__init__.py"
