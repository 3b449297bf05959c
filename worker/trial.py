"""What one trial does on its node: deploy the engine on its GPUs, benchmark it, score it.

``run_trial`` is called inside the trial's Ray actor with the GPU ids Ray assigned; it never
raises for a failure of the config or the engine (those become a failed ``TrialRecord`` with a
reason class the searcher learns from); only infrastructure errors (the store unreachable)
propagate. The engine is always torn down before it returns. Each phase is timed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import BenchmarkSection, ObjectiveSection
from common.errors import TrialError
from common.params import to_argv
from common.results import FailureReason, TrialRecord, TrialStatus, utcnow
from common.scoring import failure_score, objective_value, score
from common.store import Store
from worker.benchmark.genai_bench import GenaiBenchError, GenaiBenchRun
from worker.benchmark.genai_bench import run as run_genai_bench
from worker.engines import get_engine
from worker.launchers import get_launcher
from worker.launchers.base import DeploymentSpec, Launcher
from worker.launchers.process import free_port
from worker.sim.tokens import DEFAULT_TOKENIZER_DIR

logger = logging.getLogger(__name__)
LOG_EXCERPT_LINES = 40


@dataclass(frozen=True)
class TrialSpec:
    """Everything a trial needs, resolved by the driver (plain data: it crosses to the actor)."""

    study: str
    number: int
    trial_id: str
    engine: str
    simulated: bool
    model: str
    served_name: str
    tokenizer: str | None
    flags: dict[str, Any]
    params: dict[str, Any]
    gpu_ids: list[str]
    node: str
    gpu_type: str
    benchmark: BenchmarkSection
    objective: ObjectiveSection
    work_dir: Path
    launcher: str = "process"
    launcher_command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    attempt: int = 0
    # Docker launcher settings (LauncherSection fields: image, pull, gpu_mode, ...).
    docker: dict[str, Any] | None = None


def run_trial(spec: TrialSpec, store: Store) -> TrialRecord:
    """Deploy, benchmark, score and store one trial; returns its terminal record."""
    spec.work_dir.mkdir(parents=True, exist_ok=True)
    record = TrialRecord(study=spec.study, number=spec.number, attempt=spec.attempt,
                         trial_id=spec.trial_id, params=spec.params, gpu_ids=list(spec.gpu_ids),
                         node=spec.node)
    # In a container the engine runs on the image's interpreter, not this node's venv (except
    # the registry-free simulator image, which mounts this node's installation).
    python = {"python": "python3"} if spec.docker and not _mounts_host_python(spec) else {}
    engine = (get_engine("sim", dialect=spec.engine, **python) if spec.simulated
              else get_engine(spec.engine, **python))
    host, port = "127.0.0.1", free_port()
    launcher = _launcher(spec)
    # In a container the engine listens on all interfaces at the container port; the host
    # side publishes it on 127.0.0.1:port.
    listen_host, listen_port = (("0.0.0.0", int(spec.docker["container_port"]))
                                if spec.docker is not None else (host, port))
    argv = engine.command(spec.model, to_argv(spec.engine, spec.flags), listen_host,
                          listen_port, spec.served_name)
    if spec.launcher_command:
        argv = [*spec.launcher_command, *argv[executable_length(argv, spec.model):]]
    if spec.simulated:
        argv += ["--sim-gpu", spec.gpu_type]
    record.argv = argv
    store.save_trial(record)
    timings = record.phase_timings_s
    log_path = spec.work_dir / "engine.log"
    deployment_spec = DeploymentSpec(
        argv=argv, env={**spec.env, **engine.gpu_env(spec.gpu_ids)}, gpu_ids=list(spec.gpu_ids),
        host=host, port=port, log_path=log_path, health_path=engine.health_path,
        served_model_name=spec.served_name,
        labels={"servetune.study": spec.study, "servetune.trial": str(spec.number)},
        classify=engine.classify_failure, stop_timeout_s=spec.benchmark.timeouts.teardown_s)
    started = time.monotonic()
    try:
        with launcher.launch(deployment_spec) as deployment:
            deployment.wait_ready(spec.benchmark.timeouts.startup_s)
            timings["startup_s"] = time.monotonic() - started
            bench_started = time.monotonic()
            outcome = run_genai_bench(_bench_run(spec, deployment.url))
            timings["benchmark_s"] = time.monotonic() - bench_started
            record.levels = outcome.levels
            if deployment.returncode() is not None:
                raise _EngineDiedDuringBenchmark(deployment.returncode(), deployment.log_tail())
            teardown_started = time.monotonic()
        timings["teardown_s"] = time.monotonic() - teardown_started
        _succeed(record, spec)
    except TrialError as e:
        _fail(record, spec, _reason(e), str(e), getattr(e, "log_tail", ""))
    except GenaiBenchError as e:
        _fail(record, spec, FailureReason.BENCHMARK_ERROR, str(e), e.log_tail)
    finally:
        timings.setdefault("total_s", time.monotonic() - started)
        if record.status is TrialStatus.RUNNING:  # interrupted: nothing else got to record it
            _fail(record, spec, FailureReason.CANCELLED, "trial interrupted", "")
        if not record.log_excerpt:
            record.log_excerpt = _tail(log_path)
        record.finished_at = utcnow()
        store.save_trial(record)
    return record


def _mounts_host_python(spec: TrialSpec) -> bool:
    """The registry-free simulator image runs this node's interpreter, mounted read-only."""
    from worker.sim.image import SIM_IMAGE_TAG

    return spec.simulated and spec.docker is not None and spec.docker["image"] == SIM_IMAGE_TAG


