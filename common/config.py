"""Typed job configuration: dataclasses filled from YAML, overridable with `--set section.key=value`.

A YAML file is either one job's config (its keys are that job's sections), or a multi-job file whose
top-level keys are job names (`pipeline`, `leakage`, `near_dups`, `pretrain`, `evaluate`), each holding
that job's config; top-level keys that are not job names (e.g. `seed`) are shared by every job in the
file. `configs/demo.yaml` is such a file: every job reads it by default.

Every key is checked against the dataclass: an unknown key or a value of the wrong type is a
`ConfigError` that names the key, the file and what was expected.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from common.paths import DEFAULT_CONFIG

JOB_NAMES = ("pipeline", "leakage", "near_dups", "pretrain", "evaluate")

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem a user can fix; the message is one line naming the key."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where lossless (int -> float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key '{key}': {value!r} is not a {_type_name(tp)}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"config key '{key}': {value!r} is not one of {list(args)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' is a section: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "5e-4" (no dot) as a string; accept any plain number spelling.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")


def _build(cls: type[T], data: dict, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f" in section '{prefix}'" if prefix else ""
        raise ConfigError(
            f"config key '{_join(prefix, unknown[0])}' is unknown{where}; known keys: {', '.join(fields)}"
        )
    kwargs = {name: _coerce(value, hints[name], _join(prefix, name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field without default that the file did not give
        raise ConfigError(f"config section '{prefix or cls.__name__}': {exc}") from exc


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_override(data: dict, assignment: str) -> None:
    """Apply one `a.b.c=value` to the nested dict (value parsed as YAML: 3, 0.5, true, [1, 2], null)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. --set train.max_steps=100")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {assignment!r}: empty key")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: '{part}' is not a section")
        node = child
    node[parts[-1]] = _parse_value(raw)


def _job_section(raw: dict, job: str, path: Path) -> dict:
    if not any(name in raw for name in JOB_NAMES):
        return dict(raw)
    if job not in raw:
        raise ConfigError(f"{path} has sections for {[n for n in JOB_NAMES if n in raw]} but none for job '{job}'")
    shared = {k: v for k, v in raw.items() if k not in JOB_NAMES}
    section = raw[job] or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: section '{job}' must be a mapping")
    merged = dict(shared)
    merged.update(section)
    return merged


def _validate(cfg: Any) -> None:
    """Call `validate()` on the config and its nested sections if they define one."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if dataclasses.is_dataclass(value):
            _validate(value)
    check = getattr(cfg, "validate", None)
    if callable(check):
        check()


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                job: str | None = None) -> T:
    """Build `cls` from a YAML file (default configs/demo.yaml) plus `--set` overrides."""
    import yaml

    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: pass --config FILE (see configs/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    data = _job_section(raw, job, path) if job else dict(raw)
    for assignment in overrides or []:
        apply_override(data, assignment)
    try:
        cfg = _build(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{exc} ({path})") from None
    _validate(cfg)
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="YAML config file (default: configs/demo.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set output.dir=/tmp/out (repeatable)")


def load_from_args(cls: type[T], args: argparse.Namespace, job: str) -> T:
    """`load_config` for a CLI; a ConfigError becomes one line on stderr and exit code 2."""
    try:
        return load_config(cls, args.config, args.overrides, job=job)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def check_protocols(key: str, locations: list[str]) -> None:
    """ConfigError (one line naming `key`) for a location whose protocol fsspec cannot serve here (an unknown
    protocol, a missing s3fs/gcsfs). Whether a bucket or object exists is checked when the job starts."""
    from common.storage import StorageError, filesystem, is_local

    for location in (loc.strip() for loc in locations):
        if location and not is_local(location):
            try:
                filesystem(location, f"config key '{key}':")
            except StorageError as exc:
                raise ConfigError(str(exc)) from None
