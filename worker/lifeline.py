"""Tie a child process's life to its parent's: if the trial's process dies, so does the child.

A Ray actor can die without running ``finally`` (node loss, ``ray.kill``, a driver that is
interrupted twice), and the engine and genai-bench run in process groups of their own, so no
signal to the actor reaches them. On Linux, ``PR_SET_PDEATHSIG`` has the kernel send SIGKILL to
the child when the thread that started it exits; the launchers pass ``kill_with_parent()`` as
``preexec_fn``. Elsewhere it does nothing, and the janitor (labels) is the safety net.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def kill_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` (call this in the parent, just before starting the child): between
    fork and exec the child asks to be SIGKILLed when its parent thread exits, and exits at
    once if the parent is already gone (it died between the fork and the request: the kernel
    would never send the signal then, found by the chaos run)."""
    parent = os.getpid()

    def preexec() -> None:
        if not sys.platform.startswith("linux"):
            return
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return preexec
