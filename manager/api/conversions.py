"""Rows and query results → response schemas, with every secret-looking value masked."""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Any

import yaml

from common.results import TrialStatus
from common.store.models import LATENCY_STATS, StudyRow
from common.store.queries import Fingerprint, LevelAggregate, StudySummary
from common.store.study import StudyStatus
from manager.api.redact import redact_argv, redact_text, redact_value
from manager.api.schemas import (
    BestConfigOut,
    LevelOut,
    ObjectiveOut,
    ProgressOut,
    StatsOut,
    StudyDetailOut,
    StudyOut,
    TrialCountsOut,
    TrialOut,
    TrialSummaryOut,
)

# Rows are typed loosely: the store's row classes gain columns over schema revisions, and
# the API reads the newer ones (objective_values, pareto_front) only where they exist.
Row = Any
_LATENCY_METRICS = ("e2e_latency", "ttft", "tpot")


def objective_of(config: dict[str, Any]) -> ObjectiveOut | None:
    """The objective section of a stored study config (its defaults where a key is absent)."""
    section = config.get("objective")
    if not isinstance(section, dict):
        return None
    metric = str(section.get("metric", "output_throughput"))
    others = section.get("pareto_with")
    terms = [section, *(t for t in others if isinstance(t, dict))] if isinstance(
        others, list) else [section]
    return ObjectiveOut(metric=metric, maximize=metric not in _LATENCY_METRICS,
                        per_gpu=bool(section.get("per_gpu", False)),
                        statistic=str(section.get("statistic", "mean")),
                        labels=[_term_label(t) for t in terms])


def _term_label(term: dict[str, Any]) -> str:
    metric = str(term.get("metric", "output_throughput"))
    if metric in _LATENCY_METRICS:
        return f"{metric}_{term.get('statistic', 'mean')}_ms"
    return metric + ("_per_gpu" if term.get("per_gpu") else "")


def planned_trials(config: dict[str, Any]) -> int | None:
    search = config.get("search")
    value = search.get("max_trials") if isinstance(search, dict) else None
    return value if isinstance(value, int) else None


def counts_out(counts: dict[TrialStatus, int]) -> TrialCountsOut:
    return TrialCountsOut(running=counts.get(TrialStatus.RUNNING, 0),
                          succeeded=counts.get(TrialStatus.SUCCEEDED, 0),
                          failed=counts.get(TrialStatus.FAILED, 0), total=sum(counts.values()))


def study_out(summary: StudySummary) -> StudyOut:
    return StudyOut(**_study_fields(summary))


def study_detail_out(summary: StudySummary, fingerprint: Fingerprint | None,
                     pareto: list[Row] | None, now: datetime) -> StudyDetailOut:
    best = summary.best
    return StudyDetailOut(
        **_study_fields(summary),
        config=redact_value(summary.row.config),
        progress=progress_out(summary, fingerprint, now),
        best_trial=trial_out(best, [best.attempt]) if best is not None else None,
        pareto_front=[trial_summary_out(row, None) for row in pareto]
        if pareto is not None else None)


def progress_out(summary: StudySummary, fingerprint: Fingerprint | None,
                 now: datetime) -> ProgressOut:
    row = summary.row
    end = row.finished_at or now
    return ProgressOut(
        study=row.name, status=row.status, trial_counts=counts_out(summary.trial_counts),
        planned_trials=planned_trials(row.config), best_trial_number=summary.best_number,
        best_score=summary.best_score, elapsed_s=(end - row.created_at).total_seconds(),
        tag=fingerprint.tag if fingerprint is not None else "")


def launch_command(row: Row) -> str:
    """The trial's stored engine argv, secrets masked, as one shell line."""
    return shlex.join(redact_argv(list(row.argv)))


def trial_summary_out(row: Row, aggregate: LevelAggregate | None) -> TrialSummaryOut:
    return TrialSummaryOut(**_trial_fields(row, aggregate))


def trial_out(row: Row, attempts: list[int]) -> TrialOut:
    levels = [level_out(run) for run in row.benchmark_runs]
    return TrialOut(
        **_trial_fields(row, _aggregate_of(levels)),
        trial_id=row.trial_id, attempts=attempts, argv=redact_argv(list(row.argv)),
        node_id=getattr(row, "node_id", "") or "",
        intent=redact_value(dict(getattr(row, "intent", None) or {})),
        message=redact_text(row.message), log_excerpt=redact_text(row.log_excerpt),
        phase_timings_s=dict(row.phase_timings), slo=redact_value(getattr(row, "slo", None)),
        levels=levels)


