"""Import heavy optional libraries where they are used, failing with an install hint."""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependency(ImportError):
    pass


def require(module: str, pip_name: str | None = None, why: str = "") -> ModuleType:
    """Import `module` or raise one clear line saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        hint = pip_name or module.split(".")[0]
        purpose = f" (needed for {why})" if why else ""
        raise MissingDependency(
            f"python package '{module}' is not installed{purpose}: run `make setup` "
            f"or `.venv/bin/pip install {hint}` ({exc})"
        ) from exc
