"""The docker launcher against this machine's Docker Engine, running the simulated engine.

The simulated engine runs from ``worker.sim.image`` (an empty imported image plus read-only
host mounts), so no registry and no GPU are needed; the pull tests run a registry of their own
on 127.0.0.1 (``tests/worker/registry.py``). Every test labels its containers with a study of its
own (``test-<random>``) and removes them all afterwards, even when it fails; an image a test
pulls is removed by it. Skipped only when no Docker Engine can be reached.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.errors import ConfigError, InfraError
from common.results import FailureReason
from tests.worker.registry import Registry
from worker.engines import get_engine
from worker.gpus import GpuCheck, GpuMemory, GpuProcess
from worker.launchers import (
    DeploymentSpec,
    EngineExited,
    EngineNotReady,
    GpuBusy,
    ProbeRejected,
    get_launcher,
)
from worker.launchers.docker import (
    DockerDeployment,
    DockerLauncher,
    GpuRuntimeUnavailable,
    PullTimeout,
    connect,
)
from worker.launchers.docker_janitor import find_servetune_containers, remove_orphans
from worker.launchers.docker_options import DockerOptions, classify_exit, exit_status
from worker.launchers.process import free_port
from worker.sim.image import ensure_sim_image, sim_command_prefix, sim_volumes

pytestmark = pytest.mark.integration

SIM = get_engine("sim")
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
CONTAINER_PORT = 8000
REPO = Path(__file__).resolve().parents[2]


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A client of the local Docker Engine; skips the tests when none can be reached."""
    try:
        client = connect()
    except InfraError as e:
        pytest.skip(f"no Docker Engine reachable: {e}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def sim_image(docker_client: Any) -> str:
    """The simulated engine's image, imported once per session (cheap when present)."""
    return ensure_sim_image()


@pytest.fixture
def study(docker_client: Any) -> Iterator[str]:
    """A study name of this test's own; every container labelled with it goes at the end."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    remove_orphans(name, None, client=docker_client)


@pytest.fixture
def registry(docker_client: Any) -> Iterator[Registry]:
    """A registry of this test's own on 127.0.0.1; stalled requests are answered at the end."""
    server = Registry()
    yield server
    server.close()


@pytest.fixture
def options(sim_image: str) -> DockerOptions:
    """Run the simulated engine image; GPUs passed as NVIDIA_VISIBLE_DEVICES (no toolkit)."""
    return DockerOptions(image=sim_image, pull="never", gpu_mode="nvidia_env",
                         volumes=sim_volumes(), container_port=CONTAINER_PORT)


def sim_spec(tmp_path: Path, study: str, flags: list[str], *, trial: str = "7",
             gpu_ids: list[str] | None = None, model: str = LLAMA_8B,
             port: int | None = None) -> DeploymentSpec:
    """The simulated engine's argv as the trial builds it, listening on the container port."""
    gpu_ids = ["0"] if gpu_ids is None else gpu_ids
    argv = SIM.command(model, [*flags, "--sim-startup-scale", "0.01"], "0.0.0.0",
                       CONTAINER_PORT, "llama")
    return DeploymentSpec(
        argv=argv, port=free_port() if port is None else port,
        log_path=tmp_path / f"engine-{trial}.log", served_model_name="llama",
        classify=SIM.classify_failure, env=SIM.gpu_env(gpu_ids), gpu_ids=gpu_ids,
        health_path=SIM.health_path, labels={"servetune.study": study, "trial": trial})


def sleeper_spec(tmp_path: Path, study: str, trial: str) -> DeploymentSpec:
    """A container that only sleeps: for lifecycle tests that need no engine."""
    return DeploymentSpec(
        argv=[sys.executable, "-c", "import time; print('sleeping', flush=True); "
              "time.sleep(300)"],
        port=0, log_path=tmp_path / f"sleeper-{trial}.log", served_model_name="none",
        classify=SIM.classify_failure, labels={"study": study, "trial": trial})


def wait_for_output(deployment: DockerDeployment, text: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in deployment.log_tail():
        assert time.monotonic() < deadline, f"{text!r} not in {deployment.log_tail()!r}"
        time.sleep(0.05)


def exists(client: Any, container_id: str | None) -> bool:
    return bool(container_id) and bool(client.containers.list(all=True,
                                                              filters={"id": container_id}))


# -- the image -----------------------------------------------------------------------------

def test_the_sim_image_is_imported_from_nothing_in_well_under_a_second(
        docker_client: Any) -> None:
    """A fresh tag (not the cached one) is built from an empty tar; a second call reuses it."""
    tag = f"servetune-sim:test-{uuid.uuid4().hex[:8]}"
    try:
        started = time.monotonic()
        assert ensure_sim_image(tag) == tag
        build_s = time.monotonic() - started
        image = docker_client.images.get(tag)
        assert image.attrs["Config"]["Labels"] == {"servetune.image": "sim-host-mounts"}
        assert ensure_sim_image(tag) == tag and docker_client.images.get(tag).id == image.id
    finally:
        docker_client.images.remove(tag, force=True)
    print(f"sim image build: {build_s:.2f} s")
    assert build_s < 10  # the brief allows 2 minutes; an import of 10 KiB takes ~0.1 s


def test_sim_mounts_are_read_only_and_cover_the_interpreter() -> None:
    volumes = sim_volumes()
    hosts = [volume.split(":")[0] for volume in volumes]
    assert all(volume.endswith(":ro") and volume.split(":")[0] == volume.split(":")[1]
               for volume in volumes)
    assert "/usr" in hosts and str(REPO) in hosts and sys.base_prefix in hosts
    assert len(hosts) == len(set(hosts))
    assert sim_command_prefix() == [sys.executable, "-m", "worker.sim", "serve"]


# -- the ready path ----------------------------------------------------------------------------

def test_a_sim_container_on_gpus_2_and_5_serves_and_is_gone_after_the_block(
        tmp_path: Path, study: str, options: DockerOptions, docker_client: Any,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """nvidia_env mode: the engine sees its two GPUs as NVIDIA_VISIBLE_DEVICES=2,5 and never
    the host's CUDA_VISIBLE_DEVICES; labels set; port bound on 127.0.0.1 only; the log is kept
    and the container removed after the block; a passed secret stays out of labels and logs."""
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    caplog.set_level(logging.DEBUG)
    spec = sim_spec(tmp_path, study, ["-tp", "2"], gpu_ids=["2", "5"])
    assert spec.env == {"CUDA_VISIBLE_DEVICES": "2,5"}  # what the engine asked for
    started = time.monotonic()
    with DockerLauncher(options).launch(spec) as deployment:
        deployment.wait_ready(timeout_s=60)
        ready_s = time.monotonic() - started
        container_id = deployment.container_id
        attrs = docker_client.api.inspect_container(container_id)
        response = httpx.post(deployment.url + "/v1/completions", trust_env=False, timeout=10,
                              json={"model": "llama", "prompt": "hello", "max_tokens": 4})
        assert response.status_code == 200
        assert response.json()["usage"]["completion_tokens"] == 4
        assert deployment.returncode() is None
        assert deployment.pid is not None and deployment.pid > 0
        assert deployment.url == f"http://127.0.0.1:{spec.port}"
    print(f"docker sim: launch to ready {ready_s:.2f} s")

    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "2,5"
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert env["HF_TOKEN"] == "hf_secret_value_123"  # passed through from our environment
    labels = attrs["Config"]["Labels"]
    assert labels["servetune.study"] == study and labels["servetune.trial"] == "7"
    assert labels["servetune.owner"] == options.owner
    assert "hf_secret" not in str(labels)
    assert attrs["Name"].startswith(f"/servetune-{study}-7-")
    assert attrs["Config"]["Entrypoint"] + attrs["Config"]["Cmd"] == spec.argv
    assert attrs["HostConfig"]["PortBindings"] == {
        f"{CONTAINER_PORT}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(spec.port)}]}
    assert attrs["HostConfig"]["IpcMode"] == "host" and attrs["HostConfig"]["Init"] is True
    assert attrs["HostConfig"]["AutoRemove"] is False
    assert not attrs["HostConfig"]["DeviceRequests"]

    assert not exists(docker_client, container_id)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: killed by SIGTERM, -15.
    assert deployment.returncode() == -15
    log = spec.log_path.read_text()
    assert "Application startup complete" in log
    assert "Application startup complete" in deployment.log_tail()
    assert "hf_secret" not in log and "hf_secret" not in caplog.text
    assert ready_s < 30  # ~1.2 s here


def test_two_launches_at_once_never_share_a_host_port(
        tmp_path: Path, study: str, options: DockerOptions) -> None:
    """Both ask for the same host port: one gets it, the other one Docker picks; both serve.
    Port 0 lets Docker choose from the start."""
    port = free_port()
    specs = [sim_spec(tmp_path, study, [], trial="a", port=port),
             sim_spec(tmp_path, study, [], trial="b", port=port),
             sim_spec(tmp_path, study, [], trial="c", port=0)]
    launcher = DockerLauncher(options)
    with ThreadPoolExecutor(len(specs)) as pool:
        deployments = list(pool.map(launcher.launch, specs))
    try:
        ports = [deployment.spec.port for deployment in deployments]
        assert len(set(ports)) == 3 and port in ports and 0 not in ports
        for deployment in deployments:
            deployment.wait_ready(timeout_s=30)
            assert deployment.url.endswith(f":{deployment.spec.port}")
            response = httpx.post(deployment.url + "/v1/completions", trust_env=False,
                                  timeout=10,
                                  json={"model": "llama", "prompt": "x", "max_tokens": 1})
            assert response.status_code == 200
    finally:
        for deployment in deployments:
            deployment.stop()


# -- failure paths ---------------------------------------------------------------------------

def test_device_requests_carry_the_gpu_ids_and_a_host_without_gpu_runtime_is_infra_error(
        tmp_path: Path, study: str, options: DockerOptions, docker_client: Any) -> None:
    """device_requests mode: the created container asks for GPUs 2 and 5; starting it here
    (no NVIDIA Container Toolkit) is a setup error, and no container is left behind."""
    options = dataclasses.replace(options, gpu_mode="device_requests")
    spec = sim_spec(tmp_path, study, ["-tp", "2"], gpu_ids=["2", "5"])
    deployment = DockerDeployment(spec, options)
    deployment.create()
    try:
        attrs = docker_client.api.inspect_container(deployment.container_id)
        assert attrs["HostConfig"]["DeviceRequests"] == [{
            "Driver": "", "Count": 0, "DeviceIDs": ["2", "5"], "Capabilities": [["gpu"]],
            "Options": {}}]
        assert "NVIDIA_VISIBLE_DEVICES" not in str(attrs["Config"]["Env"])
        probe_start_ok = True
        try:
            deployment.start()
        except GpuRuntimeUnavailable:
            probe_start_ok = False
    finally:
        deployment.stop()
    if probe_start_ok:
        pytest.skip("this Docker host has a GPU runtime: the missing-runtime path cannot run")

    with pytest.raises(GpuRuntimeUnavailable) as info:
        DockerLauncher(options).launch(spec)
    error = info.value
    assert error.reason is FailureReason.INFRA_ERROR
    assert "GPU runtime is not configured" in str(error)
    assert "could not select device driver" in error.summary
    assert "NVIDIA Container Toolkit" in str(error)
    assert find_servetune_containers(docker_client, study) == []


def test_an_engine_that_does_not_fit_exits_fast_with_its_oom_line(
        tmp_path: Path, study: str, options: DockerOptions, docker_client: Any) -> None:
    """Llama-3.1-70B on one 80 GB GPU: EngineExited within seconds, not at the deadline."""
    spec = sim_spec(tmp_path, study, [], model=LLAMA_70B)
    started = time.monotonic()
    with pytest.raises(EngineExited) as info:
        with DockerLauncher(options).launch(spec) as deployment:
            deployment.wait_ready(timeout_s=120)
    assert time.monotonic() - started < 20  # ~1 s here; far from the deadline even under load
    error = info.value
    assert error.reason is FailureReason.INFEASIBLE_CONFIG
    assert error.exit_code == 1
    assert error.summary.startswith("torch.OutOfMemoryError: CUDA out of memory")
    assert "torch.OutOfMemoryError: CUDA out of memory" in error.log_tail
    assert error.labels["servetune.study"] == study and "trial=7" in str(error)
    assert not exists(docker_client, deployment.container_id)
    assert "CUDA out of memory" in spec.log_path.read_text()


def test_the_engine_counts_the_gpus_it_is_given_through_nvidia_visible_devices(
        tmp_path: Path, study: str, options: DockerOptions) -> None:
    """tp 1 on GPUs 2,5: the simulated engine sees two GPUs in the container and refuses, as a
    real one would; that is our setup's fault (infra_error), not the config's."""
    with pytest.raises(EngineExited) as info:
        spec = sim_spec(tmp_path, study, ["-tp", "1"], gpu_ids=["2", "5"])
        with DockerLauncher(options).launch(spec) as deployment:
            deployment.wait_ready(timeout_s=30)
    assert info.value.reason is FailureReason.INFRA_ERROR
    assert "makes 2 visible" in info.value.log_tail


def test_a_refused_probe_fails_at_once_with_the_status(
        tmp_path: Path, study: str, options: DockerOptions) -> None:
    """The engine serves "llama" but the spec probes "mistral": 404, our setup's fault."""
    spec = dataclasses.replace(sim_spec(tmp_path, study, []), served_model_name="mistral")
    started = time.monotonic()
    with pytest.raises(ProbeRejected) as info:
        with DockerLauncher(options).launch(spec) as deployment:
            deployment.wait_ready(timeout_s=120)
    assert time.monotonic() - started < 30
    assert info.value.status_code == 404
    assert info.value.reason is FailureReason.INFRA_ERROR


def test_an_engine_that_hangs_at_startup_is_not_ready_at_the_deadline(
        tmp_path: Path, study: str, options: DockerOptions, docker_client: Any) -> None:
    spec = sim_spec(tmp_path, study, ["--sim-hang-at-startup"])
    started = time.monotonic()
    with pytest.raises(EngineNotReady) as info:
        with DockerLauncher(options).launch(spec) as deployment:
            deployment.wait_ready(timeout_s=2.0)
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 15, elapsed  # ~2.5 s here: no SIGKILL wait at teardown
    assert info.value.reason is FailureReason.STARTUP_TIMEOUT
    assert "503" in info.value.summary
    assert "hanging at startup" in info.value.log_tail
    assert not exists(docker_client, deployment.container_id)
    assert find_servetune_containers(docker_client, study) == []


def test_a_missing_image_or_an_unreachable_docker_is_an_infra_error(
        tmp_path: Path, study: str, options: DockerOptions, docker_client: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    spec = sim_spec(tmp_path, study, [])
    missing = f"servetune-test-missing-{uuid.uuid4().hex[:8]}:none"
    never = dataclasses.replace(options, image=missing, pull="never")
    with pytest.raises(InfraError, match="not on this Docker host and launcher.pull is 'never'"):
        DockerLauncher(never).launch(spec)
    # No registry is reachable here, so pulling fails too: still ours, not an SDK error.
    with pytest.raises(InfraError, match="pull image"):
        DockerLauncher(dataclasses.replace(never, pull="if_missing")).launch(spec)
    assert "pulling image" in spec.log_path.read_text()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(InfraError, match="cannot reach the Docker Engine"):
        DockerLauncher(options).launch(spec)
    monkeypatch.delenv("DOCKER_HOST")
    assert find_servetune_containers(docker_client, study) == []


def test_a_host_oom_kill_is_an_infeasible_config_and_signals_read_as_negative() -> None:
    """Exit state reading (no container needed): OOMKilled wins over the log; 137 is -9."""
    spec = sim_spec(Path("/nonexistent"), "test-x", [], port=1)
    state = {"Status": "exited", "ExitCode": 137, "OOMKilled": True}
    assert classify_exit(state, "Killed", spec) == (FailureReason.INFEASIBLE_CONFIG,
                                                    "host memory exhausted (OOMKilled)")
    reason, summary = classify_exit({**state, "OOMKilled": False}, "", spec)
    assert reason is FailureReason.ENGINE_CRASH and "SIGKILL" in summary
    assert [exit_status(code) for code in (0, 1, 137, 143, None)] == [0, 1, -9, -15, None]


# -- the image pull --------------------------------------------------------------------------

def test_if_missing_pulls_the_image_with_its_progress_in_the_engine_log_and_times_it(
        tmp_path: Path, study: str, options: DockerOptions, registry: Registry,
        docker_client: Any) -> None:
    """The image is only in the registry: the launch pulls it (layer progress and the digest in
    engine.log, before the engine's own output), records ``pull_s`` and serves from it; a second
    launch finds it here, pulls nothing and records no pull (``pull: never`` works now)."""
    ref = registry.add_image(f"servetune-pulled-{study}", "v1",
                             {"etc/servetune-pulled": b"x" * 200_000})
    pulling = dataclasses.replace(options, image=ref, pull="if_missing", pull_timeout_s=60)
    try:
        spec = sim_spec(tmp_path, study, [], trial="1")
        with DockerLauncher(pulling).launch(spec) as deployment:
            pull_s = deployment.phase_timings_s["pull_s"]
            deployment.wait_ready(timeout_s=60)
        log = spec.log_path.read_text()
        assert ("GET", "/v2/") in registry.requests
        lines = log.splitlines()
        assert lines[0] == f"[servetune] pulling image {ref} (benchmark.timeouts.pull_s: 60 s)"
        for text in ("Pulling fs layer", "Download complete", "Pull complete", "Digest: sha256:",
                     f"Status: Downloaded newer image for {ref}"):
            assert text in log, text
        assert log.index(f"[servetune] pulled image {ref} in") < log.index(
            "Application startup complete")
        assert 0 < pull_s < 30
        assert docker_client.images.get(ref).labels == {"servetune.test": "pulled"}

        again = sim_spec(tmp_path, study, [], trial="2")
        with DockerLauncher(dataclasses.replace(pulling, pull="never")).launch(again) as second:
            assert second.phase_timings_s == {}
            second.wait_ready(timeout_s=60)
        assert "pulling image" not in again.log_path.read_text()
    finally:
        docker_client.images.remove(ref, force=True)


def test_a_pull_that_stalls_fails_at_its_deadline_and_leaves_nothing(
        tmp_path: Path, study: str, options: DockerOptions, registry: Registry,
        docker_client: Any) -> None:
    """The registry answers Docker's /v2/ probe, then never answers the manifest request, so
    the pull hangs: at ``pull_timeout_s`` it is a ``PullTimeout`` (an InfraError, like every
    failure to bring the image here), in the log too; no container, no image; once the registry
    answers, the thread that read the pull is gone."""
    ref = registry.add_stalled(f"stall-{study}")
    stalled = dataclasses.replace(options, image=ref, pull="if_missing", pull_timeout_s=1.5)
    spec = sim_spec(tmp_path, study, [])
    started = time.monotonic()
    with pytest.raises(PullTimeout) as info:
        DockerLauncher(stalled).launch(spec)
    elapsed_s = time.monotonic() - started
    assert 1.5 <= elapsed_s < 6, elapsed_s  # ~1.5 s here
    error = info.value
    assert isinstance(error, InfraError)
    assert error.image == ref and error.timeout_s == 1.5 and error.labels["trial"] == "7"
    assert f"pulling image {ref!r} did not finish within 1.5 s" in str(error)
    assert "benchmark.timeouts.pull_s" in str(error) and f"docker pull {ref}" in str(error)
    # Docker really reached this registry and hung on the manifest, not somewhere else.
    assert registry.requests[0] == ("GET", "/v2/")
    assert any("/manifests/latest" in path for _, path in registry.requests)
    log = spec.log_path.read_text()
    assert f"[servetune] pulling image {ref}" in log
    assert f"[servetune] pull of {ref} stopped after" in log
    assert find_servetune_containers(docker_client, study) == []
    assert not docker_client.images.list(name=ref.rsplit(":", 1)[0])

    registry.release()
    deadline = time.monotonic() + 15
    while any(t.name.startswith("servetune-pull") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the pull's reader thread outlived Docker's answer"
        time.sleep(0.05)


# -- the GPU check -------------------------------------------------------------------------

def test_a_busy_gpu_fails_the_launch_and_no_container_is_left(
        tmp_path: Path, study: str, options: DockerOptions, docker_client: Any) -> None:
    """GPU 5 of the trial is held by another process (readings given as data, no NVML here):
    ``GpuBusy`` (infra_error) before the container starts; the created container is removed."""
    held = GpuMemory("5", 70000.0, 81559.0, (GpuProcess(4242, 69000.0, "vllm"),))
    check = GpuCheck(wait_s=0.0,
                     read=lambda ids: [GpuMemory("2", 300.0, 81559.0), held])
    spec = sim_spec(tmp_path, study, ["-tp", "2"], gpu_ids=["2", "5"])
    with pytest.raises(GpuBusy) as info:
        get_launcher("docker", options=options, gpu_check=check).launch(spec)
    assert info.value.reason is FailureReason.INFRA_ERROR and info.value.busy == (held,)
    assert "GPU 5 of this trial is in use by another process" in str(info.value)
    assert "pid 4242 (vllm, 69000 MiB)" in str(info.value)
    assert find_servetune_containers(docker_client, study) == []


# -- teardown and the janitor ----------------------------------------------------------------

@pytest.mark.parametrize("exception", [RuntimeError, KeyboardInterrupt])
def test_leaving_the_block_on_an_exception_removes_the_container(
        tmp_path: Path, study: str, options: DockerOptions, docker_client: Any,
        exception: type[BaseException]) -> None:
    spec = sleeper_spec(tmp_path, study, "1")
    with pytest.raises(exception):
        with DockerLauncher(options).launch(spec) as deployment:
            assert exists(docker_client, deployment.container_id)
            wait_for_output(deployment, "sleeping")
            raise exception()
    assert not exists(docker_client, deployment.container_id)
    assert "sleeping" in spec.log_path.read_text()


def test_stop_is_idempotent_and_tolerates_a_container_already_gone(
        tmp_path: Path, study: str, options: DockerOptions, docker_client: Any) -> None:
    deployment = DockerLauncher(options).launch(sleeper_spec(tmp_path, study, "1"))
    docker_client.api.remove_container(deployment.container_id, force=True)
    deployment.stop()
    assert deployment.stop() == deployment.returncode()
    stopped = DockerLauncher(options).launch(sleeper_spec(tmp_path, study, "2"))
    # -15, not -9: docker-init forwarded SIGTERM and the engine died of it, no SIGKILL after
    # the grace period (an engine as PID 1 would ignore SIGTERM).
    assert stopped.stop(timeout_s=60) == -15
    assert stopped.stop() == -15 and stopped.returncode() == -15


def test_the_janitor_removes_the_container_of_a_killed_trial_and_keeps_live_ones(
        tmp_path: Path, study: str, options: DockerOptions, docker_client: Any) -> None:
    """A trial process launches its engine container and is SIGKILLed (no teardown runs):
    the container outlives it until remove_orphans, which reports what it removed."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from worker.launchers import DeploymentSpec
        from worker.launchers.docker import DockerLauncher
        from worker.launchers.docker_options import DockerOptions
        options = DockerOptions(image={options.image!r}, pull="never", gpu_mode="nvidia_env",
                                volumes={options.volumes!r})
        spec = DeploymentSpec(argv=[sys.executable, "-c", "import time; time.sleep(300)"],
                              port=0, log_path=Path({str(tmp_path / 'killed.log')!r}),
                              served_model_name="none", classify=lambda c, t: None,
                              labels={{"study": {study!r}, "trial": "killed"}})
        deployment = DockerLauncher(options).launch(spec)
        print(deployment.container_name, flush=True)
        time.sleep(300)
    """)
    trial = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ""})
    try:
        assert trial.stdout is not None
        name = trial.stdout.readline().strip()
        assert name.startswith(f"servetune-{study}-killed-"), name
    finally:
        trial.send_signal(signal.SIGKILL)
        trial.wait()
    live = DockerLauncher(options).launch(sleeper_spec(tmp_path, study, "live"))
    try:
        before = find_servetune_containers(docker_client, study)
        assert {(info.trial, info.status) for info in before} == {("killed", "running"),
                                                                 ("live", "running")}
        removed = remove_orphans(study, live_trials={"live"})
        assert [(info.name, info.study, info.trial) for info in removed] == [
            (name, study, "killed")]
        assert removed[0].status == "running" and removed[0].owner == options.owner
        assert [info.trial for info in find_servetune_containers(None, study)] == ["live"]
        assert remove_orphans(study, live_trials={"live"}) == []
    finally:
        live.stop()
    assert remove_orphans(study, live_trials=set()) == []  # the live one was stopped cleanly


# -- options and registry ------------------------------------------------------------------

def test_the_registry_needs_options_for_docker() -> None:
    with pytest.raises(ConfigError, match="launcher.image is required"):
        get_launcher("docker")
    launcher = get_launcher("docker", options=DockerOptions(image="x"))
    assert isinstance(launcher, DockerLauncher) and launcher.name == "docker"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("image", " ", "launcher.image is empty"),
    ("pull", "always", "launcher.pull: 'always' is not one of never, if_missing"),
    ("pull_timeout_s", 0, "benchmark.timeouts.pull_s"),
    ("gpu_mode", "cdi", "launcher.gpu_mode"),
    ("container_port", 0, "launcher.container_port"),
    ("shm_size", "lots", "launcher.shm_size"),
    ("volumes", ("relative:/x",), "launcher.volumes"),
])
def test_bad_options_name_the_field(field: str, value: object, message: str) -> None:
    kwargs: dict[str, Any] = {"image": "x", field: value}
    with pytest.raises(ConfigError, match=message):
        DockerOptions(**kwargs)
