"""Scoring pinned with hand-computed cases: SLO penalties, per-level filtering, aggregation,
graded failures and Pareto fronts."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.benchmark import LevelMetrics, Stats
from common.config import ObjectiveSection, SloSection
from common.results import FailureReason
from common.scoring import (
    LATENCY_FAILURE_FLOOR_MS,
    evaluate,
    failure_score,
    failure_values,
    judge_level,
    pareto_front,
    soft_penalty,
)


def stats(value: float) -> Stats:
    return Stats(mean=value, p50=value, p90=value, p95=value, p99=value, min=value, max=value)


def level(concurrency: int, out_tps: float, ttft_p90: float, tpot: float = 10.0,
          completed: int = 32, errors: int = 0) -> LevelMetrics:
    return LevelMetrics(
        scenario="D(128,32)", concurrency=concurrency, num_completed=completed,
        num_errors=errors, duration_s=10.0, ttft_ms=stats(ttft_p90), tpot_ms=stats(tpot),
        e2e_latency_ms=stats(ttft_p90 + 31 * tpot), input_tokens_per_s=out_tps * 4,
        output_tokens_per_s=out_tps, total_tokens_per_s=out_tps * 5,
        requests_per_s=out_tps / 32, mean_input_tokens=128, mean_output_tokens=32)


def objective(**kw: object) -> ObjectiveSection:
    return ObjectiveSection.model_validate(kw)


def test_the_seed_notes_penalty_example() -> None:
    """A 10% P90 violation with weight 2 and steepness 0.1 gives 2·e ≈ 5.44."""
    assert soft_penalty(0.1, 2.0, 0.1) == pytest.approx(2 * math.e)
    assert soft_penalty(0.1, 2.0, 0.1) == pytest.approx(5.4366, abs=1e-4)
    assert soft_penalty(0.0, 2.0, 0.1) == 0.0 and soft_penalty(-0.3, 2.0, 0.1) == 0.0


def test_a_soft_violation_scales_latency_up_and_throughput_down_by_one_plus_penalty() -> None:
    """TTFT p90 of 110 ms against a soft 100 ms SLO (weight 2): latency × (1 + 2e),
    throughput ÷ (1 + 2e)."""
    slo = {"metric": "ttft", "statistic": "p90", "max_ms": 100, "kind": "soft", "weight": 2}
    lv = level(8, 1000.0, 110.0)
    factor = 1 + 2 * math.e
    latency = evaluate(objective(metric="ttft", statistic="p90", slos=[slo]), [lv], 1)
    assert latency.values == (pytest.approx(110.0 * factor),)
    tput = evaluate(objective(slos=[slo]), [lv], 1)
    assert tput.values == (pytest.approx(1000.0 / factor),)
    assert tput.verdicts[0].compliant and tput.verdicts[0].violations == {
        "ttft_p90": pytest.approx(0.1)}


def test_levels_failing_a_hard_slo_are_left_out_before_the_mean() -> None:
    """Hard TTFT p90 ≤ 500 ms: the level at 900 ms is dropped; the mean is over the other
    two (1000 and 3000 tok/s → 2000), not over all three."""
    levels = [level(1, 1000.0, 100.0), level(8, 3000.0, 200.0), level(32, 5000.0, 900.0)]
    ev = evaluate(objective(slos=[{"metric": "ttft", "max_ms": 500}]), levels, 1)
    assert ev.values == (pytest.approx(2000.0),)
    assert [v.compliant for v in ev.verdicts] == [True, True, False]
    assert ev.verdicts[2].failed == ("ttft_p90",)
    assert ev.worst_violation == pytest.approx(0.8)


def test_best_level_is_the_most_throughput_sustained_within_the_slos() -> None:
    """aggregate best_level: 3000 tok/s at concurrency 8 (32 breaks the SLO), per GPU ÷ 2."""
    levels = [level(1, 1000.0, 100.0), level(8, 3000.0, 200.0), level(32, 5000.0, 900.0)]
    ev = evaluate(objective(aggregate="best_level", per_gpu=True,
                            slos=[{"metric": "ttft", "max_ms": 500}]), levels, 2)
    assert ev.values == (pytest.approx(1500.0),)
    assert ev.best_level == ("D(128,32)", 8)


def test_a_soft_slo_beyond_its_fail_ratio_fails_the_level() -> None:
    """Soft SLO with fail_ratio 0.5: a 60% violation fails the level; 40% is penalized."""
    slo = SloSection(metric="ttft", statistic="p90", max_ms=100, kind="soft", fail_ratio=0.5)
    assert not judge_level(level(4, 1.0, 160.0), [slo]).compliant
    kept = judge_level(level(4, 1.0, 140.0), [slo])
    assert kept.compliant and kept.penalty == pytest.approx(math.exp(4.0))
    never = slo.model_copy(update={"fail_ratio": None})
    assert judge_level(level(4, 1.0, 900.0), [never]).compliant


def test_an_slo_applies_only_at_its_levels_and_errors_fail_a_level() -> None:
    """An SLO limited to concurrency 1 ignores level 32; a level with 10% failed requests fails
    under max_error_rate 0.05; a level with no completed request never complies."""
    slo = SloSection(metric="ttft", max_ms=100, concurrency=[1])
    assert judge_level(level(32, 1.0, 900.0), [slo]).compliant
    assert not judge_level(level(1, 1.0, 900.0), [slo]).compliant
    assert judge_level(level(4, 1.0, 10.0, completed=90, errors=10), [], 0.05).failed == (
        "error_rate",)
    assert not judge_level(level(4, 0.0, math.nan, completed=0, errors=5), []).compliant


def test_no_compliant_level_gives_no_values_and_records_the_worst_violation() -> None:
    """Every level above a hard 50 ms TTFT: no value; worst violation 17x, closest 1x."""
    levels = [level(1, 1000.0, 100.0), level(8, 3000.0, 900.0)]
    ev = evaluate(objective(slos=[{"metric": "ttft", "max_ms": 50}]), levels, 1)
    assert ev.values is None and not ev.compliant
    assert ev.worst_violation == pytest.approx(17.0)
    assert ev.least_violation == pytest.approx(1.0)
    assert ev.slo_report()["worst_violation"] == pytest.approx(17.0)


def test_failures_are_finite_graded_and_below_every_success() -> None:
    """OOM at startup < crash late in the benchmark < benchmark error late < SLO miss by a lot
    < SLO miss by a little < the worst success (0 tok/s)."""
    obj = objective()
    ranked = [
        failure_score(obj, FailureReason.INFEASIBLE_CONFIG),
        failure_score(obj, FailureReason.ENGINE_CRASH, progress=0.9),
        failure_score(obj, FailureReason.BENCHMARK_ERROR, progress=0.9),
        failure_score(obj, FailureReason.SLO_VIOLATED, violation=3.0),
        failure_score(obj, FailureReason.SLO_VIOLATED, violation=0.05),
    ]
    assert ranked == sorted(ranked) and len(set(ranked)) == len(ranked)
    assert all(math.isfinite(s) and -2.0 <= s < -1.0 for s in ranked)
    assert failure_score(obj, FailureReason.STARTUP_TIMEOUT) < failure_score(
        obj, FailureReason.STARTUP_TIMEOUT, progress=0.5)
    assert ranked[0] == -2.0  # severity 1 × (1 − 0.5 · 0)


def test_latency_failures_sit_past_the_floor_in_each_direction() -> None:
    """Minimized latency: a failure's score is below −1e7 ms; multi-objective failure values
    are negative throughput and latency past the floor."""
    latency = objective(metric="e2e_latency", statistic="p99")
    assert failure_score(latency, FailureReason.ENGINE_CRASH) < -LATENCY_FAILURE_FLOOR_MS
    multi = objective(per_gpu=True, pareto_with=[{"metric": "ttft", "statistic": "p90"}])
    tput, ttft = failure_values(multi, FailureReason.INFEASIBLE_CONFIG)
    assert tput == -2.0 and ttft == 2 * LATENCY_FAILURE_FLOOR_MS


def test_multi_objective_values_come_from_the_same_levels() -> None:
    """Throughput per GPU and p90 TTFT are both read at the best compliant level."""
    levels = [level(1, 1000.0, 100.0), level(8, 3000.0, 200.0)]
    ev = evaluate(objective(aggregate="best_level", per_gpu=True,
                            pareto_with=[{"metric": "ttft", "statistic": "p90"}]), levels, 4)
    assert ev.values == (pytest.approx(750.0), pytest.approx(200.0))


def test_pareto_front_by_hand() -> None:
    """(max, min): (10, 5) and (8, 2) trade off; (7, 6) is dominated by both; ties keep both."""
    points = [(1, (10.0, 5.0)), (2, (8.0, 2.0)), (3, (7.0, 6.0)), (4, (8.0, 2.0))]
    assert pareto_front(points, [True, False]) == [1, 2, 4]


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=30))
def test_pareto_front_points_are_mutually_non_dominated_and_cover_the_rest(
        raw: list[tuple[int, int]]) -> None:
    """No front point dominates another; every point off the front is dominated by one on it."""
    points = [(i, (float(a), float(b))) for i, (a, b) in enumerate(raw)]
    front = set(pareto_front(points, [True, False]))

    def dominates(p: tuple[float, float], q: tuple[float, float]) -> bool:
        return p[0] >= q[0] and p[1] <= q[1] and (p[0] > q[0] or p[1] < q[1])

    values = dict(points)
    assert front
    for i in front:
        assert not any(dominates(values[j], values[i]) for j in front)
    for i in set(values) - front:
        assert any(dominates(values[j], values[i]) for j in front)
