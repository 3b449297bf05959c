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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from common.config import StudyConfig
from common.params import world_size
from common.results import FailureReason, TrialRecord, TrialStatus, utcnow
from common.store import Store
from manager.paths import StudyPaths
from manager.preflight import preflight
from manager.progress import ProgressPrinter
from manager.space import SearchPlan, build_plan, trial_flags
from worker.trial import TrialSpec, run_trial

logger = logging.getLogger(__name__)
METRIC = "score"


@dataclass(frozen=True)
class StudyOutcome:
    study: str
    trials: list[TrialRecord]
    wall_s: float
    interrupted: bool

    @property
    def best(self) -> TrialRecord | None:
        done = [t for t in self.trials if t.status is TrialStatus.SUCCEEDED]
        return max(done, key=lambda t: t.score or float("-inf")) if done else None


def cluster_max_node_gpus(study: StudyConfig) -> int:
    """GPUs of the largest node: the local node's from the study, or read from the cluster."""
    if study.cluster.address == "local":
        return study.cluster.gpus_per_node
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return int(max((n.get("Resources", {}).get("GPU", 0) for n in nodes), default=0))


def run_study(study: StudyConfig, paths: StudyPaths) -> StudyOutcome:
    """Run a study to the end (or until Ctrl-C); every trial ends in the store."""
    preflight(study)
    if study.cluster.address == "local":
        plan = build_plan(study, study.cluster.gpus_per_node)  # before Ray starts
    paths.results_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open(paths.database_url)
    started = time.monotonic()
    _start_ray(study)
    interrupted = False
    try:
        if study.cluster.address != "local":
            plan = build_plan(study, cluster_max_node_gpus(study))
        store.create_study(study.name, study.model_dump(mode="json"))
        _clean_containers(study, "before the study")
        tuner = _tuner(study, plan, paths)
        try:
            tuner.fit()
        except KeyboardInterrupt:
            interrupted = True
        # Tune ends a run on Ctrl-C without raising; trials it stopped never recorded an end.
        cancelled = _cancel_unfinished(store, study.name)
        planned = len(plan.grid_points) if plan.grid_points is not None else (
            study.search.max_trials)
        trials = store.trials(study.name)
        interrupted = interrupted or bool(cancelled) or (
            len({t.number for t in trials}) < planned and study.search.time_budget_s is None)
        outcome = StudyOutcome(study.name, trials, time.monotonic() - started, interrupted)
        best = outcome.best
        store.finish_study(study.name, "cancelled" if interrupted else "succeeded",
                           best.number if best else None)
        _clean_containers(study, "after the study")
        return outcome
    finally:
        store.close()
        ray.shutdown()


def _cancel_unfinished(store: Store, study: str) -> list[TrialRecord]:
    """Trials still ``running`` once Tune has returned were stopped under them: cancelled."""
    cancelled = []
    for record in store.trials(study):
        if record.status is TrialStatus.RUNNING:
            record.status = TrialStatus.FAILED
            record.reason = FailureReason.CANCELLED
            record.message = "the study was interrupted while this trial ran"
            record.finished_at = utcnow()
            store.save_trial(record)
            cancelled.append(record)
    return cancelled


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


