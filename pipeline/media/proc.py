"""Run one external program (ffmpeg, ffprobe, yt-dlp) safely: argument list, hard timeout, whole tree killed.

API
---
``run(args, timeout, *, stdin=None, cwd=None, env=None, check=False, text=False) -> subprocess.CompletedProcess``
    Runs ``args`` (a list; never a shell) in a new session (its own process group), captures stdout
    and stderr, and returns a ``CompletedProcess``. If it runs longer than ``timeout`` seconds the
    whole process group is sent SIGTERM, then SIGKILL after a short grace period, and
    ``ProcTimeout`` (a ``TimeoutError`` subclass, with ``.args_list``, ``.timeout``, ``.stdout``,
    ``.stderr``) is raised. With ``check=True`` a non-zero exit raises ``ProcFailed`` (a
    ``subprocess.CalledProcessError`` subclass whose message ends with the stderr tail).
    A missing executable raises ``FileNotFoundError`` as usual.

``safe_input(path) -> str``
    Makes a path that starts with ``-`` harmless on a command line (``./-rf``); URLs and absolute
    paths are returned unchanged. Use it for every input path given to ffmpeg/ffprobe.

``kill_tree(proc)``
    Terminates a running ``Popen`` started with ``start_new_session=True`` and every process in its group.

Why a new session: ffmpeg and yt-dlp start children of their own (yt-dlp runs ffmpeg for merging);
killing only the direct child would leave those running and holding files in the scratch folder.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Mapping, Sequence

__all__ = ["ProcTimeout", "ProcFailed", "run", "safe_input", "kill_tree", "stderr_tail"]

# Seconds between SIGTERM and SIGKILL when a process group is stopped.
KILL_GRACE_S = 2.0


class ProcTimeout(TimeoutError):
    """The program ran past its timeout; its whole process group was killed."""

    def __init__(self, args_list: Sequence[str], timeout: float, stdout=None, stderr=None):
        prog = os.path.basename(str(args_list[0])) if args_list else "?"
        super().__init__(f"{prog} ran longer than {timeout:g}s and was killed")
        self.args_list = list(args_list)
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr


class ProcFailed(subprocess.CalledProcessError):
    """Non-zero exit with ``check=True``; ``str()`` includes the last lines of stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}: {stderr_tail(self.stderr)}"


def stderr_tail(stderr: bytes | str | None, max_chars: int = 400) -> str:
    """The last non-empty lines of ``stderr`` as one line, for error messages."""
    if stderr is None:
        return ""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", errors="replace")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    tail = " | ".join(lines[-3:])
    return tail[-max_chars:]


def safe_input(path: str | os.PathLike) -> str:
    """Return ``path`` in a form no program can read as an option (``-x`` -> ``./-x``)."""
    text = os.fspath(path)
    if text.startswith("-"):
        return "./" + text
    return text


def kill_tree(proc: subprocess.Popen, grace: float = KILL_GRACE_S) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session=True``), then SIGKILL."""
    if proc.poll() is not None:
        # The leader is gone but its children may still run in the group.
        _signal_group(proc.pid, signal.SIGKILL)
        return
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # Always SIGKILL the group: children may ignore SIGTERM even after the leader exited.
    _signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process in D state
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run(
    args: Sequence[str | os.PathLike],
    timeout: float,
    *,
    stdin: bytes | str | None = None,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = False,
    text: bool = False,
) -> subprocess.CompletedProcess:
    """Run ``args`` with a hard ``timeout`` (seconds); see the module docstring."""
    if isinstance(args, (str, bytes)):
        raise TypeError("proc.run takes an argument list, never a shell string")
    argv = [os.fspath(a) for a in args]
    if isinstance(stdin, str) and not text:
        stdin = stdin.encode("utf-8")
    elif isinstance(stdin, bytes) and text:
        stdin = stdin.decode("utf-8")
    if timeout is None or timeout <= 0:
        raise ValueError(f"proc.run needs a positive timeout, got {timeout!r}")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        start_new_session=True,
        text=text,
    )
    from pipeline import watchdog

    try:
        with watchdog.allow(timeout):   # limited by its own timeout: the stall watchdog waits for it
            stdout, stderr = proc.communicate(input=stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        stdout, stderr = _drain(proc)
        raise ProcTimeout(argv, timeout, stdout, stderr) from None
    except BaseException:
        # KeyboardInterrupt or a worker being cancelled: never leave the tree behind.
        kill_tree(proc)
        raise
    # The leader exited; make sure no grandchild it left behind keeps running.
    _signal_group(proc.pid, signal.SIGKILL)
    result = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise ProcFailed(proc.returncode, argv, stdout, stderr)
    return result


def _drain(proc: subprocess.Popen):
    """Collect what a killed process had written, without blocking on pipes a grandchild may hold."""
    try:
        return proc.communicate(timeout=1.0)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        return None, None


def wait_or_kill(proc: subprocess.Popen, timeout: float) -> int:
    """Wait up to ``timeout`` s for a ``Popen`` started with ``start_new_session=True``; kill its tree after."""
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            return code
        if time.monotonic() >= deadline:
            kill_tree(proc)
            raise ProcTimeout(proc.args if isinstance(proc.args, list) else [str(proc.args)], timeout)
        time.sleep(0.05)


def run_media_tool(args: Sequence[str], timeout: float, *, stage: str, path: str, failed_class: str,
                   failed_what: str) -> subprocess.CompletedProcess:
    """Run ffmpeg/ffprobe for one input, turning each way it can fail into a classified StageError:
    a timeout -> `<stage>_timeout`, a missing binary -> `tool_missing`, a non-zero exit -> `failed_class`
    (its message: "<failed_what> <path>: <stderr tail>")."""
    from pipeline.errors import StageError

    try:
        result = run(args, timeout=timeout)
    except ProcTimeout:
        raise StageError(stage, f"{stage}_timeout", f"{args[0]} ran longer than {timeout:g}s on {path}") from None
    except FileNotFoundError:
        raise StageError(stage, "tool_missing", f"{args[0]} is not installed: apt-get install ffmpeg") from None
    if result.returncode != 0:
        raise StageError(stage, failed_class, f"{failed_what} {path}: {stderr_tail(result.stderr)}")
    return result
