"""Tie a child process's life to its parent's: if the trial's process dies, so does the child.

A Ray actor can die without running ``finally`` (node loss, ``ray.kill``, a driver that is
interrupted twice), and the engine and genai-bench run in process groups of their own, so no
signal to the actor reaches them. On Linux, ``PR_SET_PDEATHSIG`` has the kernel send SIGKILL to
the child when the thread that started it exits; the launchers pass ``kill_with_parent`` as
``preexec_fn``. Elsewhere it does nothing, and the janitor (labels) is the safety net.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys

_PR_SET_PDEATHSIG = 1


def kill_with_parent() -> None:
    """Runs in the child between fork and exec: SIGKILL me when my parent thread exits."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
