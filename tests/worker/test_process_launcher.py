"""The process launcher with real processes: the simulated engine and small fake engines."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from common.errors import ConfigError, InfraError
from common.results import FailureReason
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
from worker.launchers.process import ProcessDeployment, ProcessLauncher, free_port

pytestmark = pytest.mark.integration

SIM = get_engine("sim")
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
LABELS = {"study": "s1", "trial": "7"}


def sim_spec(tmp_path: Path, flags: list[str], *, gpu_ids: list[str] | None = None,
             model: str = LLAMA_8B, served_model_name: str = "llama",
             port: int | None = None) -> DeploymentSpec:
    gpu_ids = ["0"] if gpu_ids is None else gpu_ids
    port = free_port() if port is None else port
    argv = SIM.command(model, [*flags, "--sim-startup-scale", "0.01"], "127.0.0.1", port,
                       "llama")
    return DeploymentSpec(
        argv=argv, port=port, log_path=tmp_path / "engine.log",
        served_model_name=served_model_name, classify=SIM.classify_failure,
        env=SIM.gpu_env(gpu_ids), gpu_ids=gpu_ids, health_path=SIM.health_path,
        labels=LABELS)


def fake_spec(tmp_path: Path, script: str, *, gpu_ids: list[str] | None = None,
              env: dict[str, str] | None = None) -> DeploymentSpec:
    """A 'engine' that is a bash script: never ready, so only lifecycle is exercised."""
    return DeploymentSpec(
        argv=["bash", "-c", script], port=free_port(), log_path=tmp_path / "fake.log",
        served_model_name="fake", classify=SIM.classify_failure,
        env=env or {}, gpu_ids=gpu_ids or [], labels={"servetune.study": "s1", "trial": "7"})


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no longer runs: PID 1 here may never reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def wait_for_log(path: Path, pattern: str, timeout_s: float = 10.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = re.search(pattern, path.read_text() if path.exists() else "")
        if match:
            return match
        time.sleep(0.02)
    raise AssertionError(f"{pattern!r} not in {path}:\n{path.read_text()}")


@pytest.fixture
def launcher() -> Iterator[ProcessLauncher]:
    yield ProcessLauncher()


# -- ready path ------------------------------------------------------------------------------

def test_a_ready_engine_serves_completions_and_is_gone_after_the_block(
        tmp_path: Path, launcher: ProcessLauncher) -> None:
    spec = sim_spec(tmp_path, [])
    with launcher.launch(spec) as deployment:
        deployment.wait_ready(timeout_s=20)
        pid = deployment.pid
        assert pid is not None and alive(pid)
        assert deployment.url == f"http://127.0.0.1:{spec.port}"
        response = httpx.post(deployment.url + "/v1/completions", trust_env=False, timeout=10,
                              json={"model": "llama", "prompt": "hello", "max_tokens": 4})
        assert response.status_code == 200
        assert response.json()["usage"]["completion_tokens"] == 4
        assert deployment.returncode() is None
    assert not alive(pid)
    assert deployment.returncode() is not None
    assert "Application startup complete" in deployment.log_tail()


def test_the_specs_gpus_reach_the_engine_not_the_inherited_ones(
        tmp_path: Path, launcher: ProcessLauncher, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sim exits unless it sees exactly tp GPUs: tp 2 on GPUs 3,5 starts although this
    process was given one GPU."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with launcher.launch(sim_spec(tmp_path, ["-tp", "2"], gpu_ids=["3", "5"])) as deployment:
        deployment.wait_ready(timeout_s=20)
        assert deployment.returncode() is None


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "cvd=3,5"),  # the spec's gpu_ids, when its env does not say
    ({"CUDA_VISIBLE_DEVICES": "1"}, "cvd=1"),  # spec.env (engine.gpu_env) wins
])
def test_child_environment_gpus_and_labels(
        tmp_path: Path, launcher: ProcessLauncher, monkeypatch: pytest.MonkeyPatch,
        env: dict[str, str], expected: str) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    script = ('echo "cvd=$CUDA_VISIBLE_DEVICES study=$SERVETUNE_LABEL_STUDY '
              'trial=$SERVETUNE_LABEL_TRIAL"; exec sleep 300')
    spec = fake_spec(tmp_path, script, gpu_ids=["3", "5"], env=env)
    with launcher.launch(spec) as deployment:
        line = wait_for_log(spec.log_path, r"cvd=\S* study=\S+ trial=\S+").group(0)
        pid = deployment.pid
    assert line == f"{expected} study=s1 trial=7"
    assert pid is not None and not alive(pid)


# -- failure paths ---------------------------------------------------------------------------

def test_an_engine_that_does_not_fit_fails_fast_with_its_oom_line(
        tmp_path: Path, launcher: ProcessLauncher) -> None:
    """Llama-3.1-70B on one 80 GB GPU: EngineExited within seconds, not at the deadline."""
    started = time.monotonic()
    with pytest.raises(EngineExited) as info:
        with launcher.launch(sim_spec(tmp_path, [], model=LLAMA_70B)) as deployment:
            deployment.wait_ready(timeout_s=60)
    assert time.monotonic() - started < 10
    error = info.value
    assert error.reason is FailureReason.INFEASIBLE_CONFIG
    assert error.exit_code == 1
    assert error.summary.startswith("torch.OutOfMemoryError: CUDA out of memory")
    assert "torch.OutOfMemoryError: CUDA out of memory" in error.log_tail
    assert error.labels == LABELS and "trial=7" in str(error)
    assert deployment.pid is not None and not alive(deployment.pid)


def test_an_engine_that_hangs_at_startup_is_not_ready_at_the_deadline(
        tmp_path: Path, launcher: ProcessLauncher) -> None:
    started = time.monotonic()
    with pytest.raises(EngineNotReady) as info:
        with launcher.launch(sim_spec(tmp_path, ["--sim-hang-at-startup"])) as deployment:
            deployment.wait_ready(timeout_s=1.5)
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 5
    assert info.value.reason is FailureReason.STARTUP_TIMEOUT
    assert "503" in info.value.summary
    assert "hanging at startup" in info.value.log_tail
    assert deployment.pid is not None and not alive(deployment.pid)


def test_a_refused_probe_fails_at_once_with_the_status(
        tmp_path: Path, launcher: ProcessLauncher) -> None:
    """The engine serves "llama" but the spec probes "mistral": 404 is our setup, not a
    timeout."""
    spec = sim_spec(tmp_path, [], served_model_name="mistral")
    with pytest.raises(ProbeRejected) as info:
        with launcher.launch(spec) as deployment:
            deployment.wait_ready(timeout_s=60)
    assert info.value.status_code == 404
    assert info.value.reason is FailureReason.INFRA_ERROR
    assert deployment.pid is not None and not alive(deployment.pid)


def test_a_missing_executable_is_an_infra_error_and_leaves_nothing(
        tmp_path: Path, launcher: ProcessLauncher) -> None:
    spec = fake_spec(tmp_path, "")
    spec = DeploymentSpec(**{**spec.__dict__, "argv": ["/nonexistent/vllm", "serve"]})
    with pytest.raises(InfraError, match="is it installed"):
        launcher.launch(spec)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another server holds (listening, never answering) while the engine starts."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def test_a_lost_port_race_relaunches_on_a_new_port(tmp_path: Path, taken_port: int) -> None:
    with ProcessLauncher().launch(sim_spec(tmp_path, [], port=taken_port)) as deployment:
        deployment.wait_ready(timeout_s=20)
        assert deployment.spec.port != taken_port
        assert f"--port {deployment.spec.port}" in " ".join(deployment.spec.argv)
        assert deployment.url == f"http://127.0.0.1:{deployment.spec.port}"
    log = (tmp_path / "engine.log").read_text()
    assert "address already in use" in log and "Application startup complete" in log


def test_a_lost_port_race_without_retries_left_is_an_infra_error(
        tmp_path: Path, taken_port: int) -> None:
    with pytest.raises(EngineExited) as info:
        spec = sim_spec(tmp_path, [], port=taken_port)
        with ProcessLauncher(port_retries=0).launch(spec) as deployment:
            deployment.wait_ready(timeout_s=20)
    assert info.value.reason is FailureReason.INFRA_ERROR
    assert "address already in use" in info.value.summary


# -- teardown --------------------------------------------------------------------------------

def test_stop_kills_the_whole_process_group(tmp_path: Path, launcher: ProcessLauncher) -> None:
    spec = fake_spec(tmp_path, 'sleep 300 & echo "grandchild=$!"; wait')
    deployment = launcher.launch(spec)
    grandchild = int(wait_for_log(spec.log_path, r"grandchild=(\d+)").group(1))
    child = deployment.pid
    assert child is not None and alive(child) and alive(grandchild)
    code = deployment.stop()
    assert not alive(child) and not alive(grandchild)
    assert code == deployment.stop()  # idempotent


def test_stop_escalates_to_sigkill_for_an_engine_that_ignores_sigterm(
        tmp_path: Path, launcher: ProcessLauncher) -> None:
    spec = fake_spec(tmp_path, 'trap "" TERM; sleep 300 & echo "grandchild=$!"; wait')
    with launcher.launch(spec) as deployment:
        grandchild = int(wait_for_log(spec.log_path, r"grandchild=(\d+)").group(1))
        started = time.monotonic()
        assert deployment.stop(timeout_s=0.5) == -9
        assert time.monotonic() - started < 3
    assert deployment.pid is not None and not alive(deployment.pid)
    assert not alive(grandchild)


def test_an_engine_that_exits_leaves_no_children_behind(
        tmp_path: Path, launcher: ProcessLauncher) -> None:
    """The main process dies (like vLLM's API server) while a worker it started lingers."""
    spec = fake_spec(tmp_path, 'sleep 300 & echo "grandchild=$!"; echo "KeyError: x"; exit 3')
    with pytest.raises(EngineExited) as info:
        with launcher.launch(spec) as deployment:
            grandchild = int(wait_for_log(spec.log_path, r"grandchild=(\d+)").group(1))
            deployment.wait_ready(timeout_s=20)
    assert info.value.exit_code == 3
    assert info.value.reason is FailureReason.ENGINE_CRASH
    assert not alive(grandchild)


@pytest.mark.parametrize("exception", [RuntimeError, KeyboardInterrupt])
def test_leaving_the_block_on_an_exception_tears_down(
        tmp_path: Path, launcher: ProcessLauncher, exception: type[BaseException]) -> None:
    spec = fake_spec(tmp_path, 'sleep 300 & echo "grandchild=$!"; wait')
    with pytest.raises(exception):
        with launcher.launch(spec) as deployment:
            grandchild = int(wait_for_log(spec.log_path, r"grandchild=(\d+)").group(1))
            raise exception()
    assert deployment.pid is not None and not alive(deployment.pid)
    assert not alive(grandchild)


def test_log_tail_returns_the_last_lines(tmp_path: Path, launcher: ProcessLauncher) -> None:
    spec = fake_spec(tmp_path, 'for i in $(seq 1 5000); do echo "line $i"; done; exec sleep 300')
    with launcher.launch(spec) as deployment:
        wait_for_log(spec.log_path, "line 5000")
        assert deployment.log_tail(3) == "line 4998\nline 4999\nline 5000"
        assert deployment.log_tail(0) == ""


# -- spec and registry -------------------------------------------------------------------------

def test_with_port_rewrites_only_the_port_argument(tmp_path: Path) -> None:
    spec = sim_spec(tmp_path, [], port=8000)
    moved = spec.with_port(9001)
    assert moved.port == 9001 and moved.argv[moved.argv.index("--port") + 1] == "9001"
    assert [a for a in moved.argv if a != "9001"] == [a for a in spec.argv if a != "8000"]
    equals_form = DeploymentSpec(**{**spec.__dict__, "argv": ["x", "--port=8000"]})
    assert equals_form.with_port(1).argv == ["x", "--port=1"]
    with pytest.raises(ValueError):
        DeploymentSpec(**{**spec.__dict__, "argv": ["x"]}).with_port(1)


def test_a_busy_gpu_fails_the_launch_before_the_engine_starts(tmp_path: Path) -> None:
    """GPU 3 of the trial holds another process's 70 GB: ``GpuBusy`` (infra_error, retryable)
    names the GPU, its memory and the process, and the engine never ran. The readings are
    given as data (no NVML here); with GPU 3 free the same launch goes ahead."""
    marker = tmp_path / "engine-ran"
    spec = fake_spec(tmp_path, f"touch {marker}; sleep 30", gpu_ids=["2", "3"])
    held = GpuMemory("3", 70000.0, 81559.0, (GpuProcess(4242, 69000.0, "python3"),))
    free = GpuMemory("2", 400.0, 81559.0)
    check = GpuCheck(wait_s=0.0, read=lambda ids: [free, held])
    with pytest.raises(GpuBusy) as info:
        get_launcher("process", gpu_check=check).launch(spec)
    error = info.value
    assert error.reason is FailureReason.INFRA_ERROR and error.reason.retryable
    assert error.busy == (held,)
    assert error.summary == ("GPU 3 of this trial is in use by another process: GPU 3: 70000 "
                             "of 81559 MiB in use by pid 4242 (python3, 69000 MiB)")
    assert "at most 2048 MiB" in str(error) and "study=s1 trial=7" in str(error)
    assert not marker.exists() and not spec.log_path.exists()

    ok = GpuCheck(wait_s=0.0, read=lambda ids: [free, GpuMemory("3", 300.0, 81559.0)])
    with ProcessLauncher(gpu_check=ok).launch(spec) as deployment:
        deadline = time.monotonic() + 10
        while not marker.exists():
            assert time.monotonic() < deadline and deployment.returncode() is None
            time.sleep(0.02)


def test_launcher_registry() -> None:
    """Launchers by name; docker needs its options; a miss lists the valid names."""
    assert isinstance(get_launcher("process"), ProcessLauncher)
    with pytest.raises(ConfigError, match="launcher.image is required"):
        get_launcher("docker")
    with pytest.raises(ConfigError, match="available launchers: process") as info:
        get_launcher("slurm")
    assert info.value.allowed == ("process", "docker")


def test_stop_before_start_is_a_no_op(tmp_path: Path) -> None:
    deployment = ProcessDeployment(fake_spec(tmp_path, "exec sleep 300"))
    assert deployment.stop() is None  # never started: nothing to do
