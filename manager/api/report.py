"""What the report page draws: score by trial with the best so far, the Pareto front,
throughput against latency per concurrency level of the top trials, parameter effects."""

from __future__ import annotations

from dataclasses import replace

from common.results import TrialStatus
from common.store.models import StudyRow
from common.store.readonly import StoreReader
from manager.api.conversions import objective_of
from manager.api.effects import EffectsCache
from manager.api.redact import redact_value
from manager.api.schemas import LevelPointOut, PlotsOut, ScorePointOut, TrialLevelsOut

MAX_POINTS = 5000  # trials drawn in the score plot (the first ones, by number)
TOP_TRIALS = 5


def plots_out(reader: StoreReader, row: StudyRow, tag: str,
              effects: EffectsCache) -> PlotsOut:
    objective = objective_of(row.config)
    maximize = objective.maximize if objective is not None else True
    points = [replace(p, params=redact_value(p.params))
              for p in reader.score_series(row, MAX_POINTS)]
    scores: list[ScorePointOut] = []
    best_score: float | None = None
    best_value: float | None = None
    for p in points:
        if (p.status is TrialStatus.SUCCEEDED and p.score is not None
                and (best_score is None or p.score > best_score)):
            best_score, best_value = p.score, p.objective_value
        scores.append(ScorePointOut(
            number=p.number, status=p.status.value,
            reason=p.reason.value if p.reason is not None else None, score=p.score,
            best_so_far=best_value, objective_value=p.objective_value,
            objective_values=p.objective_values))
    ranked = sorted((p for p in points if p.status is TrialStatus.SUCCEEDED
                     and p.score is not None), key=lambda p: (-(p.score or 0.0), p.number))
    top = reader.trials_with_runs(row, [p.number for p in ranked[:TOP_TRIALS]])
    top.sort(key=lambda r: (-(r.score or 0.0), r.number))
    param_effects, method = effects.get(row.name, tag, points, maximize)
    front = getattr(row, "pareto_front", None)
    return PlotsOut(
        study=row.name, objective=objective, scores=scores,
        pareto_front=list(front) if front is not None else None,
        top_trials=[TrialLevelsOut(number=t.number, score=t.score, levels=[
            LevelPointOut(scenario=run.scenario, concurrency=run.concurrency,
                          output_tokens_per_s=run.output_tokens_per_s,
                          ttft_ms_p95=run.ttft_ms_p95, e2e_latency_ms_p95=run.e2e_latency_ms_p95,
                          tpot_ms_p95=run.tpot_ms_p95)
            for run in t.benchmark_runs]) for t in top],
        param_effects=param_effects, importance_method=method, tag=tag)
