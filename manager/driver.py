"""The Ray Tune driver: one study = one Tune experiment whose trials hold the GPUs they need.

``run_study`` validates feasibility against the cluster, opens the store (a study that cannot
reach its database fails before any trial starts), starts or joins Ray, and runs a Tuner whose
trainable requests tp × pp × dp GPUs per sampled config. Trials report a finite score (failed
configs included) so TPE keeps learning; only infrastructure errors fail a Tune trial.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.trainable.function_trainable import wrap_function

from common.config import StudyConfig
from common.errors import ConfigError
from common.intent import trial_intent
from common.params import world_size
from common.results import FailureReason, TrialRecord, TrialStatus, latest_attempts, utcnow
from common.scoring import LevelVerdict, evaluate, failure_score, pareto_front, score
from common.store import Store
from common.store.spool import SPOOL_NAME, SpoolingStore, flush_spools, with_retries
from manager.baseline import baseline_flags
from manager.faults import (
    CancelRequested,
    LazyStore,
    ServetuneScheduler,
    TrialFaults,
    trial_number,
    unschedulable_record,
)
from manager.paths import StudyPaths
from manager.preflight import preflight
from manager.progress import ProgressPrinter
from manager.resume import (
    TUNE_FINISHED,
    Resumption,
    prepare_resume,
    restorable_states,
    write_run_mark,
)
from manager.search import SCORE, make_searcher, objective_metrics
from manager.space import SearchPlan, build_plan, trial_flags
from manager.warm_start import warm_start_points
from worker.trial import StopTrial, TrialSpec, run_trial

logger = logging.getLogger(__name__)
TUNE_STATE_PERIOD_S = "3"
# The class of every trial actor (the dashboard's Actors view, the chaos bench's kills).
TRIAL_ACTOR_CLASS = "ServetuneTrial"


@dataclass(frozen=True)
class StudyOutcome:
    study: str
    trials: list[TrialRecord]
    wall_s: float
    interrupted: bool
    pareto_front: list[int] | None = None

    @property
    def best(self) -> TrialRecord | None:
        return best_trial(self.trials)

    @property
    def baseline(self) -> TrialRecord | None:
        return next((t for t in self.trials if t.baseline), None)


def best_trial(trials: list[TrialRecord]) -> TrialRecord | None:
    """The succeeded trial with the highest score (the baseline included)."""
    done = [t for t in trials if t.status is TrialStatus.SUCCEEDED]
    return max(done, key=lambda t: t.score or float("-inf")) if done else None


def study_pareto_front(study: StudyConfig, trials: list[TrialRecord]) -> list[int] | None:
    """Numbers of the succeeded trials no other succeeded trial dominates (multi-objective
    studies; None otherwise)."""
    if not study.objective.multi:
        return None
    points = [(t.number, t.objective_values) for t in trials
              if t.status is TrialStatus.SUCCEEDED and t.objective_values]
    return pareto_front(points, [term.maximize for term in study.objective.terms])


def cluster_max_node_gpus(study: StudyConfig) -> int:
    """GPUs of the largest node: the local node's from the study, or read from the cluster."""
    if study.cluster.address == "local":
        return study.cluster.gpus_per_node
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return int(max((n.get("Resources", {}).get("GPU", 0) for n in nodes), default=0))


