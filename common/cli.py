"""What every job's command line shares: the job-level error, its one-line message, progress bars.

- `JobError(message, code=1)`: the job itself cannot run or broke (not a bad input, which is a counted
  failure): the CLI prints one line and exits with `code`.
- `one_line(exc)`: the user-facing line of an error, also when a DataLoader worker or Ray wrapped it in
  its traceback.
- `dispatch(argv, usage, commands)`: `python -m PACKAGE COMMAND ...`: runs the `main(argv)` that
  `commands[COMMAND]` names ("module:function", imported only when chosen) with the rest of the line.
- `progress(iterable=None, **tqdm_kwargs)`: a tqdm bar on stderr, shown on a terminal (or with
  TVTS_PROGRESS=1, as the demo script sets for its log), hidden in pipes and tests.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable, Mapping, Sequence

__all__ = ["JobError", "one_line", "dispatch", "progress", "show_progress"]


class JobError(RuntimeError):
    """The job cannot run or broke (not a bad input): one line for the user, exit code `code`."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def one_line(exc: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker wrapped it with its traceback."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else type(exc).__name__


def show_progress() -> bool:
    """Progress bars on a terminal, or when TVTS_PROGRESS=1 asks for them (a log file a person tails)."""
    return sys.stderr.isatty() or os.environ.get("TVTS_PROGRESS") == "1"


def progress(*args: Any, **kwargs: Any):
    """`tqdm(*args, **kwargs)` on stderr, disabled where no one watches (see `show_progress`)."""
    from common.deps import require

    tqdm = require("tqdm").tqdm
    kwargs.setdefault("disable", not show_progress())
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("file", sys.stderr)
    return tqdm(*args, **kwargs)


def dispatch(argv: Sequence[str] | None, usage: str, commands: Mapping[str, str | Callable[[list[str]], int]]) -> int:
    """Run one subcommand: `commands` maps a name to "module:function" (imported lazily) or a callable."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage)
        return 0 if args else 2
    target = commands.get(args[0])
    if target is None:
        print(f"error: unknown command {args[0]!r}\n\n{usage}", file=sys.stderr)
        return 2
    if isinstance(target, str):
        module, _, name = target.partition(":")
        target = getattr(importlib.import_module(module), name)
    return target(args[1:])