def _tuner(study: StudyConfig, plan: SearchPlan, paths: StudyPaths) -> tune.Tuner:
    trainable = tune.with_parameters(
        servetune_trial, study_json=study.model_dump(mode="json"),
        plan=plan, results_dir=str(paths.results_dir), database_url=paths.database_url)
    cpus = study.cluster.cpus_per_trial
    engine = study.engine.name

    def resources(config: dict[str, Any]) -> tune.PlacementGroupFactory:
        gpus = world_size(engine, trial_flags(study, plan, config))
        return tune.PlacementGroupFactory([{"CPU": cpus, "GPU": gpus}])

    search = study.search
    if plan.grid_points is not None:
        searcher: Any = BasicVariantGenerator(points_to_evaluate=plan.grid_points,
                                              max_concurrent=search.max_concurrent_trials)
        num_samples = len(plan.grid_points)
        # The points are given explicitly; Tune still wants each key declared in the space.
        param_space: dict[str, Any] = {
            key: tune.choice(sorted({p[key] for p in plan.grid_points}, key=str))
            for key in plan.grid_points[0]}
    elif search.algorithm == "random":
        searcher = BasicVariantGenerator(random_state=search.seed,
                                         max_concurrent=search.max_concurrent_trials)
        num_samples, param_space = search.max_trials, plan.param_space
    else:
        import optuna

        sampler = optuna.samplers.TPESampler(seed=search.seed,
                                             n_startup_trials=search.startup_trials)
        searcher = OptunaSearch(metric=METRIC, mode="max", sampler=sampler)
        num_samples, param_space = search.max_trials, plan.param_space
    name = study.name
    return tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=num_samples, metric=METRIC, mode="max",
            max_concurrent_trials=search.max_concurrent_trials,
            time_budget_s=search.time_budget_s,
            trial_name_creator=TrialNamer(name),
            trial_dirname_creator=lambda t: t.custom_trial_name),
        run_config=tune.RunConfig(
            name=name, storage_path=str(paths.results_dir / "ray"), verbose=0,
            callbacks=[ProgressPrinter(name, num_samples)],
            failure_config=tune.FailureConfig(max_failures=2)),
    )


class TrialNamer:
    """Names trials ``<study>-<number>`` in creation order: the number shown in the Ray
    dashboard is the trial number in the database (searchers' trial ids are random).

    Tune copies its config objects, so the counter lives on the class, per study, in the
    driver process (the only place trials are created)."""

    _next: dict[str, int] = {}

    def __init__(self, study: str, first: int = 0) -> None:
        self.study = study
        TrialNamer._next[study] = first

    def __call__(self, trial: Any) -> str:
        number = TrialNamer._next.get(self.study, 0)
        TrialNamer._next[self.study] = number + 1
        return f"{self.study}-{number:04d}"


def _number(trial_name: str) -> int:
    return int(trial_name.rsplit("-", 1)[-1])


def servetune_trial(config: dict[str, Any], *, study_json: dict[str, Any], plan: SearchPlan,
                    results_dir: str, database_url: str) -> None:
    """The Tune trainable: runs in the trial's actor, on the GPUs Ray reserved for it."""
    study = StudyConfig.model_validate(study_json)
    context = tune.get_context()
    trial_id = context.get_trial_id()
    number = _number(context.get_trial_name())
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    flags = trial_flags(study, plan, config)
    params = {k: v for k, v in flags.items() if k not in study.fixed_flags}
    spec = TrialSpec(
        study=study.name, number=number, trial_id=trial_id, engine=study.engine.name,
        simulated=study.engine.simulated, model=study.model.name,
        served_name=study.model.served, tokenizer=study.model.tokenizer, flags=flags,
        params=params, gpu_ids=gpu_ids, node=_node_name(), gpu_type=study.cluster.gpu_type,
        benchmark=study.benchmark, objective=study.objective,
        work_dir=Path(results_dir) / study.name / f"trial-{number:04d}",
        launcher=study.launcher.kind, launcher_command=study.launcher.command,
        env=dict(study.launcher.env),
        docker=(study.launcher.model_dump(mode="json") if study.launcher.kind == "docker"
                else None))
    store = Store.open(database_url)
    try:
        record = run_trial(spec, store)
    finally:
        store.close()
    tune.report({METRIC: record.score, "objective": record.objective_value,
                 "status": record.status.value,
                 "reason": record.reason.value if record.reason else "",
                 "gpus": len(gpu_ids), "gpu_ids": ",".join(gpu_ids)})


def _node_name() -> str:
    try:
        return ray.util.get_node_ip_address() or socket.gethostname()
    except Exception:  # noqa: BLE001 - the node name is informational
        return socket.gethostname()

