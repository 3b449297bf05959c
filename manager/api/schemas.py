"""Response schemas of the read API: ``*Out`` for one thing, ``*Page`` for ``{data, count}``.

Floats are finite or ``null`` (a latency of a level without samples, a missing score): JSON
has no NaN. Times are UTC ISO-8601. Latencies are milliseconds, throughputs per second.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return value


Num = Annotated[float | None, AfterValidator(_finite)]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class TrialCountsOut(_Out):
    """Trials by the status of their latest attempt."""

    running: int
    succeeded: int
    failed: int
    total: int


class ObjectiveOut(_Out):
    """What the score means: ``metric`` (maximized unless a latency), as the study file set
    it. A score is the objective value for maximized metrics and its negative otherwise."""

    metric: str
    maximize: bool
    per_gpu: bool = False
    statistic: str = "mean"
    labels: list[str] = Field(default_factory=list,
                              description="every objective, the primary first (several: "
                              "a multi-objective study)")


class StudyOut(_Out):
    name: str
    status: str = Field(description="running, succeeded, failed or cancelled")
    engine: str | None
    model: str | None
    simulated: bool
    objective: ObjectiveOut | None
    created_at: datetime
    finished_at: datetime | None
    trial_counts: TrialCountsOut
    planned_trials: int | None = Field(description="the search's max_trials")
    best_trial_number: int | None
    best_score: Num


class StudiesPage(_Out):
    data: list[StudyOut]
    count: int = Field(description="studies matching the filters, over all pages")


class StatsOut(_Out):
    mean: Num
    p50: Num
    p90: Num
    p95: Num
    p99: Num
    min: Num
    max: Num


class LevelOut(_Out):
    """One benchmark run: one traffic scenario at one concurrency level."""

    scenario: str
    concurrency: int
    num_completed: int
    num_errors: int
    error_rate: Num
    duration_s: Num
    ttft_ms: StatsOut
    tpot_ms: StatsOut
    e2e_latency_ms: StatsOut
    input_tokens_per_s: Num
    output_tokens_per_s: Num
    total_tokens_per_s: Num
    requests_per_s: Num
    mean_input_tokens: Num
    mean_output_tokens: Num


class TrialSummaryOut(_Out):
    number: int
    attempt: int
    status: str
    reason: str | None = Field(description="failure reason class of a failed trial")
    score: Num
    objective_value: Num
    objective_values: list[Num] | None = Field(
        default=None, description="one value per objective (multi-objective studies)")
    params: dict[str, Any] = Field(description="the searched engine flags of this trial")
    num_gpus: int
    gpu_ids: list[str]
    node: str
    started_at: datetime
    finished_at: datetime | None
    duration_s: Num
    metrics: dict[str, Num] = Field(
        description="means over the trial's benchmark runs of headline metrics")
    launch_command: str = Field(description="the trial's engine argv, shell-quoted")


class TrialsPage(_Out):
    data: list[TrialSummaryOut]
    count: int = Field(description="trials matching the filters, over all pages")


class TrialOut(TrialSummaryOut):
    trial_id: str
    attempts: list[int] = Field(description="every stored attempt number of this trial")
    node_id: str = Field(default="", description="Ray's id of the node the attempt ran on")
    intent: dict[str, Any] = Field(
        default_factory=dict, description="the study's parallel/quantization section values "
        "this trial ran (e.g. parallel.tp), beside its native flags")
    argv: list[str]
    message: str
    log_excerpt: str = Field(description="tail of the engine's log (failed trials)")
    phase_timings_s: dict[str, Num]
    slo: dict[str, Any] | None = None
    levels: list[LevelOut]


class ProgressOut(_Out):
    """How far a study is; ``tag`` changes whenever its stored state does (the ETag)."""

    study: str
    status: str
    trial_counts: TrialCountsOut
    planned_trials: int | None
    best_trial_number: int | None
    best_score: Num
    elapsed_s: Num
    tag: str


class StudyDetailOut(StudyOut):
    config: dict[str, Any] = Field(description="the study file as submitted (secrets masked)")
    progress: ProgressOut
    best_trial: TrialOut | None
    pareto_front: list[TrialSummaryOut] | None = Field(
        description="trials on the Pareto front; null for single-objective studies")


class BestConfigOut(_Out):
    """The best trial's configuration, ready to deploy."""

    study: str
    trial_number: int
    attempt: int
    score: Num
    objective_value: Num
    params: dict[str, Any]
    flags: dict[str, Any] = Field(description="fixed flags and the best trial's params")
    num_gpus: int
    argv: list[str]
    launch_command: str
    yaml: str = Field(description="the same as a YAML snippet")


class ScorePointOut(_Out):
    number: int
    status: str
    reason: str | None
    score: Num
    best_so_far: Num
    objective_value: Num
    objective_values: list[Num] | None


class LevelPointOut(_Out):
    scenario: str
    concurrency: int
    output_tokens_per_s: Num
    ttft_ms_p95: Num
    e2e_latency_ms_p95: Num
    tpot_ms_p95: Num


class TrialLevelsOut(_Out):
    number: int
    score: Num
    levels: list[LevelPointOut]


class ParamEffectOut(_Out):
    """How much one param moves the score: ``importance`` (Optuna's, sums to 1 over params;
    null when it cannot be computed) and the mean score of succeeded trials per value."""

    param: str
    importance: Num
    values: list[str]
    mean_scores: list[Num]
    counts: list[int]


class PlotsOut(_Out):
    """Everything the report page draws, for one study."""

    study: str
    objective: ObjectiveOut | None
    scores: list[ScorePointOut]
    pareto_front: list[int] | None
    top_trials: list[TrialLevelsOut]
    param_effects: list[ParamEffectOut]
    importance_method: str
    tag: str


class HealthOut(_Out):
    status: str
    database: str


class ErrorOut(_Out):
    detail: str
