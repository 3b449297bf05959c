"""Tune pickles a study's searcher with its Optuna sampler (``tuner.pkl``, searcher
checkpoints): each sampler servetune builds must survive a pickle round trip and sample after
it."""

from __future__ import annotations

import pickle

import optuna
import pytest
import ray.cloudpickle

from common.config import parse_study
from manager.search import make_sampler


@pytest.mark.parametrize("algorithm", ["tpe", "nsga2"])
def test_samplers_pickle_and_sample_after_a_round_trip(algorithm: str) -> None:
    study = parse_study({
        "name": f"pickle-{algorithm}", "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "engine": {"name": "sglang", "simulated": True},
        "search_space": {"max-running-requests": [8, 16, 32, 64]},
        "search": {"algorithm": algorithm, "max_trials": 8, "population_size": 2},
        "benchmark": {"scenarios": ["D(128,32)"], "concurrency": [4]},
        **({"objective": {"metric": "output_throughput",
                          "pareto_with": [{"metric": "ttft", "statistic": "p90"}]}}
           if algorithm == "nsga2" else {})})
    sampler = make_sampler(study)
    for dumps in (pickle.dumps, ray.cloudpickle.dumps):
        restored = pickle.loads(dumps(sampler))
        directions = ["maximize", "minimize"] if algorithm == "nsga2" else ["maximize"]
        optimized = optuna.create_study(sampler=restored, directions=directions)
        # Enough trials to pass NSGA-II's first generation (population 2), where it takes
        # its lock.
        for _ in range(5):
            trial = optimized.ask()
            value = float(trial.suggest_categorical("m", [8, 16, 32, 64]))
            optimized.tell(trial, [value, -value] if algorithm == "nsga2" else value)
        assert len(optimized.trials) == 5
