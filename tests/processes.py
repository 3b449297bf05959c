"""Stopping the child processes tests start (servers, engines): politely, then for sure."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:  # type: ignore[type-arg]
    """SIGTERM, and SIGKILL if it is still running after ``timeout_s``; always reaped."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