def run_study(study: StudyConfig, paths: StudyPaths, resume: bool = False) -> StudyOutcome:
    """Run a study to the end (or until Ctrl-C); every trial ends in the store.

    ``resume``: continue a study already in the store whose driver died
    (``manager.resume``): its running attempts become ``driver_lost``, lost and cancelled
    trials run again under their numbers, finished ones seed the searcher."""
    preflight(study)
    if study.cluster.address == "local":
        plan = build_plan(study, study.cluster.gpus_per_node)  # before Ray starts
    paths.results_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open(paths.database_url)
    if not resume:
        try:
            _refuse_existing(store, study.name)
        except BaseException:
            store.close()
            raise
    started = time.monotonic()
    _start_ray(study)
    interrupted = False
    try:
        if study.cluster.address != "local":
            plan = build_plan(study, cluster_max_node_gpus(study))
        resumption = None
        experiment_dir = paths.results_dir / "ray" / study.name
        restore = False
        if resume:
            written, _ = flush_spools(paths.results_dir / study.name, paths.database_url)
            store.create_study(study.name, study.model_dump(mode="json"))
            resumption = prepare_resume(study, plan, store)
            lost = len(resumption.driver_lost)
            print(f"resuming {study.name}: {resumption.finished_count} trial(s) finished, "
                  f"{len(resumption.rerun)} to run again"
                  + (f" ({lost} were running: driver_lost)" if lost else "")
                  + (f", {written} spooled result(s) written" if written else ""), flush=True)
            states = restorable_states(experiment_dir, study, paths.database_url,
                                       resumption.latest)
            restore = not isinstance(states, str)
            if isinstance(states, str):
                print(f"resuming from the database: {states}", flush=True)
            else:
                unfinished = sum(s not in TUNE_FINISHED for s in states.values())
                print(f"resuming from Tune's saved state ({len(states)} trial(s), "
                      f"{unfinished} to run again; the searcher's own state kept)", flush=True)
                TrialNamer.continue_after(study.name,
                                          max([resumption.next_number - 1, *states]))
        else:
            store.create_study(study.name, study.model_dump(mode="json"))
        write_run_mark(experiment_dir, study, paths.database_url)
        _clean_containers(study, "before the study")
        warm = warm_start_points(study, plan, store)
        baseline = (None if resumption is not None and resumption.baseline_done
                    else _start_baseline(study, plan, paths))
        # Tune saves its experiment state every few seconds rather than its default 10 s or
        # more: a resume can use it when it knows every trial the database has.
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", TUNE_STATE_PERIOD_S)
        if restore:
            LazyStore.register(study.name, paths.database_url)  # Tune's restored callbacks'
            tuner = tune.Tuner.restore(str(experiment_dir), _trainable(study, plan, paths),
                                       resume_unfinished=True)
        elif resumption is not None:
            tuner = _tuner(study, plan, paths, warm, first_number=resumption.next_number,
                           resume=resumption)
        else:
            tuner = _tuner(study, plan, paths, warm, first_number=1 if baseline else 0)
        planned = len(plan.grid_points) if plan.grid_points is not None else (
            study.search.max_trials)
        outage_s = study.storage.outage_s
        try:
            tuner.fit()
            # Results a trial spooled through a database outage and could not write itself,
            # before anything reads the store (a spooled end would read as still running).
            _flush_left_spools(study, paths, outage_s)
            # Tune ends a run on Ctrl-C without raising: the search was cut short if a trial
            # is still running in the store (stopped under it) or fewer than planned ran.
            interrupted = with_retries(lambda: _search_cut_short(store, study, planned),
                                       outage_s)
            if baseline is not None and not interrupted:
                print(_baseline_result(baseline), flush=True)
        except KeyboardInterrupt:
            interrupted = True
        if baseline is not None and interrupted:
            ray.cancel(baseline, force=True)
        _flush_left_spools(study, paths, outage_s)  # the baseline's, or after a Ctrl-C
        # Trials stopped under Tune (and a cancelled baseline) never recorded an end.
        cancelled = with_retries(lambda: _cancel_unfinished(store, study.name), outage_s)
        interrupted = interrupted or bool(cancelled)
        trials = latest_attempts(with_retries(lambda: store.trials(study.name), outage_s))
        front = study_pareto_front(study, trials)
        outcome = StudyOutcome(study.name, trials, time.monotonic() - started, interrupted,
                               front)
        best = outcome.best
        with_retries(lambda: store.finish_study(
            study.name, "cancelled" if interrupted else "succeeded",
            best.number if best else None, front), outage_s)
        _clean_containers(study, "after the study")
        return outcome
    finally:
        store.close()
        ray.shutdown()


def _flush_left_spools(study: StudyConfig, paths: StudyPaths, outage_s: float) -> None:
    written, left = flush_spools(paths.results_dir / study.name, paths.database_url, outage_s)
    if written or left:
        print(f"spooled results: {written} written"
              f"{f', {left} still spooled (servetune resume writes them)' if left else ''}",
              flush=True)


