"""A study whose trials run the simulated engine in containers on this machine's Docker
Engine: each container gets exactly its trial's Ray GPU ids and its own port, genai-bench
benchmarks it through the published port, a container left by an earlier trial whose actor was
killed is removed by the driver's janitor, and no container is left afterwards.

GPU ids travel as ``NVIDIA_VISIBLE_DEVICES`` (``gpu_mode: nvidia_env``): without the NVIDIA
Container Toolkit a container with a device request cannot start here; the device request
itself is checked at creation in tests/worker/test_docker_launcher.py. Skipped only when no
Docker Engine can be reached."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from common.config import parse_study
from common.errors import InfraError
from common.results import TrialStatus
from manager.driver import run_study
from manager.paths import StudyPaths
from worker.engines import get_engine
from worker.launchers import DeploymentSpec
from worker.launchers.docker import DockerLauncher, DockerOptions, connect
from worker.launchers.docker_janitor import remove_orphans
from worker.sim.image import sim_volumes

# Ray, several containers and genai-bench on a 2-core machine: minutes when it is busy.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]
STUDY = "docker-study"
LEFTOVER_TRIAL = "99"


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = connect()
    except InfraError as e:
        pytest.skip(f"no Docker Engine reachable: {e}")
    yield client
    client.close()


def _leftover_container(tag: str, log_path: Path) -> str:
    """A running engine container of this study that no trial owns any more, as a trial actor
    killed with SIGKILL leaves it (launched, never stopped); returns its name."""
    options = DockerOptions(image=tag, pull="never", gpu_mode="nvidia_env",
                            volumes=sim_volumes())
    spec = DeploymentSpec(
        argv=[sys.executable, "-c", "import time; time.sleep(300)"], port=0,
        log_path=log_path, served_model_name="none", classify=get_engine("sim").classify_failure,
        labels={"study": STUDY, "trial": LEFTOVER_TRIAL})
    name = DockerLauncher(options).launch(spec).container_name
    assert name is not None
    return name


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


def test_docker_study_isolates_gpus_and_ports_and_leaves_nothing(
        docker_client: docker.DockerClient, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from worker.sim.image import ensure_sim_image

    tag = ensure_sim_image()
    study = parse_study({
        "name": STUDY, "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
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
    leftover = _leftover_container(tag, tmp_path / "leftover.log")
    try:
        watcher.start()
        outcome = run_study(study, StudyPaths.resolve(study, tmp_path))
        left = docker_client.containers.list(all=True, filters={
            "label": f"servetune.study={study.name}"})
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
        remove_orphans(study.name, None, client=docker_client)  # what a failed run left
    assert (f"janitor (before the study): removed container {leftover} of trial "
            f"{LEFTOVER_TRIAL} (running)") in capsys.readouterr().out
    seen = [obs for obs in seen if obs["trial"] != LEFTOVER_TRIAL]  # seen before it went
    trials = {str(t.number): t for t in outcome.trials}
    assert len(trials) == 5 and trials["0"].baseline  # the baseline (a Ray task) included
    assert all(t.status is TrialStatus.SUCCEEDED for t in trials.values()), [
        (t.reason, t.message, t.log_excerpt[-300:]) for t in trials.values()]
    assert seen, "no container was observed running"
    for t in trials.values():  # image present (pull: never): no pull phase, startup timed
        assert "pull_s" not in t.phase_timings_s and t.phase_timings_s["startup_s"] > 0
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
    assert left == []


def test_docker_study_pulls_a_missing_image_within_pull_s_and_times_the_pull(
        docker_client: docker.DockerClient, tmp_path: Path) -> None:
    """The engine image is only in a registry (one on 127.0.0.1, run by the test): the first
    trial pulls it within ``benchmark.timeouts.pull_s``, its progress in that trial's
    engine.log, and records ``pull_s`` apart from ``startup_s``; the next trial finds it and
    pulls nothing. The image runs the simulated engine from host mounts, like the local one."""
    from tests.worker.registry import Registry
    from worker.sim.image import sim_command_prefix

    registry = Registry()
    ref = registry.add_image("servetune-study-pulled", "v1", {"etc/servetune-pulled": b"x"})
    study = parse_study({
        "name": "docker-pull-study", "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "engine": {"name": "sglang", "simulated": True},
        "launcher": {"kind": "docker", "image": ref, "pull": "if_missing",
                     "gpu_mode": "nvidia_env", "hf_cache": None,
                     "volumes": list(sim_volumes()), "command": sim_command_prefix()},
        "search_space": {"tp-size": [1, 2]},
        "search": {"algorithm": "grid", "max_trials": 2, "max_concurrent_trials": 1,
                   "baseline": False},
        "benchmark": {"scenarios": ["D(128,32)"], "concurrency": [2],
                      "requests_per_level": 4, "timeouts": {"startup_s": 60, "pull_s": 120}},
        "cluster": {"gpus_per_node": 2, "dashboard": False}})
    paths = StudyPaths.resolve(study, tmp_path)
    try:
        outcome = run_study(study, paths)
        left = docker_client.containers.list(all=True, filters={
            "label": f"servetune.study={study.name}"})
    finally:
        remove_orphans(study.name, None, client=docker_client)  # what a failed run left
        registry.close()
        for image in docker_client.images.list(name=ref.rsplit(":", 1)[0]):
            docker_client.images.remove(image.id, force=True)
    first, second = sorted(outcome.trials, key=lambda t: t.number)
    assert [t.status for t in (first, second)] == [TrialStatus.SUCCEEDED] * 2, [
        (t.reason, t.message, t.log_excerpt[-300:]) for t in (first, second)]
    assert 0 < first.phase_timings_s["pull_s"] < 60
    assert 0 < first.phase_timings_s["startup_s"] < first.phase_timings_s["total_s"]
    assert "pull_s" not in second.phase_timings_s
    log = (paths.results_dir / study.name / "trial-0000" / "engine.log").read_text()
    assert f"[servetune] pulling image {ref} (benchmark.timeouts.pull_s: 120 s)" in log
    assert "Pull complete" in log and f"Status: Downloaded newer image for {ref}" in log
    assert "pulling image" not in (
        paths.results_dir / study.name / "trial-0001" / "engine.log").read_text()
    assert left == []
