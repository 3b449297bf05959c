"""A child started with kill_with_parent dies when its parent is killed (no finally runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARENT = """
import subprocess, sys, time
from worker.lifeline import kill_with_parent
child = subprocess.Popen(["sleep", "300"], start_new_session=True,
                         preexec_fn=kill_with_parent() if sys.argv[1] == "on" else None)
print(child.pid, flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's zombie may linger where init does not reap)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state


def _child_after_parent_killed(lifeline: str) -> int:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, lifeline], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    return child


def test_child_dies_with_its_parent() -> None:
    """SIGKILL of the parent (as when a Ray actor dies) takes the engine child with it."""
    child = _child_after_parent_killed("on")
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_without_lifeline_the_child_would_leak() -> None:
    """Control: the same child without the lifeline outlives its parent (then we reap it)."""
    child = _child_after_parent_killed("off")
    try:
        time.sleep(0.5)
        assert _alive(child)
    finally:
        os.kill(child, signal.SIGKILL)