def _refuse_existing(store: Store, name: str) -> None:
    """A new run must not mix its trials with an earlier run's under the same name."""
    info = store.study(name)
    if info is None or not any(info.trial_counts.values()):
        return
    raise ConfigError(
        f"study {name!r} already has {sum(info.trial_counts.values())} trial(s) in the "
        f"database ({info.status.value}); `servetune resume` continues it, or give the study "
        "a new name", path="name", value=name)


def _search_cut_short(store: Store, study: StudyConfig, planned: int) -> bool:
    trials = [t for t in latest_attempts(store.trials(study.name)) if not t.baseline]
    if any(t.status is TrialStatus.RUNNING for t in trials):
        return True
    return len({t.number for t in trials}) < planned and study.search.time_budget_s is None


def _cancel_unfinished(store: Store, study: str) -> list[TrialRecord]:
    """Trials still ``running`` once Tune has returned were stopped under them: cancelled."""
    return store.end_running(study, FailureReason.CANCELLED,
                             "the study was interrupted while this trial ran")


def _clean_containers(study: StudyConfig, when: str) -> None:
    """Docker launcher: remove this study's containers no live trial owns (a trial actor can
    die without tearing down; at the start and end of a study no trial of it is live)."""
    if study.launcher.kind != "docker":
        return
    from worker.launchers.docker_janitor import remove_orphans

    for container in remove_orphans(study.name, live_trials=set()):
        print(f"janitor ({when}): removed container {container.name} of trial "
              f"{container.trial} ({container.status})", flush=True)


def _start_ray(study: StudyConfig) -> None:
    if ray.is_initialized():
        return
    if study.cluster.address == "local":
        # Logical GPUs: Ray hands out disjoint ids; CPUs are logical too, so GPUs bound the
        # concurrency on small machines rather than cores.
        ray.init(address="local", num_gpus=study.cluster.gpus_per_node,
                 num_cpus=max(os.cpu_count() or 1, int(study.search.max_concurrent_trials
                                                       * study.cluster.cpus_per_trial) + 1),
                 include_dashboard=study.cluster.dashboard, dashboard_host="127.0.0.1",
                 log_to_driver=False, logging_level=logging.WARNING,
                 _temp_dir=_short_temp_dir())
    else:
        address = None if study.cluster.address == "auto" else study.cluster.address
        ray.init(address=address or "auto", log_to_driver=False, logging_level=logging.WARNING)


def _short_temp_dir() -> str:
    # Ray's socket paths must stay under 107 bytes: keep the root short.
    root = os.environ.get("SERVETUNE_RAY_TMPDIR") or tempfile.mkdtemp(prefix="st-ray-",
                                                                         dir="/tmp")
    return root


def _tuner(study: StudyConfig, plan: SearchPlan, paths: StudyPaths,
           warm: list[tuple[dict[str, Any], float]], first_number: int = 0,
           resume: Resumption | None = None) -> tune.Tuner:
    setup = make_searcher(study, plan, warm, resume)
    name = study.name

    lazy = LazyStore(name, paths.database_url)

    def record_unschedulable(trial: Any, needs: float, largest: float) -> None:
        number = trial_number(trial)
        params = trial_params(study, trial_flags(study, plan, trial.config))
        store = lazy.get()

        def save() -> TrialRecord:
            record = unschedulable_record(name, number, store.next_attempt(name, number),
                                          params, needs, largest,
                                          study.cluster.unschedulable_after_s)
            store.save_trial(record)
            return record

        record = with_retries(save, study.storage.outage_s)
        print(f"trial {number}: unschedulable: {record.message}", flush=True)

    return tune.Tuner(
        _trainable(study, plan, paths),
        param_space=setup.param_space,
        tune_config=tune.TuneConfig(
            search_alg=setup.searcher, num_samples=setup.num_samples, metric=setup.metric,
            mode=setup.mode,
            # A BasicVariantGenerator (grid, random) limits concurrency itself; Tune would
            # warn that the TuneConfig limit is ignored.
            max_concurrent_trials=(None if isinstance(setup.searcher, BasicVariantGenerator)
                                   else study.search.max_concurrent_trials),
            time_budget_s=study.search.time_budget_s,
            scheduler=ServetuneScheduler(study.cluster.unschedulable_after_s,
                                         record_unschedulable, _inner_scheduler(study)),
            trial_name_creator=TrialNamer(name, first_number,
                                          resume.numbers() if resume else ()),
            trial_dirname_creator=lambda t: t.custom_trial_name),
        run_config=tune.RunConfig(
            name=name, storage_path=str(paths.results_dir / "ray"), verbose=0,
            stop=CancelRequested(name, lazy),
            callbacks=[ProgressPrinter(name, setup.num_samples), TrialFaults(name, lazy)],
            failure_config=tune.FailureConfig(max_failures=study.cluster.trial_retries)),
    )


