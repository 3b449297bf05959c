"""A Docker image that runs this installation's simulated engine, built without a registry.

For machines without GPUs or registry access (tests, laptops, CI): the image is ``docker
import`` of an empty tar archive (no files, built in a fraction of a second), and the container
sees this machine's interpreter and servetune through read-only bind mounts at the same paths
(``sim_volumes``), so ``sim_command_prefix`` is valid inside it. The docker launcher runs it like
any engine image; with ``gpu_mode="nvidia_env"`` the simulated engine sees its GPU count in
``NVIDIA_VISIBLE_DEVICES``. Nothing of the host is writable from the container. It mounts the
host's ``/etc`` read-only (the dynamic loader's and Python's configuration), so use it only on
trusted machines. Real GPU hosts run real engine images; ``deploy/`` has the worker image's
Dockerfile.

Use::

    tag = ensure_sim_image()
    options = DockerOptions(image=tag, pull="never", gpu_mode="nvidia_env",
                            volumes=sim_volumes())
    argv = [*sim_command_prefix(), "--engine", "vllm", model, "--host", "0.0.0.0",
            "--port", str(options.container_port), ...]
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path

import common
import worker
from worker.launchers.docker import image_exists, import_rootfs

SIM_IMAGE_TAG = "servetune-sim:local"
# Host directories the interpreter needs: programs, shared libraries, loader configuration.
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/bin", "/etc")
IMAGE_LABEL = "servetune.image=sim-host-mounts"


def ensure_sim_image(tag: str = SIM_IMAGE_TAG) -> str:
    """Import the empty image as ``tag`` unless the Docker host has it; returns ``tag``.

    Idempotent and cheap (one image lookup when present; an import of 10 KiB otherwise).
    Raises ``InfraError`` if the Docker Engine cannot be reached.
    """
    if not image_exists(tag):
        import_rootfs(tag, _empty_tar(), changes=[
            f"LABEL {IMAGE_LABEL}",
            # For operators who `docker exec` into it; the engine's argv uses absolute paths.
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    return tag


def sim_volumes() -> tuple[str, ...]:
    """Read-only ``host:container:ro`` mounts, each at its own path: the system directories
    (those that exist), the Python installation the interpreter resolves to
    (``sys.base_prefix``), the virtualenv (``sys.prefix``) and the source directories of the
    ``worker`` and ``common`` packages (the repository, for an editable install). A path inside
    another mounted one is left out: the outer mount already shows it."""
    candidates = [*SYSTEM_DIRS, sys.base_prefix, sys.prefix,
                  *(str(Path(package.__file__).resolve().parents[1])
                    for package in (worker, common) if package.__file__)]
    chosen: list[str] = []
    for path in (os.path.abspath(candidate) for candidate in candidates):
        if not os.path.isdir(path) or any(_inside(path, outer) for outer in chosen):
            continue
        chosen = [outer for outer in chosen if not _inside(outer, path)] + [path]
    return tuple(f"{path}:{path}:ro" for path in chosen)


def sim_command_prefix() -> list[str]:
    """``[<this interpreter>, -m, worker.sim, serve]``: valid inside the container thanks to
    ``sim_volumes``; append ``--engine vllm|sglang`` and the engine's flags."""
    return [sys.executable, "-m", "worker.sim", "serve"]


def _empty_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w"):
        pass  # no members: the image's root filesystem is empty
    return buffer.getvalue()


def _inside(path: str, outer: str) -> bool:
    return path == outer or path.startswith(outer.rstrip("/") + "/")