def level_out(run: Row) -> LevelOut:
    def stats(metric: str) -> StatsOut:
        return StatsOut(**{stat: getattr(run, f"{metric}_{stat}") for stat in LATENCY_STATS})

    return LevelOut(
        scenario=run.scenario, concurrency=run.concurrency, num_completed=run.num_completed,
        num_errors=run.num_errors, error_rate=run.error_rate, duration_s=run.duration_s,
        ttft_ms=stats("ttft_ms"), tpot_ms=stats("tpot_ms"),
        e2e_latency_ms=stats("e2e_latency_ms"), input_tokens_per_s=run.input_tokens_per_s,
        output_tokens_per_s=run.output_tokens_per_s,
        total_tokens_per_s=run.total_tokens_per_s, requests_per_s=run.requests_per_s,
        mean_input_tokens=run.mean_input_tokens, mean_output_tokens=run.mean_output_tokens)


def best_config_out(study: StudyRow, row: Row) -> BestConfigOut:
    config = study.config
    fixed = config.get("fixed_flags") if isinstance(config.get("fixed_flags"), dict) else {}
    params = redact_value(dict(row.params))
    flags = {**redact_value(fixed), **params}
    argv = redact_argv(list(row.argv))
    engine = config.get("engine") if isinstance(config.get("engine"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    snippet = {
        "study": study.name, "trial": row.number, "score": row.score,
        "model": model.get("name"), "engine": engine.get("name"),
        "gpus": len(row.gpu_ids), "flags": flags, "argv": argv,
    }
    return BestConfigOut(
        study=study.name, trial_number=row.number, attempt=row.attempt, score=row.score,
        objective_value=row.objective_value, params=params, flags=flags,
        num_gpus=len(row.gpu_ids), argv=argv, launch_command=shlex.join(argv),
        yaml=yaml.safe_dump(snippet, sort_keys=False, default_flow_style=False))


def _study_fields(summary: StudySummary) -> dict[str, Any]:
    row = summary.row
    config: dict[str, Any] = row.config if isinstance(row.config, dict) else {}
    engine = config.get("engine") if isinstance(config.get("engine"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    return {
        "name": row.name, "status": StudyStatus(row.status).value,
        "engine": engine.get("name"), "model": model.get("name"),
        "simulated": bool(engine.get("simulated", False)), "objective": objective_of(config),
        "created_at": row.created_at, "finished_at": row.finished_at,
        "trial_counts": counts_out(summary.trial_counts),
        "planned_trials": planned_trials(config), "best_trial_number": summary.best_number,
        "best_score": summary.best_score,
    }


def _trial_fields(row: Row, aggregate: LevelAggregate | None) -> dict[str, Any]:
    duration = ((row.finished_at - row.started_at).total_seconds()
                if row.finished_at is not None else None)
    return {
        "number": row.number, "attempt": row.attempt, "status": row.status,
        "reason": row.reason, "score": row.score, "objective_value": row.objective_value,
        "objective_values": getattr(row, "objective_values", None),
        "params": redact_value(dict(row.params)), "num_gpus": len(row.gpu_ids),
        "gpu_ids": list(row.gpu_ids), "node": row.node, "started_at": row.started_at,
        "finished_at": row.finished_at, "duration_s": duration,
        "metrics": dict(aggregate.means) if aggregate is not None else {},
        "launch_command": launch_command(row),
    }


def _aggregate_of(levels: list[LevelOut]) -> LevelAggregate:
    """The same headline means the trial list shows, from loaded levels."""
    def mean(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return sum(present) / len(present) if present else None

    means = {
        "output_tokens_per_s": mean([lv.output_tokens_per_s for lv in levels]),
        "requests_per_s": mean([lv.requests_per_s for lv in levels]),
        "ttft_ms_p95": mean([lv.ttft_ms.p95 for lv in levels]),
        "tpot_ms_p95": mean([lv.tpot_ms.p95 for lv in levels]),
        "e2e_latency_ms_p95": mean([lv.e2e_latency_ms.p95 for lv in levels]),
        "error_rate": mean([lv.error_rate for lv in levels]),
    }
    return LevelAggregate(len(levels), means)
