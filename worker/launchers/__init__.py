"""Launchers by name: ``get_launcher("process")``, ``get_launcher("docker", options=...)``.

The registry maps each name to a lazy factory, so looking one launcher up imports only its
module (the docker launcher imports the ``docker`` SDK; the process launcher must not).
Names that are planned but not built yet are listed apart and fail with a clear message.
The docker launcher needs its ``DockerOptions`` (``worker.launchers.docker_options``, which
imports no SDK, so the study config can build them on the driver).

Typical use in a trial (the engine builds argv and env; the launcher runs them)::

    port = free_port()  # worker.launchers.process
    spec = DeploymentSpec(
        argv=engine.command(model, flags, "127.0.0.1", port, served_name), port=port,
        log_path=trial_dir / "engine.log", served_model_name=served_name,
        classify=engine.classify_failure, env=engine.gpu_env(gpu_ids),
        gpu_ids=gpu_ids, health_path=engine.health_path,
        labels={"study": study, "trial": trial_id})
    with get_launcher("process").launch(spec) as deployment:
        deployment.wait_ready(timeout_s=600)
        ...  # benchmark deployment.url
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from common.errors import ConfigError
from worker.launchers.base import (
    Deployment,
    DeploymentError,
    DeploymentSpec,
    EngineExited,
    EngineNotReady,
    GpuBusy,
    Launcher,
    ProbeRejected,
)

if TYPE_CHECKING:
    from worker.gpus import GpuCheck
    from worker.launchers.docker_options import DockerOptions

__all__ = [
    "LAUNCHER_NAMES",
    "Deployment",
    "DeploymentError",
    "DeploymentSpec",
    "EngineExited",
    "EngineNotReady",
    "GpuBusy",
    "Launcher",
    "ProbeRejected",
    "get_launcher",
]


def _process(options: DockerOptions | None, gpu_check: GpuCheck | None) -> Launcher:
    if options is not None:
        raise TypeError("the process launcher takes no options")
    from worker.launchers.process import ProcessLauncher

    return ProcessLauncher(gpu_check=gpu_check)


def _docker(options: DockerOptions | None, gpu_check: GpuCheck | None) -> Launcher:
    if options is None:
        raise ConfigError("launcher.image is required for the docker launcher: name the engine "
                          "image to run (e.g. vllm/vllm-openai)", path="launcher.image")
    from worker.launchers.docker import DockerLauncher

    return DockerLauncher(options, gpu_check=gpu_check)


_FACTORIES: dict[str, Callable[[DockerOptions | None, GpuCheck | None], Launcher]] = {
    "process": _process,
    "docker": _docker,
}
# Planned launchers and why they cannot be used yet.
_NOT_YET_AVAILABLE: dict[str, str] = {}
LAUNCHER_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def get_launcher(name: str, *, options: DockerOptions | None = None,
                 gpu_check: GpuCheck | None = None) -> Launcher:
    """The launcher registered as ``name``; ``options`` are the docker launcher's (required
    there, refused with ``TypeError`` by the process launcher). ``gpu_check``: how both check
    the trial's GPUs before launch (``worker.gpus``; None: from the node's environment).

    Raises ``ConfigError``: for docker without options (``launcher.image`` is required); for a
    planned launcher, saying it is not available yet; for an unknown name, listing the
    available ones.
    """
    factory = _FACTORIES.get(name)
    if factory is not None:
        return factory(options, gpu_check)
    if name in _NOT_YET_AVAILABLE:
        raise ConfigError(f"launcher {name!r} is not available yet: {_NOT_YET_AVAILABLE[name]}",
                          path="launcher", value=name, allowed=LAUNCHER_NAMES)
    planned = f" (planned: {', '.join(_NOT_YET_AVAILABLE)})" if _NOT_YET_AVAILABLE else ""
    raise ConfigError(
        f"unknown launcher {name!r}; available launchers: {', '.join(LAUNCHER_NAMES)}{planned}",
        path="launcher", value=name, allowed=LAUNCHER_NAMES)