def _trainable(study: StudyConfig, plan: SearchPlan, paths: StudyPaths) -> type:
    """Tune's trainable for the study: ``servetune_trial`` with the study bound, as a class
    that requests the GPUs each config needs (a restored run is given the same)."""
    bound = tune.with_parameters(
        servetune_trial, study_json=study.model_dump(mode="json"),
        plan=plan, results_dir=str(paths.results_dir), database_url=paths.database_url)
    cpus = study.cluster.cpus_per_trial
    engine = study.engine.name

    class ServetuneTrial(wrap_function(bound)):  # type: ignore[misc]
        """A trial's actor, shown in the Ray dashboard (the actors' repr name) and in log
        prefixes as its trial, ``<study>-<number>``, rather than as Tune's generic class."""

        __qualname__ = TRIAL_ACTOR_CLASS  # the dashboard's class name (not ``<locals>``)

        @classmethod
        def default_resource_request(cls, config: dict[str, Any]) -> tune.PlacementGroupFactory:
            gpus = world_size(engine, trial_flags(study, plan, config))
            return tune.PlacementGroupFactory([{"CPU": cpus, "GPU": gpus}])

        def __repr__(self) -> str:
            return str(self.trial_name)

    return ServetuneTrial


def _inner_scheduler(study: StudyConfig) -> TrialScheduler | None:
    """ASHA over benchmark levels (``search.scheduler: asha``), else Tune's FIFO (None).

    Each level a trial finishes is one Tune iteration (its score so far), and the final
    report one more; a trial can be stopped after ``grace_levels`` levels."""
    if study.search.scheduler != "asha":
        return None
    levels = len(study.benchmark.scenarios) * len(study.benchmark.concurrency)
    return AsyncHyperBandScheduler(
        time_attr="training_iteration", max_t=levels + 1,
        grace_period=min(study.search.grace_levels, levels),
        reduction_factor=study.search.reduction_factor)


def _start_baseline(study: StudyConfig, plan: SearchPlan,
                    paths: StudyPaths) -> ray.ObjectRef | None:
    """Submit the baseline trial (number 0) as a Ray task holding its GPUs, before the
    search's trials; None when the study has none."""
    flags = baseline_flags(study, plan)
    if flags is None:
        return None
    gpus = world_size(study.engine.name, flags)
    print(f"baseline (trial 0) on {gpus} GPU(s): engine defaults"
          f"{' with ' + _label(flags, study) if _label(flags, study) else ''}", flush=True)
    task = ray.remote(num_gpus=gpus, num_cpus=study.cluster.cpus_per_trial, max_retries=0)(
        _baseline_task)
    return task.options(name=f"{study.name}-baseline").remote(
        study.model_dump(mode="json"), flags, str(paths.results_dir), paths.database_url)


def _baseline_result(baseline: ray.ObjectRef) -> str:
    """The baseline's line; an infrastructure failure of it (recorded in the store as
    ``infra_error``) is reported, not raised: the study's own trials are done by now."""
    try:
        return str(ray.get(baseline))
    except ray.exceptions.RayError as e:
        cause = getattr(e, "cause", None) or e
        return f"baseline (trial 0) failed on the platform: {str(cause).splitlines()[0]}"


