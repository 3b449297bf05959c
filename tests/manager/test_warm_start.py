"""Warm start reads earlier comparable studies from a real SQLite store and turns their trials
into points of the new study's search space."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import parse_study
from common.errors import ConfigError
from common.results import FailureReason, TrialRecord, TrialStatus
from common.store import Store
from manager.space import PARALLEL_PARAM, build_plan
from manager.warm_start import warm_start_points

BASE = {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "engine": {"name": "sglang", "simulated": True},
        "search_space": {"tp-size": [1, 2], "max-running-requests": [32, 64, 128]},
        "benchmark": {"scenarios": ["D(128,32)"], "concurrency": [4]}}


def study(name: str, **overrides: object):  # type: ignore[no-untyped-def]
    return parse_study({"name": name, **BASE, **overrides})


def record(study_name: str, number: int, params: dict, status: TrialStatus,  # type: ignore[type-arg]
           score: float, reason: FailureReason | None = None, attempt: int = 0,
           baseline: bool = False) -> TrialRecord:
    return TrialRecord(study=study_name, number=number, attempt=attempt, params=params,
                       status=status, reason=reason, score=score, baseline=baseline)


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Store.open(f"sqlite:///{tmp_path / 'warm.db'}")
    earlier = study("earlier")
    s.create_study("earlier", earlier.model_dump(mode="json"))
    ok = TrialStatus.SUCCEEDED
    s.save_trial(record("earlier", 0, {"tp-size": 1}, ok, 900.0, baseline=True))
    s.save_trial(record("earlier", 1, {"tp-size": 2, "max-running-requests": 64}, ok, 1500.0))
    s.save_trial(record("earlier", 2, {"tp-size": 1, "max-running-requests": 32},
                        TrialStatus.FAILED, -2.0, FailureReason.INFEASIBLE_CONFIG))
    # Lost on attempt 0, succeeded on attempt 1: only the latest attempt counts.
    s.save_trial(record("earlier", 3, {"tp-size": 1, "max-running-requests": 128},
                        TrialStatus.FAILED, -1.6, FailureReason.NODE_LOST))
    s.save_trial(record("earlier", 3, {"tp-size": 1, "max-running-requests": 128}, ok,
                        1100.0, attempt=1))
    s.save_trial(record("earlier", 4, {"tp-size": 2, "max-running-requests": 512}, ok, 1700.0))
    s.save_trial(record("earlier", 5, {"tp-size": 2, "max-running-requests": 32},
                        TrialStatus.FAILED, -1.5, FailureReason.CANCELLED))
    other = study("other-gpu", cluster={"gpu_type": "L40S"})
    s.create_study("other-gpu", other.model_dump(mode="json"))
    s.save_trial(record("other-gpu", 0, {"tp-size": 2, "max-running-requests": 64}, ok, 1.0))
    yield s
    s.close()


def test_comparable_trials_seed_the_searcher_as_points_of_the_new_space(store: Store) -> None:
    """Trials 1, 2 and 3 (latest attempt) seed it; the baseline, a value outside the space
    (512), a cancelled trial and a study on another GPU type do not."""
    new = study("new", search={"warm_start": True})
    plan = build_plan(new, 8)
    points = warm_start_points(new, plan, store)
    by_mrr = {p["max-running-requests"]: (p[PARALLEL_PARAM], score) for p, score in points}
    assert by_mrr == {64: ("tp-size=2", 1500.0), 32: ("tp-size=1", -2.0),
                      128: ("tp-size=1", 1100.0)}


def test_no_warm_start_reads_nothing_and_a_named_study_must_be_comparable(
        store: Store) -> None:
    """warm_start false gives no points; naming an incomparable or missing study is a
    ConfigError naming it."""
    assert warm_start_points(study("new"), build_plan(study("new"), 8), store) == []
    named = study("new", search={"warm_start": ["other-gpu"]})
    with pytest.raises(ConfigError, match="'other-gpu' is not comparable"):
        warm_start_points(named, build_plan(named, 8), store)
    missing = study("new", search={"warm_start": ["nope"]})
    with pytest.raises(ConfigError, match="no study named"):
        warm_start_points(missing, build_plan(missing, 8), store)