def _launcher(spec: TrialSpec) -> Launcher:
    if spec.docker is None:
        return get_launcher(spec.launcher)
    from worker.launchers.docker import DockerOptions
    from worker.sim.image import sim_volumes

    d = spec.docker
    volumes = list(d.get("volumes") or [])
    if d.get("hf_cache"):
        volumes.append(f"{Path(d['hf_cache']).expanduser()}:/root/.cache/huggingface")
    if _mounts_host_python(spec):
        # The locally imported image is empty: it runs this installation, mounted read-only.
        volumes.extend(sim_volumes())
    options = DockerOptions(
        image=d["image"], pull=d.get("pull", "if_missing"),
        gpu_mode=d.get("gpu_mode", "device_requests"),
        container_port=int(d.get("container_port", 8000)), ipc_host=d.get("ipc_host", True),
        shm_size=d.get("shm_size"), volumes=tuple(volumes),
        pass_env=tuple(d.get("pass_env") or ()))
    return get_launcher("docker", options=options)


class _EngineDiedDuringBenchmark(TrialError):
    reason = FailureReason.ENGINE_CRASH

    def __init__(self, code: int | None, log_tail: str) -> None:
        super().__init__(f"the engine exited with {code} during the benchmark")
        self.log_tail = log_tail


def _bench_run(spec: TrialSpec, url: str) -> GenaiBenchRun:
    b = spec.benchmark
    tokenizer = (str(DEFAULT_TOKENIZER_DIR) if spec.simulated and not spec.tokenizer
                 else spec.tokenizer or spec.model)
    backend = b.api_backend or (spec.engine if spec.engine in ("vllm", "sglang") else "openai")
    return GenaiBenchRun(
        api_base=url, served_model_name=spec.served_name, tokenizer_dir=Path(tokenizer),
        scenarios=tuple(b.scenarios), concurrencies=tuple(b.concurrency),
        max_requests_per_run=b.requests_per_level, max_time_per_run_s=b.seconds_per_level,
        output_dir=spec.work_dir, api_backend=backend, warmup_ratio=b.warmup_ratio)


def _succeed(record: TrialRecord, spec: TrialSpec) -> None:
    value = objective_value(spec.objective, record.levels, len(spec.gpu_ids))
    if value is None:
        errors = sum(level.num_errors for level in record.levels)
        _fail(record, spec, FailureReason.BENCHMARK_ERROR,
              f"no level completed a request ({errors} errors)", "")
        return
    record.status = TrialStatus.SUCCEEDED
    record.objective_value = value
    record.score = score(spec.objective, value)


def _fail(record: TrialRecord, spec: TrialSpec, reason: FailureReason, message: str,
          log_tail: str) -> None:
    record.status = TrialStatus.FAILED
    record.reason = reason
    record.message = message
    record.score = failure_score(spec.objective, reason)
    if log_tail:
        record.log_excerpt = "\n".join(log_tail.splitlines()[-LOG_EXCERPT_LINES:])
    logger.info("study %s trial %d failed (%s): %s", spec.study, spec.number, reason.value,
                message)


def _reason(error: TrialError) -> FailureReason:
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, FailureReason) else FailureReason.ENGINE_CRASH


def executable_length(argv: list[str], model: str) -> int:
    """How many leading argv items name the program: those before the model or the first
    long option (``vllm serve``, ``python -m sglang.launch_server``, ``trtllm-serve``)."""
    for i, item in enumerate(argv):
        if i and (item == model or item.startswith("--")):
            return i
    return len(argv)


def _tail(path: Path, lines: int = LOG_EXCERPT_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
