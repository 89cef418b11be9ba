"""Run a command the way the launcher tests need: its own session, and on timeout the whole group killed."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path


def run_in_session(cmd: list[str], env: dict[str, str], timeout: float, cwd: Path) -> subprocess.CompletedProcess:
    """stdout and stderr together; a hang is an AssertionError with the output's tail (no rank left behind)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"{shlex.join(cmd[:6])} ... did not finish in {timeout:.0f} s:\n{out[-4000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")
