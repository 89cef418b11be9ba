"""pipeline.media.proc: argument lists only, hard timeout that kills the whole process tree."""
from __future__ import annotations

import os
import sys
import time

import pytest

from pipeline.media import proc


def test_run_captures_output_and_exit_code():
    result = proc.run([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
                      timeout=30)
    assert result.returncode == 3
    assert result.stdout.strip() == b"out"
    assert b"err" in result.stderr


def test_run_passes_stdin_and_check_raises_with_stderr_tail():
    result = proc.run([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"], timeout=30,
                      stdin="abc", text=True)
    assert result.stdout.strip() == "ABC"
    with pytest.raises(proc.ProcFailed, match="boom"):
        proc.run([sys.executable, "-c", "import sys; sys.exit('boom')"], timeout=30, check=True)


def test_shell_strings_are_refused():
    with pytest.raises(TypeError):
        proc.run("echo hi; rm -rf /", timeout=5)


def test_timeout_kills_the_whole_tree(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    # The child starts a grandchild that would outlive it, then both hang.
    code = (
        "import subprocess, sys, time;"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid));"
        "time.sleep(60)"
    )
    start = time.monotonic()
    with pytest.raises(proc.ProcTimeout) as info:
        proc.run([sys.executable, "-c", code], timeout=1.5)
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - start < 10
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        # A zombie of an already-reaped parent still answers kill(0); check its state.
        try:
            with open(f"/proc/{grandchild}/stat") as fh:
                if fh.read().split(")")[-1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("grandchild still running after the timeout")


def test_safe_input_neutralises_leading_dash():
    assert proc.safe_input("-rf.mp4") == "./-rf.mp4"
    assert proc.safe_input("/abs/-x.mp4") == "/abs/-x.mp4"
    assert proc.safe_input("http://127.0.0.1/x") == "http://127.0.0.1/x"
