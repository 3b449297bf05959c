"""What one trial does on its node: deploy the engine on its GPUs, benchmark it, score it.

``run_trial`` is called inside the trial's Ray actor with the GPU ids Ray assigned; it never
raises for a failure of the config or the engine (those become a failed ``TrialRecord`` with a
reason class the searcher learns from); infrastructure errors (the store unreachable, a busy
GPU, an image pull past its deadline) are recorded with reason ``infra_error`` where the store
can take it, and propagate so Ray retries the trial. The engine is always torn down before it
returns. Each phase is timed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from common.benchmark import LevelMetrics
from common.config import BenchmarkSection, ObjectiveSection
from common.errors import InfraError, TrialError
from common.params import to_argv
from common.results import FailureReason, TrialRecord, TrialStatus, utcnow
from common.scoring import (
    LevelVerdict,
    evaluate,
    failure_score,
    failure_values,
    judge_level,
    score,
    stops_early,
)
from worker.benchmark.genai_bench import GenaiBenchError, GenaiBenchRun
from worker.benchmark.genai_bench import run as run_genai_bench
from worker.engines import get_engine
from worker.gpus import GpuCheck
from worker.launchers import get_launcher
from worker.launchers.base import Deployment, DeploymentSpec, Launcher
from worker.launchers.process import free_port
from worker.metrics import TrialMetrics
from worker.sim.tokens import DEFAULT_TOKENIZER_DIR

logger = logging.getLogger(__name__)
LOG_EXCERPT_LINES = 40
LevelCallback = Callable[[TrialRecord, LevelVerdict], None]


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
    # Ray's id of the node (recorded with the attempt: a node lost mid-trial is found by it).
    node_id: str = ""
    # The study's section values this trial runs (``parallel.tp``: 4); see TrialRecord.intent.
    intent: dict[str, Any] = field(default_factory=dict)
    # The engine release the flags are spelled for (None: the newest registry checked in).
    engine_version: str | None = None
    baseline: bool = False
    # Run levels one at a time and stop at the first that fails a hard SLO.
    early_stop: bool = True
    # Watch the benchmark level by level (``on_level`` after each) even without SLOs: the
    # search's scheduler (ASHA) decides after each level.
    report_levels: bool = False
    # Docker launcher settings (LauncherSection fields: image, pull, gpu_mode, ...).
    docker: dict[str, Any] | None = None


class StopTrial(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a level callback to end the trial at that level (the search's scheduler
    stopped it); the callback has made the record final. The engine is torn down."""


class TrialSink(Protocol):
    """Where a trial writes its attempt: a ``Store``, or a ``SpoolingStore`` that outlives a
    database outage."""

    def save_trial(self, record: TrialRecord) -> None: ...


