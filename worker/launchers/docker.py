"""The docker launcher: the engine in a container on the trial's GPUs, via the ``docker`` SDK.

The only module of servetune that imports ``docker``: every SDK error becomes ours
(``InfraError`` for the platform, a ``DeploymentError`` for the deployment), never a raw SDK
traceback. The janitor and the simulated engine's image reach Docker through the helpers at the
end. What the options mean for a container (environment, labels, exit statuses, OOMKilled) is
in ``docker_options``, which imports no SDK. A docker deployment keeps the process launcher's
lifecycle guarantees, and:

- ``spec.argv`` is the container's command (a list, no shell); the engine listens on
  ``options.container_port`` inside, published on ``127.0.0.1:spec.port`` only. Port 0 lets
  Docker pick a free host port and hold it (no race); a requested port found taken at start is
  replaced by one Docker picks (``deployment.spec.port`` and ``url`` say which); argv never
  changes. With ``network_mode="host"`` nothing is published: the engine listens on
  ``spec.port`` itself.
- ``device_requests`` mode on a host without the NVIDIA Container Toolkit fails at start ("could
  not select device driver"): ``GpuRuntimeUnavailable`` (``infra_error``), container removed.
- An image the host lacks is pulled (``options.pull``) with its progress in ``spec.log_path``,
  within ``options.pull_timeout_s``: a pull still running then raises ``PullTimeout`` (an
  ``InfraError``, like every other failure to bring the image here). Docker has no call to
  cancel a pull: the daemon may go on with it (a later launch then finds the image or joins
  that pull); the thread that read its progress ends when Docker ends the response. The pull's
  duration is ``phase_timings_s["pull_s"]``, apart from startup.
- Before the container starts, the trial's GPUs are checked (``GpuCheck``, default from the
  node's environment): one in use by another process raises ``GpuBusy``, container removed.
- ``init=True``: docker-init is PID 1, forwards SIGTERM to the engine and reaps its workers (an
  engine as PID 1 ignores SIGTERM: every stop would wait for the SIGKILL).
- No ``auto_remove``: exit state and output survive the engine. ``stop`` stops the container,
  appends its whole output (stdout and stderr) to ``spec.log_path`` (truncated at launch, then
  given the image pull's progress, if any) and removes it. Leaving the ``with`` block stops; so
  does a ``launch`` that fails once the container exists.
- Readiness reads the container state before every probe request: an exit is reported at once
  with its status, ``State.OOMKilled`` and the log tail (``EngineExited``).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import docker
import docker.errors
import httpx
import requests.exceptions
from docker.models.containers import Container
from docker.types import DeviceRequest
from docker.utils import parse_repository_tag

from common.errors import InfraError
from common.results import FailureReason
from worker.gpus import GpuCheck
from worker.launchers.base import (
    DeploymentError,
    DeploymentSpec,
    EngineExited,
    EngineNotReady,
    ProbeRejected,
    ReadinessProbe,
    ensure_gpus_free,
    format_labels,
    not_ready_error,
    probe_rejected_error,
)
from worker.launchers.docker_options import (
    DockerOptions,
    classify_exit,
    container_env,
    container_labels,
    container_name,
    exit_status,
)

__all__ = ["DockerDeployment", "DockerLauncher", "DockerOptions", "GpuRuntimeUnavailable",
           "PullTimeout", "connect", "docker_errors", "force_remove", "image_exists",
           "import_rootfs"]

logger = logging.getLogger(__name__)

DockerClient = docker.DockerClient
PORT_RETRIES = 3  # Docker's own pick can still collide with a non-Docker listener
POLL_INTERVAL_S = 0.1  # readiness: one container-state look and one probe request per poll
PULL_PROGRESS_EVERY_S = 5.0  # the pull's byte-counter ticks, thinned to one per layer per 5 s
_GPU_RUNTIME_MISSING = "could not select device driver"
_PORT_TAKEN = ("port is already allocated", "address already in use")


class GpuRuntimeUnavailable(DeploymentError):
    """Docker cannot give the container GPUs: the host's GPU runtime (NVIDIA Container
    Toolkit) is not installed or configured. The platform's fault, ``infra_error``."""


