"""A study whose trials run the simulated engine in containers on this machine's Docker
Engine: each container gets exactly its trial's Ray GPU ids and its own port, genai-bench
benchmarks it through the published port, and no container is left afterwards."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from common.config import parse_study
from common.results import TrialStatus
from manager.driver import run_study
from manager.paths import StudyPaths

docker = pytest.importorskip("docker")
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def docker_client():  # type: ignore[no-untyped-def]
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure means no reachable engine
        pytest.skip(f"no Docker Engine reachable: {e}")
    return client


def _watch(client, study: str, seen: list[dict], stop: threading.Event) -> None:  # type: ignore[no-untyped-def,type-arg]
    """Record every live container of the study: trial, GPU ids, host port, time seen."""
    while not stop.is_set():
        try:
            containers = client.containers.list(filters={"label": f"servetune.study={study}"})
        except docker.errors.APIError:  # a container removed while being listed
            continue
        for c in containers:
            env = dict(item.split("=", 1) for item in c.attrs["Config"]["Env"] or [])
            ports = c.attrs["HostConfig"]["PortBindings"] or {}
            bindings = [b for spec in ports.values() for b in (spec or [])]
            seen.append({"at": time.monotonic(), "trial": c.labels["servetune.trial"],
                         "gpus": env.get("NVIDIA_VISIBLE_DEVICES", ""),
                         "cuda": env.get("CUDA_VISIBLE_DEVICES"),
                         "ports": [(b["HostIp"], b["HostPort"]) for b in bindings]})
        stop.wait(0.3)


def test_docker_study_isolates_gpus_and_ports_and_leaves_nothing(docker_client,
                                                                 tmp_path: Path) -> None:
    from worker.sim.image import ensure_sim_image

    tag = ensure_sim_image()
    study = parse_study({
        "name": "docker-study", "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "engine": {"name": "sglang", "simulated": True},
        "launcher": {"kind": "docker", "image": tag, "pull": "never",
                     "gpu_mode": "nvidia_env", "hf_cache": None},
        "search_space": {"tp-size": [1, 2, 4], "chunked-prefill-size": [2048, 8192]},
        "search": {"algorithm": "grid", "max_trials": 4, "max_concurrent_trials": 3},
        "benchmark": {"scenarios": ["D(128,32)"], "concurrency": [4],
                      "requests_per_level": 8, "timeouts": {"startup_s": 60}},
        "cluster": {"gpus_per_node": 8, "dashboard": False}})
    seen: list[dict] = []  # type: ignore[type-arg]
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(docker_client, study.name, seen, stop))
    watcher.start()
    try:
        outcome = run_study(study, StudyPaths.resolve(study, tmp_path))
    finally:
        stop.set()
        watcher.join()
    trials = {str(t.number): t for t in outcome.trials}
    assert len(trials) == 4
    assert all(t.status is TrialStatus.SUCCEEDED for t in trials.values()), [
        (t.reason, t.message, t.log_excerpt[-300:]) for t in trials.values()]
    assert seen, "no container was observed running"
    for obs in seen:
        trial = trials[obs["trial"]]
        assert obs["gpus"].split(",") == trial.gpu_ids
        assert obs["cuda"] is None  # never forwarded into the container
        assert obs["ports"] and all(ip == "127.0.0.1" for ip, _ in obs["ports"])
    # Snapshots taken together: containers alive at once never share a GPU id or a port.
    by_time: dict[float, list[dict]] = {}  # type: ignore[type-arg]
    for obs in seen:
        by_time.setdefault(round(obs["at"], 1), []).append(obs)
    for group in by_time.values():
        gpus = [g for obs in group for g in obs["gpus"].split(",")]
        ports = [p for obs in group for _, p in obs["ports"]]
        assert len(gpus) == len(set(gpus)) and len(ports) == len(set(ports))
    assert docker_client.containers.list(all=True, filters={
        "label": f"servetune.study={study.name}"}) == []