def run_trial(spec: TrialSpec, store: TrialSink,
              on_level: LevelCallback | None = None) -> TrialRecord:
    """Deploy, benchmark, score and store one trial; returns its terminal record.

    ``on_level`` is called after each benchmark level when levels run one at a time (early
    stopping), with the record so far and the verdict of that level.
    """
    spec.work_dir.mkdir(parents=True, exist_ok=True)
    record = TrialRecord(study=spec.study, number=spec.number, attempt=spec.attempt,
                         trial_id=spec.trial_id, params=spec.params,
                         intent=dict(spec.intent), gpu_ids=list(spec.gpu_ids),
                         node=spec.node, node_id=spec.node_id, baseline=spec.baseline)
    # Exported to the Ray dashboard's metrics view (a no-op outside Ray).
    metrics = TrialMetrics(spec.study, spec.number, spec.attempt, len(spec.gpu_ids),
                           spec.engine)
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
    argv = engine.command(spec.model, to_argv(spec.engine, spec.flags,
                                              version=spec.engine_version), listen_host,
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
    deadline = Deadline.after(spec.benchmark.timeouts.trial_s)
    startup_s = spec.benchmark.timeouts.startup_s
    try:
        metrics.phase("pull" if spec.docker is not None else "startup")
        with launcher.launch(deployment_spec) as deployment:
            metrics.phase("startup")
            timings.update(deployment.phase_timings_s)  # docker: pull_s, apart from startup
            deployment.wait_ready(deadline.bound(startup_s))
            timings["startup_s"] = time.monotonic() - started - timings.get("pull_s", 0.0)
            metrics.phase("benchmark")
            bench_started = time.monotonic()
            crashed = _benchmark(spec, deployment, record, on_level, deadline, metrics)
            timed_out = deadline.expired  # the benchmark was cut short by it (not teardown)
            timings["benchmark_s"] = time.monotonic() - bench_started
            teardown_started = time.monotonic()
            metrics.phase("teardown")
        timings["teardown_s"] = time.monotonic() - teardown_started
        if timed_out:
            _fail(record, spec, FailureReason.TRIAL_TIMEOUT, deadline.message("benchmark"),
                  "", _progress(spec, record))
        else:
            _conclude(record, spec, crashed)
    except TrialError as e:
        reason, message = _reason(e), str(e)
        if reason is FailureReason.STARTUP_TIMEOUT and deadline.expired:
            reason, message = FailureReason.TRIAL_TIMEOUT, deadline.message("startup")
        _fail(record, spec, reason, message, getattr(e, "log_tail", ""))
        if reason.retryable:  # the platform's fault (a busy GPU): retried, not learnt from
            raise
    except GenaiBenchError as e:
        if deadline.expired:
            _fail(record, spec, FailureReason.TRIAL_TIMEOUT, deadline.message("benchmark"),
                  e.log_tail)
        else:
            _fail(record, spec, FailureReason.BENCHMARK_ERROR, str(e), e.log_tail)
    except InfraError as e:  # e.g. an image pull past its deadline: recorded, then retried
        _fail(record, spec, FailureReason.INFRA_ERROR, str(e), "")
        raise
    except StopTrial:  # the scheduler stopped it after a level; the callback recorded it
        if record.status is TrialStatus.RUNNING:
            _fail(record, spec, FailureReason.PRUNED, "stopped by the search's scheduler", "")
    finally:
        timings.setdefault("total_s", time.monotonic() - started)
        if record.status is TrialStatus.RUNNING:  # interrupted: nothing else got to record it
            _fail(record, spec, FailureReason.CANCELLED, "trial interrupted", "")
        if not record.log_excerpt:
            record.log_excerpt = _tail(log_path)
        record.finished_at = utcnow()
        metrics.finished(record)
        store.save_trial(record)
    return record


@dataclass(frozen=True)
class Deadline:
    """The trial's deadline (``benchmark.timeouts.trial_s``) as a monotonic instant; each
    phase waits for at most what is left of it. ``at`` None: no trial deadline."""

    at: float | None
    seconds: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        return cls(None if seconds is None else time.monotonic() + seconds, seconds)

    def remaining(self) -> float | None:
        return None if self.at is None else max(self.at - time.monotonic(), 0.0)

    def bound(self, phase_s: float) -> float:
        """A phase's own deadline, cut to what is left of the trial's (never quite 0)."""
        left = self.remaining()
        return phase_s if left is None else max(min(phase_s, left), 0.01)

    @property
    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def message(self, phase: str) -> str:
        return (f"the trial ran past its deadline of {self.seconds:g} s "
                f"(benchmark.timeouts.trial_s) during {phase}")


def _mounts_host_python(spec: TrialSpec) -> bool:
    """The registry-free simulator image runs this node's interpreter, mounted read-only."""
    from worker.sim.image import SIM_IMAGE_TAG

    return spec.simulated and spec.docker is not None and spec.docker["image"] == SIM_IMAGE_TAG


def _launcher(spec: TrialSpec) -> Launcher:
    # The simulated engine's GPU ids are Ray's logical ids, not devices: nothing to check.
    gpu_check = GpuCheck.disabled() if spec.simulated else None  # None: the node's settings
    if spec.docker is None:
        return get_launcher(spec.launcher, gpu_check=gpu_check)
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
        pull_timeout_s=min(spec.benchmark.timeouts.pull_s,
                           spec.benchmark.timeouts.trial_s or float("inf")),
        gpu_mode=d.get("gpu_mode", "device_requests"),
        container_port=int(d.get("container_port", 8000)), ipc_host=d.get("ipc_host", True),
        shm_size=d.get("shm_size"), volumes=tuple(volumes),
        pass_env=tuple(d.get("pass_env") or ()))
    return get_launcher("docker", options=options, gpu_check=gpu_check)


