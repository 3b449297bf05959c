"""What the docker launcher's options mean for one container, without the ``docker`` SDK.

``DockerOptions`` is built by the study config on the driver, so this module imports nothing
heavy; ``worker.launchers.docker`` (the SDK adapter) turns the settings computed here into API
calls. Everything here is pure: no Docker Engine is contacted.

- Environment (``container_env``): the ``pass_env`` names that are set in this process's
  environment (secrets: values are never logged, labelled or written to the log file), then
  ``spec.env`` without ``CUDA_VISIBLE_DEVICES`` (a container given GPUs sees them renumbered
  from 0: forwarding host ids is what made engines report "No accelerator"), then, in
  ``nvidia_env`` mode, ``NVIDIA_VISIBLE_DEVICES=<spec.gpu_ids>`` (the launcher owns GPU pinning).
- Labels (``container_labels``): ``servetune.study``, ``servetune.trial`` (empty if the spec
  has none), ``servetune.owner`` and every spec label, ``servetune.``-prefixed.
- Exit statuses (``exit_status``): Docker reports a process killed by signal N as 128+N; the
  ``Deployment`` protocol wants -N.
- ``State.OOMKilled`` (``classify_exit``) is ``infeasible_config``, "host memory exhausted
  (OOMKilled)": a trial's engine has its node's GPUs to itself, so running out of host RAM at
  startup comes from the config (model size, swap space, CPU offload) and recurs for it;
  retrying would repeat it. GPU out-of-memory is read from the log by the engine's classifier.
"""

from __future__ import annotations

import getpass
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from common.errors import ConfigError
from common.results import FailureReason
from worker.launchers.base import DeploymentSpec

LABEL_PREFIX = "servetune."
STUDY_LABEL = LABEL_PREFIX + "study"
TRIAL_LABEL = LABEL_PREFIX + "trial"
OWNER_LABEL = LABEL_PREFIX + "owner"
PULL_POLICIES = ("never", "if_missing")
GPU_MODES = ("device_requests", "nvidia_env")
_VOLUME = re.compile(r"^(/[^:]*):(/[^:]*)(:(ro|rw))?$")
_SIZE = re.compile(r"^\d+(\.\d+)?[bkmg]?$", re.IGNORECASE)
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")


