"""The process launcher: the engine as a child process of the trial, on the trial's GPUs.

This is how trials run inside KubeRay worker pods and in the embedded default (the simulated
engine). Contract:

- The engine runs in its own session and process group (``start_new_session=True``), so stopping
  it signals everything it started (vLLM's engine-core and worker processes, SGLang's
  schedulers); a Ctrl-C at the driver's terminal does not reach it, the owner's teardown does.
- stdin is closed; stdout and stderr go, interleaved, to ``spec.log_path``.
- Before it starts, ``launch`` checks that the trial's GPUs are free (``GpuCheck``; default
  from the node's environment): a busy one raises ``GpuBusy`` and nothing starts.
- The environment is this process's without an inherited ``CUDA_VISIBLE_DEVICES`` (the trial's
  GPUs are ``spec.gpu_ids``, not whatever this process was given), then
  ``CUDA_VISIBLE_DEVICES=<spec.gpu_ids>`` when there are any, then ``spec.env`` (normally
  ``engine.gpu_env(gpu_ids)``, which wins). Each label becomes ``SERVETUNE_LABEL_<KEY>``
  (``label_env_name``) so a janitor can find orphans by label in ``/proc/<pid>/environ``.
- ``stop`` sends SIGTERM to the group, waits, then SIGKILLs the group; it also cleans up when the
  main process already exited but children remain. A grandchild that starts its own session
  escapes the group and is beyond this launcher (the janitor finds it by label).

Port allocation races: ``free_port`` binds port 0 and releases it, and something else may
bind that port before the engine does. When the engine then exits before it is ready with
"address already in use" in its log, ``wait_ready`` relaunches it on a fresh port (up to
``port_retries`` times, within the same deadline). Any exit before ready counts, not only one in
the first second: SGLang binds its HTTP port only after loading the model.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import httpx

from common.errors import InfraError
from worker.gpus import GpuCheck
from worker.launchers.base import (
    DeploymentSpec,
    EngineExited,
    EngineNotReady,
    ProbeRejected,
    ReadinessProbe,
    ensure_gpus_free,
    format_labels,
    not_ready_error,
    probe_host,
    probe_rejected_error,
)
from worker.lifeline import kill_with_parent

logger = logging.getLogger(__name__)

PORT_RETRIES = 3
# How often readiness and teardown look at the process (seconds).
POLL_INTERVAL_S = 0.05
# After SIGKILL the kernel frees a process at once; this only bounds a pathological wait.
KILL_WAIT_S = 5.0
_ADDRESS_IN_USE = "address already in use"
_TAIL_BLOCK_BYTES = 8192


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on ``host`` right now (the OS picks it by binding port 0).

    The port is released before the engine binds it, so another process can take it in between;
    ``ProcessDeployment.wait_ready`` handles that race by relaunching on a new port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def label_env_name(key: str) -> str:
    """The environment variable a label travels in: ``study`` and ``servetune.study`` (the
    docker label spelling) both become ``SERVETUNE_LABEL_STUDY``."""
    key = key.removeprefix("servetune.")
    return "SERVETUNE_LABEL_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


@dataclass(frozen=True)
class LabelledProcess:
    """A live process started by the process launcher, found by its labels."""

    pid: int
    ppid: int
    labels: dict[str, str]  # label env vars without their prefix: {"STUDY": ..., "TRIAL": ...}
    cmdline: str


def labelled_processes(study: str) -> list[LabelledProcess]:
    """Live (not zombie) processes of this node whose environment carries ``study``'s label:
    the engines (and their children) the launcher started for it and that still run."""
    prefix, wanted = label_env_name(""), f"{label_env_name('study')}={study}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if wanted not in environ.split(b"\0") or "State:\tZ" in status:
            continue
        env = dict(item.decode(errors="replace").split("=", 1)
                   for item in environ.split(b"\0") if b"=" in item)
        ppid = next((int(line.split()[1]) for line in status.splitlines()
                     if line.startswith("PPid:")), 0)
        found.append(LabelledProcess(
            pid=int(entry.name), ppid=ppid,
            labels={k.removeprefix(prefix): v for k, v in env.items() if k.startswith(prefix)},
            cmdline=cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
    return found


class ProcessLauncher:
    """Runs engines as local child processes. Stateless; one instance can launch many.

    ``gpu_check``: how the trial's GPUs are checked before launch (None: ``GpuCheck.from_env()``
    at each launch, from the node's environment)."""

    name: ClassVar[str] = "process"

    def __init__(self, *, port_retries: int = PORT_RETRIES,
                 gpu_check: GpuCheck | None = None) -> None:
        self.port_retries = port_retries
        self.gpu_check = gpu_check

    def launch(self, spec: DeploymentSpec) -> ProcessDeployment:
        """Start the engine and return at once; the caller owns (and must stop) the result.

        Raises ``GpuBusy`` if a GPU of the spec is in use (nothing is started), ``InfraError``
        if the engine's executable cannot be started (not installed on this node) or the log
        file cannot be opened; nothing is left running then.
        """
        ensure_gpus_free(spec, self.gpu_check or GpuCheck.from_env())
        deployment = ProcessDeployment(spec, port_retries=self.port_retries)
        try:
            deployment.start()
        except BaseException:
            deployment.stop()
            raise
        return deployment


