"""Where a study stands, read from its database alone: ``servetune status``.

Read-only by construction: it goes through ``common.store.readonly.StoreReader``, which never
migrates or writes, so it is safe against the database of a study that is running now (from
a laptop, against the cluster's PostgreSQL) and never creates an SQLite file.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from common.config import StudyConfig
from common.results import TrialStatus
from common.store.models import TrialRow
from common.store.readonly import StoreReader
from common.store.study import StudyStatus


@dataclass(frozen=True)
class RunningTrial:
    """A trial whose latest attempt has started and not ended."""

    number: int
    attempt: int
    node: str
    node_id: str
    gpu_ids: list[str]
    started_at: datetime
    params: dict[str, Any]


@dataclass(frozen=True)
class BestTrial:
    number: int
    score: float | None
    objective_value: float | None
    baseline: bool
    params: dict[str, Any]


@dataclass(frozen=True)
class StudyProgress:
    """A study's state at ``as_of``: its trials counted by their latest attempt.

    ``outcomes`` counts terminal trials by (status, reason); ``reason`` is ``None`` for
    succeeded trials. ``retried`` is how many attempts a later attempt of the same trial
    number superseded. ``elapsed_s`` runs from the study's creation to its end, or to
    ``as_of`` while it runs.
    """

    name: str
    status: StudyStatus
    created_at: datetime
    finished_at: datetime | None
    as_of: datetime
    max_trials: int | None
    objective_label: str
    outcomes: dict[tuple[TrialStatus, str | None], int]
    running: list[RunningTrial]
    retried: int
    best: BestTrial | None

    @property
    def elapsed_s(self) -> float:
        end = self.finished_at or self.as_of
        return max(0.0, (end - self.created_at).total_seconds())

    @property
    def num_trials(self) -> int:
        return sum(self.outcomes.values()) + len(self.running)

    def count(self, status: TrialStatus) -> int:
        if status is TrialStatus.RUNNING:
            return len(self.running)
        return sum(n for (s, _), n in self.outcomes.items() if s is status)


def study_progress(reader: StoreReader, name: str, as_of: datetime) -> StudyProgress | None:
    """Study ``name``'s progress as stored, or ``None`` when there is no such study.

    Raises ``StoreUnavailable`` when the database cannot be read."""
    summary = reader.study(name)
    if summary is None:
        return None
    row = summary.row
    latest: dict[int, TrialRow] = {}
    attempts = 0
    for chunk in reader.export_chunks(row, with_runs=False):
        for trial in chunk:  # ordered by (number, attempt): the last one is the latest
            latest[trial.number] = trial
            attempts += 1
    outcomes: Counter[tuple[TrialStatus, str | None]] = Counter()
    running = []
    for trial in latest.values():
        status = TrialStatus(trial.status)
        if status is TrialStatus.RUNNING:
            running.append(RunningTrial(trial.number, trial.attempt, trial.node,
                                        getattr(trial, "node_id", "") or "",
                                        list(trial.gpu_ids), trial.started_at,
                                        dict(trial.params)))
        else:
            outcomes[(status, trial.reason)] += 1
    best = None
    if summary.best is not None:
        best = BestTrial(summary.best.number, summary.best.score,
                         summary.best.objective_value, bool(summary.best.baseline),
                         dict(summary.best.params))
    max_trials, label = _search_facts(row.config)
    return StudyProgress(
        name=row.name, status=StudyStatus(row.status), created_at=row.created_at,
        finished_at=row.finished_at, as_of=as_of, max_trials=max_trials,
        objective_label=label, outcomes=dict(outcomes), running=running,
        retried=attempts - len(latest), best=best)


def render(progress: StudyProgress) -> list[str]:
    """The lines ``servetune status`` prints."""
    state = progress.status.value
    since = _utc(progress.created_at)
    if progress.finished_at is None:
        lines = [f"study {progress.name}: {state} for {duration(progress.elapsed_s)} "
                 f"(since {since})"]
    else:
        lines = [f"study {progress.name}: {state} after {duration(progress.elapsed_s)} "
                 f"({since} to {_utc(progress.finished_at)})"]
    budget = f" of up to {progress.max_trials}" if progress.max_trials else ""
    counts = ", ".join(f"{progress.count(s)} {s.value}" for s in
                       (TrialStatus.SUCCEEDED, TrialStatus.FAILED, TrialStatus.RUNNING))
    retried = (f"; {progress.retried} attempt(s) retried" if progress.retried else "")
    lines.append(f"trials: {progress.num_trials}{budget} ({counts}){retried}")
    failed = sorted(((reason or "unknown", n) for (s, reason), n in progress.outcomes.items()
                     if s is TrialStatus.FAILED), key=lambda item: (-item[1], item[0]))
    if failed:
        lines.append("  failed by reason: " + ", ".join(f"{r} {n}" for r, n in failed))
    if progress.running:
        lines.append("running:")
    for trial in sorted(progress.running, key=lambda t: t.number):
        node = trial.node or "?"
        if trial.node_id:
            node += f" (node {trial.node_id[:12]})"
        gpus = ",".join(trial.gpu_ids) or "none"
        started = (progress.as_of - trial.started_at).total_seconds()
        attempt = f" attempt {trial.attempt}" if trial.attempt else ""
        lines.append(f"  trial {trial.number}{attempt} on {node}, GPUs {gpus}, "
                     f"for {duration(started)}  [{_params(trial.params)}]")
    best = progress.best
    if best is None:
        lines.append("best so far: none (no trial has succeeded yet)")
    else:
        value = (f"{progress.objective_label} = {best.objective_value:.4g}"
                 if best.objective_value is not None else "no objective value")
        score = f", score {best.score:.4g}" if best.score is not None else ""
        baseline = " (the baseline)" if best.baseline else ""
        lines.append(f"best so far: trial {best.number}{baseline}, {value}{score}  "
                     f"[{_params(best.params)}]")
    return lines


def duration(seconds: float) -> str:
    """``42s``, ``5m 07s``, ``3h 02m``: whole units, largest first."""
    total = int(max(0.0, seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _search_facts(config: dict[str, Any]) -> tuple[int | None, str]:
    """The trial budget and the primary objective's label from the stored study config;
    ``(None, "objective")`` for a config this servetune can no longer read."""
    try:
        study = StudyConfig.model_validate(config)
    except (ValidationError, ValueError):
        return None, "objective"
    return study.search.max_trials, study.objective.terms[0].label


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