def default_owner() -> str:
    """This process's user name (its uid where the user has no passwd entry)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # common in containers running as an arbitrary uid
        return str(os.getuid())


@dataclass(frozen=True)
class DockerOptions:
    """How the docker launcher runs containers; checked at construction (``ConfigError``
    naming the ``launcher.<field>``).

    ``image``: the engine image. ``pull``: ``if_missing`` pulls an absent image (progress into
    the trial's engine log), ``never`` fails instead. ``pull_timeout_s``: how long a pull may
    take (``benchmark.timeouts.pull_s``) before ``PullTimeout``. ``gpu_mode``:
    ``device_requests`` (what ``docker run --gpus`` does; needs the NVIDIA Container Toolkit)
    or ``nvidia_env`` (``NVIDIA_VISIBLE_DEVICES``, read by the NVIDIA container runtime where it
    is the default runtime, and by the simulated engine). ``container_port``: the port the
    engine listens on inside the container (argv is built with it). ``ipc_host``: share the
    host's IPC namespace (NCCL and PyTorch workers need a large /dev/shm); when False,
    ``shm_size`` (``"16g"``) sizes /dev/shm. ``volumes``: ``host:container[:ro|rw]``, absolute
    paths. ``pass_env``: variables copied from the operator's environment at launch where set
    (secrets).
    ``owner``: the ``servetune.owner`` label. ``network_mode``: Docker's (default: bridge);
    with ``"host"`` nothing is published and the engine must listen on the spec's port itself.
    """

    image: str
    pull: Literal["never", "if_missing"] = "if_missing"
    pull_timeout_s: float = 1800.0
    gpu_mode: Literal["device_requests", "nvidia_env"] = "device_requests"
    container_port: int = 8000
    ipc_host: bool = True
    shm_size: str | None = None
    volumes: tuple[str, ...] = ()
    pass_env: tuple[str, ...] = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
    owner: str = field(default_factory=default_owner)
    network_mode: str | None = None

    def __post_init__(self) -> None:
        if not self.image.strip():
            raise ConfigError("launcher.image is empty; name the engine image to run",
                              path="launcher.image", value=self.image)
        _check_choice("launcher.pull", self.pull, PULL_POLICIES)
        if not 0 < self.pull_timeout_s < math.inf:
            raise ConfigError(f"benchmark.timeouts.pull_s: {self.pull_timeout_s!r} is not a "
                              "number of seconds > 0", path="benchmark.timeouts.pull_s",
                              value=self.pull_timeout_s)
        _check_choice("launcher.gpu_mode", self.gpu_mode, GPU_MODES)
        if not 1 <= self.container_port <= 65535:
            raise ConfigError(f"launcher.container_port: {self.container_port} is not a port "
                              "(1-65535)", path="launcher.container_port",
                              value=self.container_port)
        if self.shm_size is not None and not _SIZE.match(self.shm_size):
            raise ConfigError(f"launcher.shm_size: {self.shm_size!r} is not a size such as "
                              "'16g' or '512m'", path="launcher.shm_size", value=self.shm_size)
        for volume in self.volumes:
            if not _VOLUME.match(volume):
                raise ConfigError(
                    f"launcher.volumes: {volume!r} is not 'host:container[:ro|rw]' with "
                    "absolute paths", path="launcher.volumes", value=volume)


def container_env(spec: DeploymentSpec, options: DockerOptions) -> dict[str, str]:
    """The container's environment, in the precedence the module docstring gives."""
    env = {name: os.environ[name] for name in options.pass_env if name in os.environ}
    env.update(spec.env)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if options.gpu_mode == "nvidia_env":
        # Empty when there are none: the NVIDIA runtime then gives no GPU (like "void").
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in spec.gpu_ids)
    return env


def container_labels(spec_labels: dict[str, str], owner: str) -> dict[str, str]:
    """The container's labels: study, trial, owner and the spec's, all ``servetune.``-prefixed
    (``study`` and ``servetune.study`` are the same label)."""
    labels = {STUDY_LABEL: "", TRIAL_LABEL: ""}
    for key, value in spec_labels.items():
        labels[key if key.startswith(LABEL_PREFIX) else LABEL_PREFIX + key] = str(value)
    labels[OWNER_LABEL] = owner
    return labels


def container_name(labels: dict[str, str]) -> str:
    """``servetune-<study>-<trial>-<6 hex>``: unique, and readable in ``docker ps``."""
    parts = [_name_part(labels.get(STUDY_LABEL, "")), _name_part(labels.get(TRIAL_LABEL, ""))]
    return "-".join(["servetune", *parts, secrets.token_hex(3)])


def exit_status(code: int | None) -> int | None:
    """Docker's exit code as the ``Deployment`` protocol has it: 128+N (signal N) -> -N."""
    if code is not None and 128 < code <= 128 + 64:
        return -(code - 128)
    return code


def classify_exit(state: dict[str, Any], log_tail: str,
                  spec: DeploymentSpec) -> tuple[FailureReason, str]:
    """Why an exited container failed, from its inspected ``State``: host OOM from
    ``OOMKilled``, else the engine's classifier on the exit status and the log tail."""
    if state.get("OOMKilled"):
        return FailureReason.INFEASIBLE_CONFIG, "host memory exhausted (OOMKilled)"
    return spec.classify(exit_status(state.get("ExitCode")), log_tail)


def _name_part(value: str) -> str:
    return _NAME_UNSAFE.sub("-", value).strip("-.")[:40] or "none"


def _check_choice(path: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{path}: {value!r} is not one of {', '.join(allowed)}", path=path,
                          value=value, allowed=allowed)