def _label(flags: dict[str, Any], study: StudyConfig) -> str:
    return ", ".join(f"{k}={v}" for k, v in flags.items() if k not in study.fixed_flags)


def _baseline_task(study_json: dict[str, Any], flags: dict[str, Any], results_dir: str,
                   database_url: str) -> str:
    """Run the baseline trial in a Ray task holding its GPUs; returns a line about it."""
    study = StudyConfig.model_validate(study_json)
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    store = _trial_store(study, 0, results_dir, database_url)
    try:
        spec = _spec(study, 0, f"{study.name}-baseline", flags, gpu_ids, results_dir,
                     baseline=True, attempt=store.next_attempt(study.name, 0))
        record = run_trial(spec, store)
    finally:
        _close_trial_store(store)
    outcome = (f"objective {record.objective_value:.4g}" if record.objective_value is not None
               and record.status is TrialStatus.SUCCEEDED
               else f"failed ({record.reason.value if record.reason else '?'})")
    return f"baseline (trial 0): {outcome}"


class TrialNamer:
    """Names trials ``<study>-<number>`` in creation order: the number shown in the Ray
    dashboard is the trial number in the database (searchers' trial ids are random).

    Tune copies its config objects, so the counter lives on the class, per study, in the
    driver process (the only place trials are created)."""

    _next: dict[str, int] = {}
    _reused: dict[str, list[int]] = {}

    def __init__(self, study: str, first: int = 0, reuse: Sequence[int] = ()) -> None:
        self.study = study
        TrialNamer._next[study] = first
        # A resumed study runs its lost trials again first, under their own numbers.
        TrialNamer._reused[study] = list(reuse)

    @classmethod
    def continue_after(cls, study: str, last: int) -> None:
        """A restored Tune run: its trials keep their names; new ones follow ``last``."""
        cls._next[study] = last + 1
        cls._reused[study] = []

    def __call__(self, trial: Any) -> str:
        reused = TrialNamer._reused.get(self.study)
        if reused:
            return f"{self.study}-{reused.pop(0):04d}"
        number = TrialNamer._next.get(self.study, 0)
        TrialNamer._next[self.study] = number + 1
        return f"{self.study}-{number:04d}"


def servetune_trial(config: dict[str, Any], *, study_json: dict[str, Any], plan: SearchPlan,
                    results_dir: str, database_url: str) -> None:
    """The Tune trainable: runs in the trial's actor, on the GPUs Ray reserved for it.

    With levels run one at a time, each level is reported to Tune as it ends (``final``
    false, the score of the levels so far); the last report is the trial's result."""
    study = StudyConfig.model_validate(study_json)
    context = tune.get_context()
    number = trial_number(context.get_trial_name())
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    metrics, _ = objective_metrics(study)

    def on_level(record: TrialRecord, verdict: LevelVerdict) -> None:
        partial = evaluate(study.objective, record.levels, len(gpu_ids))
        value = (score(study.objective, partial.values[0]) if partial.values is not None
                 else failure_score(study.objective, FailureReason.SLO_VIOLATED, 0.0,
                                    partial.least_violation))
        try:
            tune.report({SCORE: value, "final": False, "concurrency": verdict.concurrency,
                         "level_compliant": verdict.compliant})
        except SystemExit:  # Tune stops the trial here (the ASHA scheduler pruned it)
            planned = len(study.benchmark.scenarios) * len(study.benchmark.concurrency)
            record.status, record.reason, record.score = (
                TrialStatus.FAILED, FailureReason.PRUNED, value)
            record.objective_value = partial.values[0] if partial.values is not None else None
            record.message = (f"stopped by the ASHA scheduler after level "
                              f"{verdict.scenario} c={verdict.concurrency}: its score so far "
                              "was below the trials that reached that level")
            record.phase_timings_s["levels_skipped"] = float(planned - len(record.levels))
            record.finished_at = utcnow()
            store.save_trial(record)
            raise StopTrial from None

    store = _trial_store(study, number, results_dir, database_url)
    try:
        earlier = store.attempts(study.name, number)
        if earlier and earlier[-1].is_result:
            # Its result is stored already: the attempt that wrote it died before Tune heard
            # of it (Tune retries the trial), or a restored Tune run restarts a trial its
            # saved state had as running. Tune learns the stored result; nothing runs twice.
            logger.warning("trial %d already has a result (attempt %d): reported, not run",
                           number, earlier[-1].attempt)
            record = earlier[-1]
        else:
            # A retried trial (its actor died, or the platform failed it) is a new attempt.
            spec = _spec(study, number, context.get_trial_id(),
                         trial_flags(study, plan, config), gpu_ids, results_dir,
                         attempt=earlier[-1].attempt + 1 if earlier else 0)
            record = run_trial(spec, store, on_level if not study.objective.multi else None)
    finally:
        _close_trial_store(store)
    result: dict[str, Any] = {
        SCORE: record.score, "objective": record.objective_value, "final": True,
        "status": record.status.value, "reason": record.reason.value if record.reason else "",
        "gpus": len(record.gpu_ids), "gpu_ids": ",".join(record.gpu_ids)}
    if study.objective.multi:
        result.update(zip(metrics, record.objective_values or [], strict=False))
    tune.report(result)