class PullTimeout(InfraError):
    """Pulling ``image`` did not finish within ``timeout_s`` (``benchmark.timeouts.pull_s``):
    the registry or the node's network is slow or stalled. The platform's fault, like any other
    failure to pull; ``labels`` are the deployment's (study, trial)."""

    def __init__(self, message: str, *, image: str, timeout_s: float,
                 labels: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.image = image
        self.timeout_s = timeout_s
        self.labels = dict(labels or {})


class DockerLauncher:
    """Runs engines as containers. Holds only its options; each deployment has its own
    Docker client, so deployments can run in different threads. ``gpu_check``: how the
    trial's GPUs are checked before start (None: ``GpuCheck.from_env()`` at each launch)."""

    name: ClassVar[str] = "docker"

    def __init__(self, options: DockerOptions, *, gpu_check: GpuCheck | None = None) -> None:
        self.options = options
        self.gpu_check = gpu_check

    def launch(self, spec: DeploymentSpec) -> DockerDeployment:
        """Create and start the container, return at once; the caller owns the result.

        Raises ``InfraError`` (Docker unreachable, image missing, API error), ``PullTimeout``,
        ``GpuBusy``, ``GpuRuntimeUnavailable``; nothing is left behind then.
        """
        deployment = DockerDeployment(spec, self.options, gpu_check=self.gpu_check)
        try:
            deployment.start()
        except BaseException:
            try:
                deployment.stop(timeout_s=0)
            except InfraError:
                # Keep the launch error; the janitor removes what could not be removed now.
                logger.exception("cleanup after a failed launch failed (%s)",
                                 format_labels(spec.labels))
            raise
        return deployment


class DockerDeployment:
    """One engine container (see the module docstring), owned by one thread.

    ``DockerLauncher.launch`` calls ``start``, which creates the container first; ``create``
    alone makes it without starting it (to inspect what Docker was asked for).
    """

    def __init__(self, spec: DeploymentSpec, options: DockerOptions, *,
                 gpu_check: GpuCheck | None = None) -> None:
        self._spec = spec
        self.options = options
        self._gpu_check = gpu_check
        self._phase_timings_s: dict[str, float] = {}
        self._client: DockerClient | None = None
        self._container: Container | None = None
        self._pid: int | None = None
        self._exit_code: int | None = None
        self._port_retries_left = PORT_RETRIES
        self._stopped = False

    # -- what the owner reads ----------------------------------------------------------------

    @property
    def spec(self) -> DeploymentSpec:
        return self._spec

    @property
    def url(self) -> str:
        """On 127.0.0.1 whatever ``spec.host`` says: the port is published on loopback only."""
        return f"http://127.0.0.1:{self._spec.port}"

    @property
    def pid(self) -> int | None:
        """Host pid of the container's init (docker-init, the engine's parent) when it
        started; None before."""
        return self._pid

    @property
    def phase_timings_s(self) -> Mapping[str, float]:
        """``pull_s``: how long the image pull took, when this deployment pulled it."""
        return dict(self._phase_timings_s)

    @property
    def container_id(self) -> str | None:
        return self._container.id if self._container is not None else None

    @property
    def container_name(self) -> str | None:
        return self._container.name if self._container is not None else None

    def returncode(self) -> int | None:
        if not self._stopped and self._container is not None:
            self._state()  # records the exit status once the container has exited
        return self._exit_code

    def log_tail(self, lines: int = 50) -> str:
        """From the container while it exists, from ``spec.log_path`` after ``stop``."""
        if lines <= 0:
            return ""
        if self._container is None or self._stopped:
            return _file_tail(self._spec.log_path, lines)
        try:
            raw = self._container.logs(stdout=True, stderr=True, tail=lines)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
            logger.warning("cannot read the logs of container %s: %s", self.container_name, e)
            return _file_tail(self._spec.log_path, lines)
        return "\n".join(raw.decode("utf-8", errors="replace").splitlines()[-lines:])

    # -- lifecycle ---------------------------------------------------------------------------

    def create(self) -> None:
        """Connect, make sure the image is here (pulling it per ``options.pull``) and create
        the container, not started. Truncates ``spec.log_path``."""
        try:
            self._spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._spec.log_path.write_bytes(b"")
        except OSError as e:
            raise InfraError(f"cannot write the engine log {self._spec.log_path}: {e}") from e
        self._client = self._client or connect()
        self._ensure_image(self._client)
        self._create_container()

    def start(self) -> None:
        """Start the container (creating it first if needed) once the trial's GPUs are found
        free (``GpuBusy`` otherwise); retries a taken host port."""
        if self._container is None:
            self.create()
        ensure_gpus_free(self._spec, self._gpu_check or GpuCheck.from_env())
        while True:
            container = self._require_container()
            with docker_errors(f"start container {container.name}"):
                try:
                    container.start()
                    break
                except docker.errors.APIError as e:
                    self._on_start_failure(e)  # raises, or recreates it on another port
        state = self._state()
        self._pid = (state or {}).get("Pid") or None
        if self._spec.port == 0 and self.options.network_mode != "host":
            self._spec = replace(self._spec, port=self._published_port())
        logger.info("engine container %s started: image %s, host port %d, GPUs %s (%s), log %s"
                    " (%s)", self.container_name, self.options.image, self._spec.port,
                    ",".join(self._spec.gpu_ids) or "none", self.options.gpu_mode,
                    self._spec.log_path, format_labels(self._spec.labels))

    def wait_ready(self, timeout_s: float) -> None:
        """Probe health, then a 1-token completion, through the published port; the container
        state is read before every request, so an exit is reported at once (``EngineExited``,
        classified from ``State.OOMKilled``, the exit status and the log tail)."""
        deadline = time.monotonic() + timeout_s
        probe = ReadinessProbe(self.url, self._spec.health_path, self._spec.served_model_name)
        detail = "no request answered yet"
        with httpx.Client(trust_env=False) as client:
            while True:
                self._raise_if_exited()
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    raise self._not_ready(timeout_s, detail)
                status = probe.step(client, remaining_s)
                if status.ready:
                    self._raise_if_exited()
                    return
                detail = status.detail
                if status.rejected_status is not None:
                    self._raise_if_exited()
                    raise self._rejected(status.rejected_status, detail)
                time.sleep(max(min(POLL_INTERVAL_S, deadline - time.monotonic()), 0.0))

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Stop (SIGTERM, SIGKILL after ``timeout_s``), append the container's output to
        ``spec.log_path``, remove it. Idempotent; a container already gone is fine. Raises
        ``InfraError`` only if Docker cannot be reached (the janitor removes it later)."""
        container = self._container
        if container is None or self._stopped:
            self._close()
            return self._exit_code
        try:
            with docker_errors(f"stop container {container.name}"):
                try:
                    container.stop(timeout=max(math.ceil(timeout_s), 0))
                except docker.errors.NotFound:
                    pass
                self._state()
                self._save_logs(container)
        finally:
            # Also when stopping was interrupted (Ctrl-C) or failed: nothing may stay behind.
            # If even removing fails (Docker unreachable), the janitor finds it by its labels.
            try:
                with docker_errors(f"remove container {container.name}"):
                    force_remove(container)
            finally:
                self._stopped = True
                self._close()
        logger.info("engine container %s stopped and removed: exit status %s (%s)",
                    container.name, self._exit_code, format_labels(self._spec.labels))
        return self._exit_code

    def __enter__(self) -> DockerDeployment:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.stop(self._spec.stop_timeout_s)
        except InfraError:
            if exc is None:
                raise
            # Keep the error that ended the block; the janitor removes what is left.
            logger.exception("teardown of container %s failed", self.container_name)

    # -- helpers -----------------------------------------------------------------------------

    def _ensure_image(self, client: DockerClient) -> None:
        image = self.options.image
        if image_exists(image, client=client):
            return
        if self.options.pull == "never":
            raise InfraError(f"image {image!r} is not on this Docker host and launcher.pull is "
                             "'never'; load or build it here, or set launcher.pull: if_missing")
        self._phase_timings_s["pull_s"] = _pull(image, self._spec.log_path,
                                                self.options.pull_timeout_s, self._spec.labels)

    def _create_container(self) -> None:
        if self._client is None:
            raise RuntimeError("not connected (call create first)")
        options, spec = self.options, self._spec
        labels = container_labels(spec.labels, options.owner)
        kwargs: dict[str, Any] = {
            # The argv is the whole command: it replaces the image's ENTRYPOINT too (vLLM's
            # image has `vllm serve` there, which would otherwise be run twice).
            "entrypoint": list(spec.argv[:1]), "command": list(spec.argv[1:]),
            "name": container_name(labels), "labels": labels,
            "environment": container_env(spec, options), "volumes": list(options.volumes),
            "init": True, "detach": True, "auto_remove": False,
        }
        if options.network_mode is not None:
            kwargs["network_mode"] = options.network_mode
        if options.network_mode != "host":
            # None: Docker picks a free port and holds it for this container.
            kwargs["ports"] = {f"{options.container_port}/tcp": ("127.0.0.1", spec.port or None)}
        if options.ipc_host:
            kwargs["ipc_mode"] = "host"
        elif options.shm_size is not None:
            kwargs["shm_size"] = options.shm_size
        if options.gpu_mode == "device_requests" and spec.gpu_ids:
            kwargs["device_requests"] = [
                DeviceRequest(device_ids=[str(gpu) for gpu in spec.gpu_ids],
                              capabilities=[["gpu"]])]
        with docker_errors(f"create container from {options.image!r}"):
            self._container = self._client.containers.create(options.image, **kwargs)

    def _on_start_failure(self, error: docker.errors.APIError) -> None:
        """Remove the unstartable container; recreate it on a new port if that was taken,
        else raise ``GpuRuntimeUnavailable`` or ``InfraError``."""
        message = _explain(error)
        force_remove(self._require_container())
        self._container = None
        labels = self._spec.labels
        if _GPU_RUNTIME_MISSING in message:
            summary = ("the host's GPU runtime is not configured: Docker cannot give containers"
                       f" GPUs ({message})")
            raise GpuRuntimeUnavailable(
                f"{summary}; install and configure the NVIDIA Container Toolkit on this node, "
                f"or use launcher.gpu_mode: nvidia_env where the NVIDIA runtime is the default "
                f"[{format_labels(labels)}]", reason=FailureReason.INFRA_ERROR,
                summary=summary, labels=labels) from error
        if any(text in message for text in _PORT_TAKEN) and self._port_retries_left > 0:
            # Port 0: Docker picks a free port and holds it, so no other launch can take it.
            logger.warning("host port %d was taken; letting Docker choose one (%s)",
                           self._spec.port, format_labels(labels))
            self._port_retries_left -= 1
            self._spec = replace(self._spec, port=0)
            self._create_container()
            return
        raise InfraError(f"Docker could not start the engine container from "
                         f"{self.options.image!r}: {message} [{format_labels(labels)}]"
                         ) from error

    def _state(self) -> dict[str, Any] | None:
        """Reload the container; its ``State`` (recording the exit status), None if gone."""
        container = self._require_container()
        with docker_errors(f"inspect container {container.name}"):
            try:
                container.reload()
            except docker.errors.NotFound:
                return None
        state: dict[str, Any] = container.attrs.get("State", {})
        if not _is_running(state):
            self._exit_code = exit_status(state.get("ExitCode"))
        return state

    def _published_port(self) -> int:
        """The host port Docker chose for the container port (read after start)."""
        ports = self._require_container().attrs.get("NetworkSettings", {}).get("Ports") or {}
        bindings = ports.get(f"{self.options.container_port}/tcp") or []
        if not bindings:
            raise InfraError(f"Docker published no host port for container "
                             f"{self.container_name} (port {self.options.container_port})")
        return int(bindings[0]["HostPort"])

    def _require_container(self) -> Container:
        if self._container is None:
            raise RuntimeError("the container was not created yet (call start first)")
        return self._container

    def _raise_if_exited(self) -> None:
        state = self._state()
        if state is not None and _is_running(state):
            return
        tail = self.log_tail()
        labels = self._spec.labels
        if state is None:
            reason, summary = (FailureReason.INFRA_ERROR,
                               f"container {self.container_name} was removed while starting")
        else:
            reason, summary = classify_exit(state, tail, self._spec)
        raise EngineExited(
            f"engine container {self.container_name} exited with status {self._exit_code} "
            f"before it was ready ({reason.value}): {summary} [{format_labels(labels)}]",
            exit_code=self._exit_code, reason=reason, summary=summary, log_tail=tail,
            labels=labels)

    def _not_ready(self, timeout_s: float, detail: str) -> EngineNotReady:
        return not_ready_error(self._spec, f"engine container {self.container_name}",
                               timeout_s, detail, self.log_tail())

    def _rejected(self, status_code: int, detail: str) -> ProbeRejected:
        return probe_rejected_error(self._spec, f"engine container {self.container_name}",
                                    status_code, detail, self.log_tail())

    def _save_logs(self, container: Container) -> None:
        try:
            with self._spec.log_path.open("ab") as log:
                for chunk in container.logs(stdout=True, stderr=True, stream=True,
                                            follow=False):
                    log.write(chunk)
        except docker.errors.NotFound:
            logger.warning("container %s vanished before its log was saved", container.name)
        except OSError as e:
            logger.error("cannot save the log of container %s to %s: %s", container.name,
                         self._spec.log_path, e)

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# -- helpers shared with the janitor and the simulated engine's image ------------------------

def connect() -> DockerClient:
    """A client of the Docker Engine named by the environment (``DOCKER_HOST``, default
    socket), checked with a ping. Raises ``InfraError`` when it cannot be reached."""
    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        raise InfraError(f"cannot reach the Docker Engine at {_docker_host()}: {e}; is dockerd "
                         "running, and may this user use its socket?") from e
    return client


@contextmanager
def docker_errors(action: str) -> Iterator[None]:
    """Turn SDK and connection errors raised inside into ``InfraError`` naming ``action``
    (the SDK error stays as ``__cause__``). Catch ``NotFound`` inside to handle it."""
    try:
        yield
    except docker.errors.APIError as e:
        raise InfraError(f"Docker Engine: {action} failed: {_explain(e)}") from e
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        raise InfraError(f"cannot reach the Docker Engine at {_docker_host()} to {action}: "
                         f"{e}") from e


def force_remove(container: Container) -> bool:
    """Remove ``container`` even if it runs; False if it was already gone."""
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as e:
        if "already in progress" in _explain(e):  # another remover won the race
            return False
        raise
    return True


def image_exists(ref: str, *, client: DockerClient | None = None) -> bool:
    """Whether image ``ref`` is on the Docker host (no registry is asked)."""
    own = client is None
    client = client or connect()
    try:
        with docker_errors(f"look up image {ref!r}"):
            try:
                client.images.get(ref)
            except docker.errors.ImageNotFound:
                return False
            return True
    finally:
        if own:
            client.close()


def import_rootfs(ref: str, rootfs_tar: bytes, *, changes: Sequence[str] = ()) -> str:
    """``docker import``: an image tagged ``ref`` from a root filesystem tar, with Dockerfile
    ``changes`` (``LABEL``, ``ENV``); returns the image id. No registry is involved."""
    repository, tag = parse_repository_tag(ref)
    client = connect()
    try:
        with docker_errors(f"import image {ref!r}"):
            client.api.import_image_from_data(rootfs_tar, repository=repository,
                                              tag=tag or "latest", changes=list(changes))
            image_id: str = client.images.get(ref).id
    finally:
        client.close()
    return image_id


def _pull(ref: str, log_path: Path, timeout_s: float, labels: Mapping[str, str]) -> float:
    """Pull ``ref`` within ``timeout_s``, its progress appended to ``log_path``; returns the
    seconds it took. Raises ``PullTimeout`` at the deadline, ``InfraError`` if it fails.

    Docker answers a pull with nothing at all until the registry does (not even headers), and
    the SDK reads without a timeout, so the stream is read in a thread of its own, with a client
    of its own, and this thread waits on it with the deadline (see the module docstring)."""
    repository, tag = parse_repository_tag(ref)
    client = connect()
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def read_stream() -> None:
        try:
            for event in client.api.pull(repository, tag=tag or "latest", stream=True,
                                         decode=True):
                events.put(("event", event))
            events.put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            events.put(("raised", e))
        finally:
            client.close()

    logger.info("pulling image %s (at most %g s; %s)", ref, timeout_s, format_labels(labels))
    started = time.monotonic()
    deadline = started + timeout_s
    last_tick = 0.0
    last_line = "no answer from the registry yet"
    with docker_errors(f"pull image {ref!r}"), log_path.open("a") as log:
        log.write(f"[servetune] pulling image {ref} (benchmark.timeouts.pull_s: {timeout_s:g} s)"
                  "\n")
        log.flush()
        threading.Thread(target=read_stream, name=f"servetune-pull {ref}", daemon=True).start()
        while True:
            try:
                kind, payload = events.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                elapsed_s = time.monotonic() - started
                log.write(f"[servetune] pull of {ref} stopped after {elapsed_s:.1f} s: past "
                          f"benchmark.timeouts.pull_s ({timeout_s:g} s)\n")
                raise PullTimeout(
                    f"pulling image {ref!r} did not finish within {timeout_s:g} s "
                    f"(benchmark.timeouts.pull_s); last progress: {last_line}. Check this "
                    f"node's access to the registry, pull the image on the node beforehand "
                    f"(docker pull {ref}), or raise benchmark.timeouts.pull_s "
                    f"[{format_labels(labels)}]", image=ref, timeout_s=timeout_s,
                    labels=labels) from None
            if kind == "end":
                break
            if kind == "raised":
                raise payload  # docker_errors turns SDK and connection errors into ours
            if "error" in payload:
                raise InfraError(f"Docker Engine: pull image {ref!r} failed: "
                                 f"{payload['error']} [{format_labels(labels)}]")
            if payload.get("progress"):  # byte counters: one line per few seconds is enough
                if time.monotonic() - last_tick < PULL_PROGRESS_EVERY_S:
                    continue
                last_tick = time.monotonic()
            parts = [payload.get("id", ""), payload.get("status", ""),
                     payload.get("progress", "")]
            last_line = " ".join(str(part) for part in parts if part)
            log.write(last_line + "\n")
            log.flush()
        elapsed_s = time.monotonic() - started
        log.write(f"[servetune] pulled image {ref} in {elapsed_s:.1f} s\n")
    logger.info("pulled image %s in %.1f s (%s)", ref, elapsed_s, format_labels(labels))
    return elapsed_s


def _is_running(state: dict[str, Any]) -> bool:
    return state.get("Status") not in ("exited", "dead")


def _explain(error: docker.errors.APIError) -> str:
    return str(error.explanation or error)


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def _file_tail(path: Path, lines: int) -> str:
    try:
        text = path.read_bytes()[-(1 << 20):].decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