def _benchmark(spec: TrialSpec, deployment: Deployment, record: TrialRecord,
               on_level: LevelCallback | None, deadline: Deadline,
               metrics: TrialMetrics) -> bool:
    """Benchmark the deployment into ``record.levels``; True if the engine died meanwhile.

    With early stopping and SLOs that can fail a level, each scenario is one genai-bench run
    whose levels (in increasing concurrency) are judged as they finish; the run is stopped
    at the first level that fails, its higher levels skipped and the time they would have
    taken recorded. Otherwise one run covers every level.
    """
    b = spec.benchmark
    watched = (spec.early_stop and _levels_can_fail(spec.objective)) or spec.report_levels
    if not (watched and _num_levels(b) > 1):
        record.levels = run_genai_bench(_bench_run(spec, deployment.url),
                                        timeout_s=deadline.remaining()).levels
        for level in record.levels:
            metrics.level(level)
        return deployment.returncode() is not None
    skipped = 0
    for index, scenario in enumerate(b.scenarios):
        if deployment.returncode() is not None:
            return True

        def judge(level: LevelMetrics) -> bool:
            verdict = judge_level(level, spec.objective.slos, spec.objective.max_error_rate)
            record.levels = [*record.levels, level]
            metrics.level(level)
            if on_level is not None:
                on_level(record, verdict)
            return stops_early(verdict)

        run = _bench_run(spec, deployment.url, (scenario,), tuple(b.concurrency),
                         spec.work_dir / f"bench-{index}" if len(b.scenarios) > 1 else None)
        if deadline.expired:
            break
        try:
            outcome = run_genai_bench(run, timeout_s=deadline.remaining(), on_level=judge)
        except GenaiBenchError:
            if deployment.returncode() is not None or record.levels:
                return deployment.returncode() is not None
            raise
        if outcome.stopped_early:
            ran = outcome.levels
            skipped_here = len(b.concurrency) - len(ran)
            skipped += skipped_here
            mean_level_s = sum(lv.duration_s for lv in ran) / max(len(ran), 1)
            record.phase_timings_s["early_stop_saved_s"] = (
                record.phase_timings_s.get("early_stop_saved_s", 0.0)
                + skipped_here * mean_level_s)
    if skipped:
        record.phase_timings_s["levels_skipped"] = float(skipped)
        logger.info("study %s trial %d: early stop skipped %d level(s)", spec.study,
                    spec.number, skipped)
    return deployment.returncode() is not None


def _levels_can_fail(objective: ObjectiveSection) -> bool:
    """Whether some SLO can fail a level (a hard SLO, or a soft one with a fail ratio)."""
    return any(slo.kind == "hard" or slo.fail_ratio is not None for slo in objective.slos)


def _num_levels(benchmark: BenchmarkSection) -> int:
    return len(benchmark.scenarios) * len(benchmark.concurrency)


def _bench_run(spec: TrialSpec, url: str, scenarios: tuple[str, ...] | None = None,
               concurrencies: tuple[int, ...] | None = None,
               output_dir: Path | None = None) -> GenaiBenchRun:
    b = spec.benchmark
    tokenizer = (str(DEFAULT_TOKENIZER_DIR) if spec.simulated and not spec.tokenizer
                 else spec.tokenizer or spec.model)
    backend = b.api_backend or (spec.engine if spec.engine in ("vllm", "sglang") else "openai")
    return GenaiBenchRun(
        api_base=url, served_model_name=spec.served_name, tokenizer_dir=Path(tokenizer),
        scenarios=scenarios or tuple(b.scenarios),
        concurrencies=concurrencies or tuple(b.concurrency),
        max_requests_per_run=b.requests_per_level, max_time_per_run_s=b.seconds_per_level,
        output_dir=output_dir or spec.work_dir, api_backend=backend,
        warmup_ratio=b.warmup_ratio)


def _conclude(record: TrialRecord, spec: TrialSpec, crashed: bool) -> None:
    """Score a benchmarked trial: succeeded on its compliant levels, else failed as
    ``slo_violated`` (graded by how close it came), ``engine_crash`` or ``benchmark_error``."""
    evaluation = evaluate(spec.objective, record.levels, len(spec.gpu_ids))
    record.slo = evaluation.slo_report() if spec.objective.slos else None
    crash_note = "the engine exited during the benchmark" if crashed else ""
    if evaluation.values is not None:
        record.status = TrialStatus.SUCCEEDED
        record.objective_values = list(evaluation.values)
        record.objective_value = evaluation.values[0]
        record.score = score(spec.objective, evaluation.values[0])
        record.message = crash_note and f"{crash_note}; scored on the levels before it"
        return
    progress = _progress(spec, record)
    completed = [level for level in record.levels if level.num_completed > 0]
    if crashed:
        _fail(record, spec, FailureReason.ENGINE_CRASH, crash_note, "", progress)
    elif not completed:
        errors = sum(level.num_errors for level in record.levels)
        _fail(record, spec, FailureReason.BENCHMARK_ERROR,
              f"no level completed a request ({errors} errors)", "", progress)
    else:
        worst = evaluation.worst_violation
        failed = sorted({name for v in evaluation.verdicts for name in v.failed})
        _fail(record, spec, FailureReason.SLO_VIOLATED,
              f"no level met the SLOs (failed: {', '.join(failed)}; worst violation "
              f"{worst:.0%})", "", progress, evaluation.least_violation)


def _progress(spec: TrialSpec, record: TrialRecord) -> float:
    """The share of planned benchmark levels that completed requests."""
    done = sum(1 for level in record.levels if level.num_completed > 0)
    return done / max(_num_levels(spec.benchmark), 1)


def _fail(record: TrialRecord, spec: TrialSpec, reason: FailureReason, message: str,
          log_tail: str, progress: float = 0.0, violation: float = 0.0) -> None:
    record.status = TrialStatus.FAILED
    record.reason = reason
    record.message = message
    record.score = failure_score(spec.objective, reason, progress, violation)
    record.objective_values = list(failure_values(spec.objective, reason, progress, violation))
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