def _trial_store(study: StudyConfig, number: int, results_dir: str,
                 database_url: str) -> SpoolingStore:
    """The trial's writes, spooled next to its logs while the database is unreachable."""
    spool = Path(results_dir) / study.name / f"trial-{number:04d}" / SPOOL_NAME
    return SpoolingStore(database_url, spool, outage_s=study.storage.outage_s)


def _close_trial_store(store: SpoolingStore) -> None:
    """Wait out a database outage (``storage.outage_s``) for the spooled results; what is
    still spooled then stays on disk for the driver (or ``servetune resume``) to write."""
    try:
        if not store.drain():
            logger.error("database %s still unreachable: %d result(s) left in %s",
                         store.url, store.pending(), store.spool_path)
    finally:
        store.close()


def trial_params(study: StudyConfig, flags: dict[str, Any]) -> dict[str, Any]:
    """What a trial stores as its params: its flags that are not fixed."""
    return {k: v for k, v in flags.items() if k not in study.fixed_flags}


def _spec(study: StudyConfig, number: int, trial_id: str, flags: dict[str, Any],
          gpu_ids: list[str], results_dir: str, baseline: bool = False,
          attempt: int = 0) -> TrialSpec:
    params = trial_params(study, flags)
    intent = (trial_intent(study.parallel, study.quantization, study.expansion().origins, flags)
              if study.parallel is not None or study.quantization is not None else {})
    return TrialSpec(
        study=study.name, number=number, trial_id=trial_id, engine=study.engine.name,
        simulated=study.engine.simulated, model=study.model.name,
        served_name=study.model.served, tokenizer=study.model.tokenizer, flags=flags,
        params=params, intent=intent, gpu_ids=gpu_ids, node=_node_name(), node_id=_node_id(),
        attempt=attempt, gpu_type=study.cluster.gpu_type,
        benchmark=study.benchmark, objective=study.objective,
        # Each attempt in a folder of its own: a retry never reads (or overwrites) the logs
        # and benchmark results an earlier attempt left behind.
        work_dir=(Path(results_dir) / study.name / f"trial-{number:04d}"
                  / (f"attempt-{attempt}" if attempt else "")),
        launcher=study.launcher.kind, launcher_command=study.launcher.command,
        env=dict(study.launcher.env), baseline=baseline, early_stop=study.search.early_stop,
        report_levels=study.search.scheduler == "asha",
        engine_version=study.engine.version,
        docker=(study.launcher.model_dump(mode="json") if study.launcher.kind == "docker"
                else None))


def _node_id() -> str:
    try:
        return str(ray.get_runtime_context().get_node_id() or "")
    except Exception:  # noqa: BLE001 - outside Ray (a direct call in a test)
        return ""


def _node_name() -> str:
    try:
        return ray.util.get_node_ip_address() or socket.gethostname()
    except Exception:  # noqa: BLE001 - the node name is informational
        return socket.gethostname()