class ProcessDeployment:
    """One engine child process (and its process group). See the module docstring.

    Holds at most one engine process at a time; after a port retry ``spec``, ``url`` and ``pid``
    describe the new one. Not thread-safe.
    """

    def __init__(self, spec: DeploymentSpec, *, port_retries: int = PORT_RETRIES) -> None:
        self._spec = spec
        self._port_retries_left = port_retries
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0  # where the current process's output starts in the log
        self._stopped = False

    # -- what the owner reads ----------------------------------------------------------------

    @property
    def spec(self) -> DeploymentSpec:
        return self._spec

    @property
    def url(self) -> str:
        return f"http://{probe_host(self._spec.host)}:{self._spec.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def phase_timings_s(self) -> Mapping[str, float]:
        """Empty: the process starts at once, with no phase of the launcher before it."""
        return {}

    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def log_tail(self, lines: int = 50) -> str:
        return _read_tail(self._spec.log_path, lines)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine process (called by ``ProcessLauncher.launch``)."""
        spec = self._spec
        env = dict(os.environ)
        env.pop("CUDA_VISIBLE_DEVICES", None)
        if spec.gpu_ids:
            # The trial's GPUs even if spec.env forgot them; spec.env (engine.gpu_env) wins.
            env["CUDA_VISIBLE_DEVICES"] = ",".join(spec.gpu_ids)
        env.update(spec.env)
        for key, value in spec.labels.items():
            env[label_env_name(key)] = value
        try:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            # The first start truncates a stale log; a port retry appends, keeping the history.
            log = spec.log_path.open("ab" if self._proc is not None else "wb")
        except OSError as e:
            raise InfraError(f"cannot write the engine log {spec.log_path}: {e}") from e
        with log:
            self._log_offset = log.tell()
            try:
                self._proc = subprocess.Popen(
                    spec.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=env, start_new_session=True, close_fds=True,
                    preexec_fn=kill_with_parent())
            except OSError as e:
                raise InfraError(
                    f"cannot start the engine {spec.argv[0]!r}: {e}; is it installed on this "
                    f"node? ({format_labels(spec.labels)})") from e
        logger.info("engine started: pid %d on port %d, GPUs %s, log %s (%s)", self._proc.pid,
                    spec.port, ",".join(spec.gpu_ids) or "none", spec.log_path,
                    format_labels(spec.labels))

    def wait_ready(self, timeout_s: float) -> None:
        """Poll health, then a 1-token completion, until both answer 200 (see ``Deployment``).

        The child's exit status is checked before every request, so an exit is reported at
        once (``EngineExited``), not at the deadline (``EngineNotReady``).
        """
        deadline = time.monotonic() + timeout_s
        probe = ReadinessProbe(self.url, self._spec.health_path, self._spec.served_model_name)
        detail = "no request answered yet"
        with httpx.Client(trust_env=False) as client:
            while True:
                if self._proc is None:
                    raise RuntimeError("wait_ready() before start()")
                exit_code = self._proc.poll()
                if exit_code is not None:
                    if not self._retry_on_new_port():
                        raise self._exited(exit_code)
                    probe = ReadinessProbe(self.url, self._spec.health_path,
                                           self._spec.served_model_name)
                    continue
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    raise self._not_ready(timeout_s, detail)
                status = probe.step(client, remaining_s)
                # Ready only if our process still runs: after a lost port race, another server
                # can be the one answering on this port.
                if status.ready and self._proc.poll() is None:
                    return
                detail = status.detail
                if status.rejected_status is not None and self._proc.poll() is None:
                    raise self._rejected(status.rejected_status, detail)
                time.sleep(max(min(POLL_INTERVAL_S, deadline - time.monotonic()), 0.0))

    def stop(self, timeout_s: float = 10.0) -> int | None:
        proc = self._proc
        if proc is None or self._stopped:
            return proc.returncode if proc is not None else None
        try:
            _terminate_group(proc, timeout_s)
        finally:
            # Interrupted while waiting politely (Ctrl-C): force, so nothing is left behind.
            if proc.poll() is None or _group_alive(proc.pid):
                _signal_group(proc.pid, signal.SIGKILL)
                _wait_group(proc, KILL_WAIT_S)
        self._stopped = True
        logger.info("engine stopped: pid %d, exit status %s (%s)", proc.pid, proc.returncode,
                    format_labels(self._spec.labels))
        return proc.returncode

    def __enter__(self) -> ProcessDeployment:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop(self._spec.stop_timeout_s)

    # -- helpers -----------------------------------------------------------------------------

    def _retry_on_new_port(self) -> bool:
        """Relaunch on a fresh port if the process lost the port race; False otherwise."""
        if self._port_retries_left <= 0 or self._proc is None:
            return False
        if _ADDRESS_IN_USE not in self._current_output().lower():
            return False
        try:
            spec = self._spec.with_port(free_port(self._spec.host))
        except ValueError:
            return False
        # Children of the failed attempt may still hold GPU memory or ports.
        _signal_group(self._proc.pid, signal.SIGKILL)
        _wait_group(self._proc, KILL_WAIT_S)
        logger.warning("engine port %d was taken; relaunching on port %d (%s)", self._spec.port,
                       spec.port, format_labels(spec.labels))
        self._port_retries_left -= 1
        self._spec = spec
        self.start()
        return True

    def _current_output(self) -> str:
        """Output of the current process only (the log also holds earlier attempts)."""
        try:
            with self._spec.log_path.open("rb") as log:
                log.seek(self._log_offset)
                # Bounded: an address error shows at startup, near the start of the output.
                return log.read(1 << 20).decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _exited(self, exit_code: int) -> EngineExited:
        tail = self.log_tail()
        reason, summary = self._spec.classify(exit_code, tail)
        return EngineExited(
            f"engine exited with status {exit_code} before it was ready "
            f"({reason.value}): {summary} [{format_labels(self._spec.labels)}; "
            f"log {self._spec.log_path}]",
            exit_code=exit_code, reason=reason, summary=summary, log_tail=tail,
            labels=self._spec.labels)

    def _not_ready(self, timeout_s: float, detail: str) -> EngineNotReady:
        return not_ready_error(self._spec, "engine", timeout_s, detail, self.log_tail())

    def _rejected(self, status_code: int, detail: str) -> ProbeRejected:
        return probe_rejected_error(self._spec, "engine", status_code, detail, self.log_tail())


def _terminate_group(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the group, wait up to ``timeout_s`` for all of it, then SIGKILL what is left."""
    _signal_group(proc.pid, signal.SIGTERM)
    if not _wait_group(proc, timeout_s):
        logger.warning("engine pid %d did not stop within %g s of SIGTERM; killing it",
                       proc.pid, timeout_s)
        _signal_group(proc.pid, signal.SIGKILL)
        _wait_group(proc, KILL_WAIT_S)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # With start_new_session the leader's pid is the group id. The kernel does not reuse a pid
    # while a group of that id exists, so signalling it cannot hit an unrelated process.
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_group(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait until the leader is reaped and no live member of its group remains."""
    deadline = time.monotonic() + timeout_s
    while True:
        leader_done = proc.poll() is not None
        if leader_done and not _group_alive(proc.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (zombies do not count).

    Orphaned grandchildren are re-parented to PID 1, which in containers often never reaps
    them; their zombies keep the group "existing" for kill(0) but hold no resources.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True  # no way to tell zombies apart here: assume alive
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited while scanning
        # Fields after the command name (which may contain spaces and parentheses).
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _read_tail(path: os.PathLike[str] | str, lines: int) -> str:
    """The last ``lines`` lines of a file, reading backwards in blocks; "" if unreadable."""
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            data = b""
            position = end
            while position > 0 and data.count(b"\n") <= lines:
                step = min(_TAIL_BLOCK_BYTES, position)
                position -= step
                f.seek(position)
                data = f.read(step) + data
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
