"""How fast each searcher finds a near-optimal config, on landscapes with a known optimum.

Each landscape is a real study (schema, search plan, objective, SLOs) whose every config is
evaluated up front on the simulated engine in virtual time (no HTTP, no sleeping): startup time
from the performance model, each concurrency level predicted by the scheduler the HTTP server
runs. The optimum is the best score over the whole space. Then each strategy runs ``--budget``
trials for ``--seeds`` seeds, one trial at a time, with trial outcomes read from that table:

- grid: the plan's grid, in the order a grid study runs it;
- random: each param drawn uniformly (what Tune's random search does);
- tpe: the study's Optuna TPE sampler, failed trials told as FAIL (no value: what a searcher
  sees when failures are errors or ±inf), every level benchmarked in one genai-bench run;
- tpe+: the same sampler with servetune's failure-aware scores (finite, graded) and early
  stopping (a scenario's genai-bench run is stopped at its first level that fails the SLOs,
  and its higher levels are skipped).

Printed per landscape and strategy: the median number of trials until a trial's score is within
2% of the optimum, the share of seeds that get there within 30 trials, and the GPU-hours spent
until then (startup + benchmark time × GPUs, from the simulator; the whole budget when a seed
never gets there), each also as a ratio against grid search.

    .venv/bin/python bench/search_efficiency.py [--seeds 20] [--budget 60]
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from common.benchmark import LevelMetrics
from common.config import StudyConfig, parse_study
from common.params import to_argv, world_size
from common.results import FailureReason
from common.scoring import evaluate, failure_score, judge_level, score, stops_early
from common.traffic import TrafficScenario
from manager.search import make_sampler
from manager.space import SearchPlan, build_plan, trial_flags
from worker.benchmark.genai_bench import FIXED_OVERHEAD_S, PER_LEVEL_OVERHEAD_S
from worker.sim.engine import SimEngine
from worker.sim.scheduler import EngineCrashed
from worker.sim.virtual import VirtualRun, predict

TARGET = 0.02
WITHIN = 30


def landscapes() -> list[StudyConfig]:
    """Three studies: different models, engines, GPUs, objectives and SLOs."""
    base = {"search": {"algorithm": "tpe", "max_trials": 60, "startup_trials": 8},
            "cluster": {"gpus_per_node": 8}}
    return [
        parse_study({
            **base, "name": "llama8b-h100-sglang-ttft",
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
            "engine": {"name": "sglang", "simulated": True},
            "search_space": {"tp-size": [1, 2, 4], "dp-size": [1, 2],
                             "max-running-requests": [16, 32, 64, 128, 256],
                             "chunked-prefill-size": [2048, 4096, 8192],
                             "mem-fraction-static": [0.8, 0.9]},
            "benchmark": {"scenarios": ["D(1024,256)"], "concurrency": [8, 32, 128],
                          "requests_per_level": 64},
            "objective": {"metric": "output_throughput", "per_gpu": True,
                          "aggregate": "best_level",
                          "slos": [{"metric": "ttft", "statistic": "p90", "max_ms": 150}]},
            "cluster": {"gpus_per_node": 8, "gpu_type": "H100"}}),
        parse_study({
            **base, "name": "llama70b-h100-vllm-tpot",
            "model": {"name": "meta-llama/Llama-3.1-70B-Instruct"},
            "engine": {"name": "vllm", "simulated": True},
            "search_space": {"tensor-parallel-size": [1, 2, 4, 8],
                             "pipeline-parallel-size": [1, 2],
                             "max-num-seqs": [32, 64, 128, 256],
                             "max-num-batched-tokens": [2048, 8192, 16384],
                             "gpu-memory-utilization": [0.85, 0.9, 0.95]},
            "benchmark": {"scenarios": ["D(512,256)"], "concurrency": [16, 64, 256],
                          "requests_per_level": 128},
            "objective": {"metric": "output_throughput", "per_gpu": True,
                          "aggregate": "best_level",
                          "slos": [{"metric": "tpot", "statistic": "p90", "max_ms": 35},
                                   {"metric": "ttft", "statistic": "p90", "max_ms": 2000}]},
            "cluster": {"gpus_per_node": 8, "gpu_type": "H100"}}),
        parse_study({
            **base, "name": "qwen3moe-l40s-vllm-e2e",
            "model": {"name": "Qwen/Qwen3-30B-A3B"},
            "engine": {"name": "vllm", "simulated": True},
            "search_space": {"tensor-parallel-size": [1, 2, 4], "data-parallel-size": [1, 2],
                             "max-num-seqs": [16, 64, 256],
                             "kv-cache-dtype": ["auto", "fp8"],
                             "gpu-memory-utilization": [0.8, 0.9, 0.95]},
            "benchmark": {"scenarios": ["D(2048,128)"], "concurrency": [4, 16, 64],
                          "requests_per_level": 64},
            "objective": {"metric": "total_throughput", "per_gpu": True,
                          "slos": [{"metric": "e2e_latency", "statistic": "p90",
                                    "max_ms": 6000, "kind": "soft", "weight": 1.0,
                                    "fail_ratio": 0.5}]},
            "cluster": {"gpus_per_node": 8, "gpu_type": "L40S"}}),
    ]


@dataclass(frozen=True)
class Outcome:
    """One config, fully evaluated: its levels (until a crash), startup and world size."""

    config: dict[str, Any]
    gpus: int
    startup_s: float
    levels: tuple[LevelMetrics, ...]
    startup_failed: bool
    crashed: bool


@dataclass
class Landscape:
    study: StudyConfig
    plan: SearchPlan
    grid: list[dict[str, Any]]
    table: dict[str, Outcome]
    optimum: float

    def outcome(self, config: dict[str, Any]) -> Outcome:
        return self.table[_key(config)]


def build(study: StudyConfig) -> Landscape:
    plan = build_plan(study, study.cluster.gpus_per_node)
    grid_study = study.model_copy(update={"search": study.search.model_copy(
        update={"algorithm": "grid", "max_trials": 10**6})})
    grid = build_plan(grid_study, study.cluster.gpus_per_node).grid_points or []
    table = {_key(c): _evaluate_config(study, plan, c) for c in grid}
    optimum = max(full_score(study, o) for o in table.values())
    return Landscape(study, plan, grid, table, optimum)


def _evaluate_config(study: StudyConfig, plan: SearchPlan, config: dict[str, Any]) -> Outcome:
    flags = trial_flags(study, plan, config)
    engine_name = study.engine.name
    model_arg = [study.model.name] if engine_name == "vllm" else ["--model-path",
                                                                   study.model.name]
    argv = ["--engine", engine_name, *model_arg, *to_argv(engine_name, flags),
            "--sim-gpu", study.cluster.gpu_type]
    engine = SimEngine.from_argv(argv)
    gpus = world_size(engine_name, flags)
    if engine.failed:
        return Outcome(config, gpus, engine.startup.total_s, (), True, False)
    levels: list[LevelMetrics] = []
    crashed = False
    b = study.benchmark
    for scenario in b.scenarios:
        traffic = TrafficScenario.parse(scenario)
        for concurrency in b.concurrency:
            try:
                levels.append(predict(engine, traffic, concurrency,
                                      VirtualRun(num_requests=b.requests_per_level)))
            except EngineCrashed:
                crashed = True
                break
    return Outcome(config, gpus, engine.startup.total_s, tuple(levels), False, crashed)


def full_score(study: StudyConfig, outcome: Outcome) -> float:
    """The score a trial gets when every level is benchmarked."""
    return _score(study, outcome, outcome.levels)


def _score(study: StudyConfig, outcome: Outcome, levels: tuple[LevelMetrics, ...]) -> float:
    objective = study.objective
    if outcome.startup_failed:
        return failure_score(objective, FailureReason.INFEASIBLE_CONFIG)
    ev = evaluate(objective, levels, outcome.gpus)
    if ev.values is not None:
        return score(objective, ev.values[0])
    planned = len(study.benchmark.scenarios) * len(study.benchmark.concurrency)
    progress = sum(1 for lv in levels if lv.num_completed) / planned
    if outcome.crashed:
        return failure_score(objective, FailureReason.ENGINE_CRASH, progress)
    return failure_score(objective, FailureReason.SLO_VIOLATED, progress, ev.least_violation)


def trial_cost(study: StudyConfig, outcome: Outcome,
               early_stop: bool) -> tuple[float, tuple[LevelMetrics, ...], bool]:
    """(GPU-seconds, levels benchmarked, failed) of running this config once."""
    if outcome.startup_failed:
        return outcome.startup_s * outcome.gpus, (), True
    b = study.benchmark
    if not early_stop:
        seconds = (outcome.startup_s + FIXED_OVERHEAD_S
                   + sum(lv.duration_s + PER_LEVEL_OVERHEAD_S for lv in outcome.levels))
        failed = evaluate(study.objective, outcome.levels, outcome.gpus).values is None
        return seconds * outcome.gpus, outcome.levels, failed
    ran: list[LevelMetrics] = []
    per_scenario = len(b.concurrency)
    for s_index in range(len(b.scenarios)):
        for lv in outcome.levels[s_index * per_scenario:(s_index + 1) * per_scenario]:
            ran.append(lv)
            verdict = judge_level(lv, study.objective.slos, study.objective.max_error_rate)
            if stops_early(verdict):
                break
    # One genai-bench run per scenario, stopped at the first failing level.
    seconds = (outcome.startup_s + FIXED_OVERHEAD_S * len(b.scenarios)
               + sum(lv.duration_s + PER_LEVEL_OVERHEAD_S for lv in ran))
    failed = evaluate(study.objective, tuple(ran), outcome.gpus).values is None
    return seconds * outcome.gpus, tuple(ran), failed


@dataclass(frozen=True)
class RunResult:
    trials_to_target: int | None
    gpu_hours_to_target: float


Suggest = Callable[[], dict[str, Any]]


def run_strategy(land: Landscape, strategy: str, seed: int, budget: int) -> RunResult:
    study = land.study
    threshold = land.optimum - TARGET * abs(land.optimum)
    gpu_s = 0.0
    early = strategy == "tpe+"
    optuna_study, distributions = None, None
    rng = random.Random(seed)
    if strategy in ("tpe", "tpe+"):
        seeded = study.model_copy(update={"search": study.search.model_copy(
            update={"seed": seed})})
        optuna_study = optuna.create_study(direction="maximize", sampler=make_sampler(seeded))
        distributions = OptunaSearch.convert_search_space(land.plan.param_space)
    for n in range(1, budget + 1):
        trial = None
        if strategy == "grid":
            config = land.grid[(n - 1) % len(land.grid)]
        elif strategy == "random":
            config = {name: rng.choice(domain.categories)
                      for name, domain in land.plan.param_space.items()}
        else:
            assert optuna_study is not None and distributions is not None
            trial = optuna_study.ask(distributions)
            config = dict(trial.params)
        outcome = land.outcome(config)
        cost, ran, failed = trial_cost(study, outcome, early)
        gpu_s += cost
        if trial is not None and optuna_study is not None:
            if early:
                optuna_study.tell(trial, _score(study, outcome, ran))
            elif failed:
                optuna_study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                optuna_study.tell(trial, full_score(study, outcome))
        if full_score(study, outcome) >= threshold:
            return RunResult(n, gpu_s / 3600)
    return RunResult(None, gpu_s / 3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=60)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    strategies = ["grid", "random", "tpe", "tpe+"]
    for study in landscapes():
        started = time.monotonic()
        land = build(study)
        feasible = sum(1 for o in land.table.values() if full_score(study, o) >= 0)
        print(f"\n{study.name}: {len(land.grid)} configs ({feasible} meet the SLOs), "
              f"optimum score {land.optimum:.1f}, evaluated in {time.monotonic() - started:.0f}"
              " s")
        print(f"  {'strategy':<8} {'median trials':>13} {'ratio':>6} {'<=30 trials':>11} "
              f"{'GPU-h':>7} {'ratio':>6}")
        rows = {}
        for strategy in strategies:
            results = [run_strategy(land, strategy, seed, args.budget)
                       for seed in range(args.seeds)]
            reached = [r.trials_to_target for r in results]
            median = statistics.median(
                [t if t is not None else args.budget + 1 for t in reached])
            within = sum(1 for t in reached if t is not None and t <= WITHIN) / len(results)
            hours = statistics.mean(r.gpu_hours_to_target for r in results)
            rows[strategy] = (median, within, hours)
        grid_median, _, grid_hours = rows["grid"]
        for strategy, (median, within, hours) in rows.items():
            shown = f"{median:.0f}" if median <= args.budget else f">{args.budget}"
            print(f"  {strategy:<8} {shown:>13} {median / grid_median:>6.2f} "
                  f"{within:>11.0%} {hours:>7.2f} {hours / grid_hours:>6.2f}")


def _key(config: dict[str, Any]) -> str:
    return repr(sorted(config.items()))


if __name__ == "__main__":
    main()
