"""The janitor for docker deployments: find and remove containers whose trial no longer runs.

A trial actor can die without running its teardown (node loss, ``ray.kill``, SIGKILL), and a
container, unlike a child process, does not die with its parent. Every container the docker
launcher starts carries the labels ``servetune.study``, ``servetune.trial`` and
``servetune.owner``; the driver (or an operator) calls ``remove_orphans`` with the trials that
are still live, and everything else of the study goes, running or exited.

Callers must list every trial that may be starting: a container created between the driver's
look at its trials and this call would otherwise be removed under a live trial. Docker is
reached through ``worker.launchers.docker`` (the one module that imports the SDK); an
unreachable Docker Engine raises ``InfraError``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from worker.launchers.docker import DockerClient, connect, docker_errors, force_remove
from worker.launchers.docker_options import OWNER_LABEL, STUDY_LABEL, TRIAL_LABEL

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerInfo:
    """One servetune container as the janitor saw it (``status`` as Docker says: running,
    exited, created, ...)."""

    name: str
    id: str
    study: str
    trial: str
    status: str
    owner: str = ""


def find_servetune_containers(client: DockerClient | None,
                              study: str | None) -> list[ContainerInfo]:
    """Every container labelled ``servetune.study`` (equal to ``study`` when given), running
    or not, sorted by name. ``client`` None: connect from the environment for this call."""
    own = client is None
    client = client or connect()
    try:
        return sorted((info for _, info in _list(client, study)), key=lambda info: info.name)
    finally:
        if own:
            client.close()


def remove_orphans(study: str | None, live_trials: set[str] | None,
                   client: DockerClient | None = None) -> list[ContainerInfo]:
    """Force-remove the containers of ``study`` (every study: None) whose ``servetune.trial``
    is not in ``live_trials`` (None: remove them all). Returns what was removed, sorted by
    name; a container that disappeared meanwhile is not listed. Raises ``InfraError`` if Docker
    is unreachable. ``client`` None: connect from the environment for this call.
    """
    own = client is None
    client = client or connect()
    removed: list[ContainerInfo] = []
    try:
        for container, info in _list(client, study):
            if live_trials is not None and info.trial in live_trials:
                continue
            with docker_errors(f"remove container {info.name}"):
                if not force_remove(container):
                    continue  # gone already (its own teardown, or another janitor)
            logger.warning("removed orphaned container %s (study=%s trial=%s owner=%s, was %s)",
                           info.name, info.study, info.trial, info.owner, info.status)
            removed.append(info)
    finally:
        if own:
            client.close()
    return sorted(removed, key=lambda info: info.name)


def _list(client: DockerClient, study: str | None) -> list[tuple[Any, ContainerInfo]]:
    label = STUDY_LABEL if study is None else f"{STUDY_LABEL}={study}"
    with docker_errors("list servetune containers"):
        # sparse: one list call, labels and state included; a full inspect per container
        # would race with containers being removed meanwhile.
        containers = client.containers.list(all=True, sparse=True, filters={"label": label})
    return [(container, _info(container.attrs)) for container in containers]


def _info(attrs: dict[str, Any]) -> ContainerInfo:
    labels: dict[str, str] = attrs.get("Labels") or {}
    names: list[str] = attrs.get("Names") or []
    return ContainerInfo(
        name=names[0].lstrip("/") if names else "", id=str(attrs.get("Id", "")),
        study=labels.get(STUDY_LABEL, ""), trial=labels.get(TRIAL_LABEL, ""),
        status=str(attrs.get("State", "")), owner=labels.get(OWNER_LABEL, ""))
