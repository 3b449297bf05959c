"""Shared fixtures: a real simulated-engine process on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.processes import stop

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimProcess:
    """A `python -m worker.sim serve` child process and how to reach it."""

    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def log_text(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"engine exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"engine not ready in {timeout_s}s:\n{self.log_text()}")


@contextmanager
def sim_process(args: list[str], tmp_path: Path, gpus: int | None = 1,
                env: dict[str, str] | None = None) -> Iterator[SimProcess]:
    """Start the simulated engine with ``args`` (engine flags); always kill it afterwards."""
    port = free_port()
    log = tmp_path / f"sim-{port}.log"
    child_env = dict(os.environ, **(env or {}))
    child_env.pop("CUDA_VISIBLE_DEVICES", None)
    if gpus is not None:
        child_env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(gpus))
    argv = [sys.executable, "-m", "worker.sim", "serve", *args, "--port", str(port),
            "--sim-startup-scale", "0.01"]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=child_env, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    try:
        yield SimProcess(proc, port, log)
    finally:
        stop(proc)


@pytest.fixture
def sim_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Factory: ``with sim_server([...flags]) as sim:`` starts and reaps an engine process."""

    def start(args: list[str], gpus: int | None = 1,
              env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        return sim_process(args, tmp_path, gpus, env)

    return start
