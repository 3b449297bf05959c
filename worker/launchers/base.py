"""The launcher seam: how a deployment (one running engine) is started, probed and torn down.

A ``Launcher`` turns a ``DeploymentSpec`` (argv, environment, GPUs, port, log file) into a
running ``Deployment``. The caller owns the deployment from the moment ``launch`` returns and
uses it as a context manager: leaving the ``with`` block stops it, whatever the exit path.
``launch`` itself leaves nothing running when it raises.

Readiness is two-phase and shared by every launcher (``ReadinessProbe``): ``GET health_path``
until 200, then one real 1-token completion until 200, because an engine can report healthy
before its first request succeeds (CUDA-graph warm-up, lazy compile, a broken tokenizer).

Errors a deployment raises are ``TrialError``s carrying the ``FailureReason`` the trial records:
``EngineExited`` (the engine died before it was ready; reason read from its log by the engine's
classifier), ``EngineNotReady`` (deadline passed; ``startup_timeout``), ``ProbeRejected`` (the
engine answered the completion probe with a definite refusal) and ``GpuBusy`` (before anything
starts: a GPU of the trial is in use by another process, ``infra_error``; ``ensure_gpus_free``,
which every launcher calls before it starts an engine).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Protocol

import httpx

from common.errors import TrialError
from common.results import FailureReason
from worker.gpus import ENV_MAX_USED_MIB, GpuCheck, GpuMemory

# (exit_code, log_tail) -> (reason, one-line summary): an Engine's classify_failure.
FailureClassifier = Callable[[int | None, str], tuple[FailureReason, str]]

# Per-request timeouts of the readiness probe. /health answers at once on every engine once it
# accepts connections (before that, a request can sit in the listen backlog: the timeout bounds
# how long an exit goes unnoticed then). The first completion can include lazy warm-up, so it
# gets longer; an engine that exits mid-request closes its socket and the request fails at once.
HEALTH_REQUEST_TIMEOUT_S = 1.0
COMPLETION_REQUEST_TIMEOUT_S = 5.0
PROBE_PROMPT = "ping"


@dataclass(frozen=True)
class DeploymentSpec:
    """Everything a launcher needs to run one engine and judge it.

    ``argv`` is the full command (an ``Engine.command`` result); it must carry ``port`` as
    ``--port <port>`` or ``--port=<port>`` for the process launcher to move it to another port
    after a bind race. ``env`` is added to the child's environment as given (normally
    ``engine.gpu_env(gpu_ids)`` plus settings; secrets allowed, never logged). ``gpu_ids`` are
    host GPU ids, recorded with the trial. ``labels`` (``study``, ``trial``; the docker spelling
    ``servetune.study`` also works) tag the deployment so a janitor can find orphans.
    ``classify`` (an ``Engine.classify_failure``) reads an early exit.
    """

    argv: list[str]
    port: int
    log_path: Path
    served_model_name: str
    classify: FailureClassifier
    env: dict[str, str] = field(default_factory=dict)
    gpu_ids: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    health_path: str = "/health"
    labels: dict[str, str] = field(default_factory=dict)
    # How long a graceful stop may take before the engine is killed (benchmark.timeouts).
    stop_timeout_s: float = 10.0

    def with_port(self, port: int) -> DeploymentSpec:
        """This spec on another port, ``--port`` rewritten in ``argv``.

        Raises ``ValueError`` if ``argv`` does not carry ``self.port`` as its ``--port``.
        """
        old = str(self.port)
        argv = list(self.argv)
        for i, item in enumerate(argv):
            if item == "--port" and i + 1 < len(argv) and argv[i + 1] == old:
                argv[i + 1] = str(port)
                return replace(self, argv=argv, port=port)
            if item == f"--port={old}":
                argv[i] = f"--port={port}"
                return replace(self, argv=argv, port=port)
        raise ValueError(f"argv does not pass --port {old}: {argv!r}")


class Deployment(Protocol):
    """One running engine, owned by whoever called ``Launcher.launch``.

    Not thread-safe: one thread drives it. ``stop`` is idempotent, and ``__exit__`` always
    calls it (also on ``KeyboardInterrupt``), so after the ``with`` block nothing of the
    deployment runs.
    """

    @property
    def spec(self) -> DeploymentSpec:
        """The spec now in force (its port can differ from the launched one after a retry)."""
        ...

    @property
    def url(self) -> str:
        """Base URL of the engine's HTTP server, ``http://host:port``."""
        ...

    @property
    def pid(self) -> int | None:
        """The engine's main process id as seen from here; ``None`` where there is none."""
        ...

    @property
    def phase_timings_s(self) -> Mapping[str, float]:
        """Seconds spent in the launcher's own phases before the engine started, by phase
        (docker: ``pull_s`` when it pulled the image); empty when there were none."""
        ...

    def returncode(self) -> int | None:
        """Exit status if the engine has exited (negative: killed by that signal), else None."""
        ...

    def wait_ready(self, timeout_s: float) -> None:
        """Return once the engine serves a 1-token completion; all within ``timeout_s``.

        Raises ``EngineExited`` as soon as the engine exits, ``EngineNotReady`` at the
        deadline, ``ProbeRejected`` if the probe is refused for good. The deployment is left
        running either way: stopping it is the owner's job (the ``with`` block).
        """
        ...

    def log_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of the engine's output (stdout and stderr together)."""
        ...

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Stop the engine and everything it started: graceful, then forced after
        ``timeout_s``. Idempotent. Returns the exit status, if one is known."""
        ...

    def __enter__(self) -> Deployment: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class Launcher(Protocol):
    """How engines run (``process``, ``docker``). Implementations hold no per-deployment state."""

    @property
    def name(self) -> str: ...

    def launch(self, spec: DeploymentSpec) -> Deployment:
        """Start the engine described by ``spec`` and return at once (readiness is
        ``Deployment.wait_ready``). On any exception, nothing it started is left running."""
        ...


class DeploymentError(TrialError):
    """The deployment failed; ``reason`` is the class the trial records, ``summary`` one line.

    ``log_tail`` is the end of the engine's log; ``labels`` the deployment's (study, trial).
    """

    def __init__(self, message: str, *, reason: FailureReason, summary: str,
                 log_tail: str = "", labels: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.summary = summary
        self.log_tail = log_tail
        self.labels = dict(labels or {})


class EngineExited(DeploymentError):
    """The engine process (or container) exited before it was ready."""

    def __init__(self, message: str, *, exit_code: int | None, reason: FailureReason,
                 summary: str, log_tail: str = "",
                 labels: Mapping[str, str] | None = None) -> None:
        super().__init__(message, reason=reason, summary=summary, log_tail=log_tail,
                         labels=labels)
        self.exit_code = exit_code


class EngineNotReady(DeploymentError):
    """The engine kept running but was not ready by the deadline (``startup_timeout``)."""

    def __init__(self, message: str, *, summary: str, log_tail: str = "",
                 labels: Mapping[str, str] | None = None) -> None:
        super().__init__(message, reason=FailureReason.STARTUP_TIMEOUT, summary=summary,
                         log_tail=log_tail, labels=labels)


class ProbeRejected(DeploymentError):
    """The engine answered the 1-token completion with a refusal that retrying cannot fix.

    404 (no such model: the served name is wrong) and 401/403 (the engine wants an API key) are
    servetune's setup, ``infra_error``; another 4xx means the engine as configured refuses the
    smallest request (e.g. a context length below the prompt), ``infeasible_config``.
    """

    def __init__(self, message: str, *, status_code: int, summary: str, log_tail: str = "",
                 labels: Mapping[str, str] | None = None) -> None:
        reason = (FailureReason.INFRA_ERROR if status_code in (401, 403, 404)
                  else FailureReason.INFEASIBLE_CONFIG)
        super().__init__(message, reason=reason, summary=summary, log_tail=log_tail,
                         labels=labels)
        self.status_code = status_code


class GpuBusy(DeploymentError):
    """A GPU Ray gave the trial is in use by a process Ray does not know of (an engine left by a
    killed trial, a job outside Ray). The platform's fault, ``infra_error`` (retryable: nothing
    is learnt about the config); ``busy`` holds the readings of the busy GPUs."""

    def __init__(self, message: str, *, busy: Sequence[GpuMemory], summary: str,
                 labels: Mapping[str, str] | None = None) -> None:
        super().__init__(message, reason=FailureReason.INFRA_ERROR, summary=summary,
                         labels=labels)
        self.busy = tuple(busy)


def ensure_gpus_free(spec: DeploymentSpec, check: GpuCheck) -> None:
    """Raise ``GpuBusy`` if a GPU of ``spec.gpu_ids`` has more memory in use than ``check``
    allows (after its grace wait); return at once where the check is off or NVML absent."""
    busy = check.busy(spec.gpu_ids)
    if not busy:
        return
    ids = ", ".join(reading.gpu_id for reading in busy)
    summary = (f"GPU {ids} of this trial {'is' if len(busy) == 1 else 'are'} in use by another "
               f"process: " + "; ".join(reading.describe() for reading in busy))
    raise GpuBusy(
        f"{summary} (a free GPU has at most {check.max_used_mib:g} MiB in use); nothing was "
        f"started. Stop what holds it (`nvidia-smi`; `servetune clean` removes engine "
        f"containers of killed trials), or set {ENV_MAX_USED_MIB} (MiB, or off) on the node "
        f"[{format_labels(spec.labels)}]", busy=busy, summary=summary, labels=spec.labels)


@dataclass
class ProbeStatus:
    """One probe step: ``ready``; else ``detail`` says what was seen; ``rejected_status`` is
    set when the engine refused the completion for good."""

    ready: bool
    detail: str
    rejected_status: int | None = None


class ReadinessProbe:
    """The two readiness phases against one base URL; ``step`` advances them by one request.

    Stateful (remembers that health passed); create one per engine process.
    """

    def __init__(self, base_url: str, health_path: str, served_model_name: str) -> None:
        self.base_url = base_url
        self.health_path = health_path
        self.served_model_name = served_model_name
        self.healthy = False

    def step(self, client: httpx.Client, max_wait_s: float) -> ProbeStatus:
        """Send one request of the current phase, waiting at most ``max_wait_s`` for it."""
        if not self.healthy:
            status, detail = self._request(client, "GET", self.health_path, None,
                                           min(HEALTH_REQUEST_TIMEOUT_S, max_wait_s))
            if status != 200:
                return ProbeStatus(False, f"GET {self.health_path}: {detail}")
            self.healthy = True
        body = {"model": self.served_model_name, "prompt": PROBE_PROMPT, "max_tokens": 1}
        status, detail = self._request(client, "POST", "/v1/completions", body,
                                       min(COMPLETION_REQUEST_TIMEOUT_S, max_wait_s))
        if status == 200:
            return ProbeStatus(True, "ready")
        rejected = status if status is not None and _is_final_refusal(status) else None
        return ProbeStatus(False, f"POST /v1/completions: {detail}", rejected)

    def _request(self, client: httpx.Client, method: str, path: str,
                 body: dict[str, object] | None,
                 timeout_s: float) -> tuple[int | None, str]:
        timeout = max(timeout_s, 0.05)
        try:
            response = client.request(method, self.base_url + path, json=body,
                                      timeout=httpx.Timeout(timeout, connect=min(timeout, 1.0)))
        except httpx.TimeoutException:
            return None, f"no answer within {timeout:.1f} s"
        except httpx.TransportError as e:
            return None, f"{type(e).__name__}: {e}"
        text = " ".join(response.text.split())[:200]
        return response.status_code, f"HTTP {response.status_code} {text}".rstrip()


def _is_final_refusal(status: int) -> bool:
    # 408 (timeout) and 429 (busy) can pass; 5xx covers engines still warming up.
    return 400 <= status < 500 and status not in (408, 429)


def probe_host(host: str) -> str:
    """The address to reach a server bound to ``host`` from this machine (URL form)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def format_labels(labels: Mapping[str, str]) -> str:
    """``study=s trial=7`` for messages and log lines."""
    return " ".join(f"{key}={value}" for key, value in sorted(labels.items()))


def not_ready_error(spec: DeploymentSpec, subject: str, timeout_s: float, detail: str,
                    log_tail: str) -> EngineNotReady:
    """The readiness deadline passed; ``subject`` names the engine ("engine", "engine
    container X")."""
    summary = f"not ready after {timeout_s:g} s; last probe: {detail}"
    return EngineNotReady(
        f"{subject} {summary} [{format_labels(spec.labels)}; log {spec.log_path}]; raise the "
        "startup timeout if the engine is slow",
        summary=summary, log_tail=log_tail, labels=spec.labels)


def probe_rejected_error(spec: DeploymentSpec, subject: str, status_code: int, detail: str,
                         log_tail: str) -> ProbeRejected:
    """The engine answered the 1-token completion with a definite refusal."""
    summary = f"the 1-token completion probe was refused: {detail}"
    return ProbeRejected(
        f"{subject} is up but {summary} [{format_labels(spec.labels)}; served model name "
        f"{spec.served_model_name!r}]",
        status_code=status_code, summary=summary, log_tail=log_tail, labels=spec.labels)
