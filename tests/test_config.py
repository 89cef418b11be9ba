"""The typed config loader: YAML -> dataclasses, --set overrides, and its errors."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from common.config import ConfigError, add_config_args, load_config, load_from_args


@dataclass
class Input:
    manifest: str = ""
    formats: list[str] = field(default_factory=lambda: ["jsonl"])


@dataclass
class Output:
    dir: str = "out"


@dataclass
class Train:
    max_steps: int = 10
    lr: float = 1e-4
    resume: bool = False
    schedule: Literal["step", "cosine"] = "step"
    eval_every: Optional[int] = None

    def validate(self) -> None:
        if self.max_steps < 0:
            raise ConfigError("config key 'train.max_steps' must be >= 0")


@dataclass
class JobConfig:
    seed: int = 0
    input: Input = field(default_factory=Input)
    output: Output = field(default_factory=Output)
    train: Train = field(default_factory=Train)


def write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_flat_file_and_overrides(tmp_path):
    path = write(tmp_path, "seed: 3\ninput:\n  manifest: m.jsonl\ntrain:\n  lr: 1\n")
    cfg = load_config(JobConfig, path, ["train.max_steps=7", "output.dir=/tmp/x", "train.schedule=cosine",
                                       "input.formats=[csv, parquet]", "train.eval_every=null"])
    assert cfg.seed == 3 and cfg.input.manifest == "m.jsonl"
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.max_steps == 7 and cfg.output.dir == "/tmp/x"
    assert cfg.train.schedule == "cosine" and cfg.input.formats == ["csv", "parquet"]
    assert cfg.train.eval_every is None


def test_float_accepts_exponent_without_dot(tmp_path):
    # YAML 1.1 parses 5e-4 as a string; a user writing it means a number.
    cfg = load_config(JobConfig, write(tmp_path, "train:\n  lr: 5e-4\n"), ["train.lr=3e-4"])
    assert cfg.train.lr == 3e-4
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(JobConfig, write(tmp_path, "seed: 1\n"), ["train.lr=fast"])


def test_multi_job_file_takes_own_section_and_shared_keys(tmp_path):
    path = write(tmp_path, "seed: 5\npipeline:\n  output: {dir: a}\npretrain:\n  output: {dir: b}\n  seed: 9\n")
    assert load_config(JobConfig, path, job="pipeline").output.dir == "a"
    assert load_config(JobConfig, path, job="pipeline").seed == 5
    assert load_config(JobConfig, path, job="pretrain").seed == 9
    with pytest.raises(ConfigError, match="none for job 'leakage'"):
        load_config(JobConfig, path, job="leakage")


@pytest.mark.parametrize("override, needle", [
    ("train.max_stepz=3", "train.max_stepz' is unknown"),
    ("nope.key=1", "'nope' is unknown"),
    ("train.max_steps=three", "'train.max_steps': expected an integer"),
    ("train.max_steps=1.5", "'train.max_steps': expected an integer"),
    ("train.resume=maybe", "'train.resume': expected true/false"),
    ("train.schedule=linear", "'train.schedule': 'linear' is not one of"),
    ("input=3", "'input' is a section"),
    ("train.max_steps=-1", "must be >= 0"),
    ("novalue", "expected key=value"),
])
def test_errors_name_the_key(tmp_path, override, needle):
    path = write(tmp_path, "seed: 1\n")
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        load_config(JobConfig, path, [override])


def test_unknown_key_in_file_names_file(tmp_path):
    path = write(tmp_path, "output:\n  dri: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(JobConfig, path)
    assert "output.dri" in str(info.value) and str(path) in str(info.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(JobConfig, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(JobConfig, write(tmp_path, "a: [1,\n"))
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(JobConfig, write(tmp_path, "- 1\n- 2\n"))


def test_cli_error_is_one_line_and_exit_2(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    args = parser.parse_args(["--config", str(write(tmp_path, "seed: 1\n")), "--set", "train.max_stepz=1"])
    with pytest.raises(SystemExit) as info:
        load_from_args(JobConfig, args, job="pipeline")
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "train.max_stepz" in err and "\n" not in err
