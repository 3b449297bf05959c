"""Read-only queries of the results database (the read API's; ``StoreReader`` runs them).

Each function takes an open session and returns rows or small frozen types. They lean on the
schema's unique keys: ``trials (study_id, number, attempt)`` serves "a study's trials", "the
latest attempt of a number" (an anti-join on a later attempt) and keyset pagination;
``benchmark_runs (trial_row_id, scenario, concurrency)`` serves "a trial's runs".

"Latest attempts" means one row per trial number: the attempt with the highest number, which
is what a retried trial finally did (the same rule as ``Store.studies``' trial counts).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Subquery, and_, exists, func, or_, select
from sqlalchemy.orm import Session, aliased, defer, selectinload

from common.results import FailureReason, TrialStatus
from common.store.models import LATENCY_METRICS, LATENCY_STATS, BenchmarkRunRow, StudyRow, TrialRow
from common.store.study import StudyStatus

TRIAL_SORT_COLUMNS = ("number", "score", "objective_value", "started_at", "finished_at")
"""Trial columns a trial list can be sorted by."""
LEVEL_METRICS = ("output_tokens_per_s", "total_tokens_per_s", "input_tokens_per_s",
                 "requests_per_s", "error_rate", "duration_s",
                 *(f"{metric}_{stat}" for metric in LATENCY_METRICS for stat in LATENCY_STATS))
"""Benchmark-run metrics; as a sort key, a trial's value is the mean over its runs."""
TRIAL_SORT_KEYS = (*TRIAL_SORT_COLUMNS, *LEVEL_METRICS)
HEADLINE_METRICS = ("output_tokens_per_s", "requests_per_s", "ttft_ms_p95", "tpot_ms_p95",
                    "e2e_latency_ms_p95", "error_rate")
"""Metrics summarised per trial (mean over its runs) in trial lists."""
LIST_DEFERRED = ("trial_id", "message", "log_excerpt", "phase_timings", "intent", "slo")
"""Trial columns a trial list and the best config do not load (a log excerpt alone can be
kilobytes a row)."""


@dataclass(frozen=True)
class StudyFilter:
    status: StudyStatus | None = None
    name_contains: str | None = None


@dataclass(frozen=True)
class TrialFilter:
    status: TrialStatus | None = None
    reason: FailureReason | None = None
    all_attempts: bool = False


@dataclass(frozen=True)
class TrialSort:
    key: str = "number"
    descending: bool = False

    def __post_init__(self) -> None:
        if self.key not in TRIAL_SORT_KEYS:
            raise ValueError(f"unknown trial sort key {self.key!r}; use one of "
                             f"{', '.join(TRIAL_SORT_KEYS)}")


@dataclass(frozen=True)
class StudySummary:
    """A study row with its trials counted by status (latest attempts) and its best trial.

    ``best_number`` is the recorded best trial, else (a running study) the succeeded trial
    with the highest score; it is ``None`` without succeeded trials. ``best``, that trial's
    row with its ``benchmark_runs``, is loaded only by ``study_summary``.
    """

    row: StudyRow
    trial_counts: dict[TrialStatus, int]
    best_score: float | None
    best_number: int | None
    best: TrialRow | None = None


@dataclass(frozen=True)
class LevelAggregate:
    """Means over one trial's benchmark runs (``None``: no run has a value)."""

    num_levels: int
    means: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class ScorePoint:
    """One trial (latest attempt) as the report's plots need it."""

    number: int
    attempt: int
    status: TrialStatus
    reason: FailureReason | None
    score: float | None
    objective_value: float | None
    objective_values: list[float] | None
    params: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Fingerprint:
    """Changes whenever a study's stored state does (a trial starts, ends, or is retried)."""

    status: str
    finished_at: datetime | None
    num_rows: int
    num_finished: int
    max_row_id: int

    @property
    def tag(self) -> str:
        ended = self.finished_at.isoformat() if self.finished_at else "-"
        return f"{self.status}.{ended}.{self.num_rows}.{self.num_finished}.{self.max_row_id}"


def latest_attempt_only() -> ColumnElement[bool]:
    """True for a trial row that no later attempt of the same number supersedes.

    An anti-join on the unique key: cheap for one study's page (a merge of two index-only
    scans); counts over several studies use ``_latest_attempts`` instead."""
    return _LATEST_ONLY


def _latest_only() -> ColumnElement[bool]:
    later = aliased(TrialRow)
    return ~exists().where(later.study_id == TrialRow.study_id,
                           later.number == TrialRow.number, later.attempt > TrialRow.attempt)


# Built once: SQL expressions are immutable, and building the alias costs more than
# compiling the (cached) statement.
_LATEST_ONLY = _latest_only()


class SummaryCache:
    """Trial counts and best trial of terminal studies, which change only when a study runs
    again; a study's entry is keyed by its status and finish time, so a resumed study (back
    to ``running``, finish time cleared) misses and is recounted. Thread-safe, bounded."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._items: dict[int, tuple[tuple[str, datetime | None], StudySummary]] = {}
        self._tags: dict[int, Fingerprint] = {}

    def get(self, row: StudyRow) -> StudySummary | None:
        with self._lock:
            hit = self._items.get(row.id)
        if hit is None or hit[0] != (row.status, row.finished_at):
            return None
        cached = hit[1]
        return StudySummary(row, cached.trial_counts, cached.best_score, cached.best_number)

    def put(self, summary: StudySummary) -> None:
        row = summary.row
        if not StudyStatus(row.status).terminal:
            return
        with self._lock:
            if len(self._items) >= self._size:
                self._items.clear()  # rare: more terminal studies than entries
            self._items[row.id] = ((row.status, row.finished_at), summary)

    def fingerprint(self, study_id: int, status: str, finished_at: datetime | None
                    ) -> Fingerprint | None:
        with self._lock:
            hit = self._tags.get(study_id)
        if hit is None or (hit.status, hit.finished_at) != (status, finished_at):
            return None
        return hit

    def put_fingerprint(self, study_id: int, fingerprint: Fingerprint) -> None:
        if not StudyStatus(fingerprint.status).terminal:
            return
        with self._lock:
            if len(self._tags) >= self._size:
                self._tags.clear()
            self._tags[study_id] = fingerprint


def studies_page(session: Session, where: StudyFilter, limit: int, offset: int,
                 cache: SummaryCache | None = None) -> tuple[list[StudySummary], int]:
    """Studies newest first, ``limit`` from ``offset``, and how many match ``where``."""
    conditions: list[ColumnElement[bool]] = []
    if where.status is not None:
        conditions.append(StudyRow.status == where.status.value)
    if where.name_contains:
        conditions.append(StudyRow.name.contains(where.name_contains, autoescape=True))
    count = session.scalar(select(func.count()).select_from(StudyRow).where(*conditions)) or 0
    rows = list(session.scalars(select(StudyRow).where(*conditions)
                                .order_by(StudyRow.created_at.desc(), StudyRow.id.desc())
                                .limit(limit).offset(offset)))
    return _cached_summaries(session, rows, cache), count


def study_counts(session: Session, name: str, cache: SummaryCache | None = None
                 ) -> StudySummary | None:
    """Study ``name`` with its counts and best score and number, not its best trial (what
    progress and the report's headers show)."""
    row = session.scalar(select(StudyRow).where(StudyRow.name == name))
    return _cached_summaries(session, [row], cache)[0] if row is not None else None


def study_summary(session: Session, name: str, cache: SummaryCache | None = None
                  ) -> StudySummary | None:
    """Study ``name`` with its counts and its best trial (``benchmark_runs`` loaded)."""
    summary = study_counts(session, name, cache)
    if summary is None or summary.best_number is None:
        return summary
    best = trial_attempt(session, summary.row.id, summary.best_number, None)
    return replace(summary, best=best)


def best_trial(session: Session, study: StudyRow) -> TrialRow | None:
    """The latest attempt of the trial ``StudySummary.best_number`` names, without its runs
    or ``LIST_DEFERRED``: all a launch command needs, without counting the study's trials."""
    number = study.best_trial_number
    if number is None:
        number = _best_by_score(session, [study.id]).get(study.id)
    if number is None:
        return None
    return session.scalar(_attempt(study.id, number, None).options(*_list_deferred()))


def trials_page(session: Session, study_id: int, where: TrialFilter, sort: TrialSort,
                limit: int, offset: int) -> tuple[list[TrialRow], int]:
    """One page of a study's trials and how many match ``where``; ties break by number.

    The rows leave ``LIST_DEFERRED`` unloaded (reading one raises): a list shows none."""
    conditions: list[ColumnElement[bool]] = [TrialRow.study_id == study_id]
    if where.status is not None:
        conditions.append(TrialRow.status == where.status.value)
    if where.reason is not None:
        conditions.append(TrialRow.reason == where.reason.value)
    if not where.all_attempts:
        conditions.append(latest_attempt_only())
    count = session.scalar(select(func.count()).select_from(TrialRow).where(*conditions)) or 0
    stmt: Select[tuple[TrialRow]] = select(TrialRow).where(*conditions).options(
        *_list_deferred())
    if sort.key in TRIAL_SORT_COLUMNS:
        key: Any = getattr(TrialRow, sort.key)
    else:
        # Correlated: each matching trial's own runs (one range of the runs' unique key each).
        # A join with the study's runs grouped by trial made PostgreSQL scan the whole trials
        # table in parallel: 9,200 buffers against 4,400 for 1,000 trials of 10 runs.
        key = (select(func.avg(getattr(BenchmarkRunRow, sort.key)))
               .where(BenchmarkRunRow.trial_row_id == TrialRow.id)
               .correlate(TrialRow).scalar_subquery())
    ordered = key.desc() if sort.descending else key.asc()
    stmt = (stmt.order_by(ordered.nulls_last(), TrialRow.number, TrialRow.attempt)
            .limit(limit).offset(offset))
    return list(session.scalars(stmt)), count


def trial_attempt(session: Session, study_id: int, number: int, attempt: int | None
                  ) -> TrialRow | None:
    """Attempt ``attempt`` of trial ``number`` (default: its latest), runs loaded."""
    return session.scalar(_attempt(study_id, number, attempt)
                          .options(selectinload(TrialRow.benchmark_runs)))


def _attempt(study_id: int, number: int, attempt: int | None) -> Select[tuple[TrialRow]]:
    """Attempt ``attempt`` of trial ``number``, or its latest one (``None``)."""
    stmt = select(TrialRow).where(TrialRow.study_id == study_id, TrialRow.number == number)
    if attempt is not None:
        stmt = stmt.where(TrialRow.attempt == attempt)
    return stmt.order_by(TrialRow.attempt.desc()).limit(1)


def _list_deferred() -> list[Any]:
    """Loader options leaving ``LIST_DEFERRED`` unloaded; reading one raises, not queries."""
    return [defer(getattr(TrialRow, name), raiseload=True) for name in LIST_DEFERRED]


def attempt_numbers(session: Session, study_id: int, number: int) -> list[int]:
    return list(session.scalars(
        select(TrialRow.attempt).where(TrialRow.study_id == study_id, TrialRow.number == number)
        .order_by(TrialRow.attempt)))


def latest_with_runs(session: Session, study_id: int, numbers: Sequence[int]) -> list[TrialRow]:
    if not numbers:
        return []
    stmt = (select(TrialRow).where(TrialRow.study_id == study_id,
                                   TrialRow.number.in_(list(numbers)), latest_attempt_only())
            .options(selectinload(TrialRow.benchmark_runs)).order_by(TrialRow.number))
    return list(session.scalars(stmt))


def level_aggregates(session: Session, trial_row_ids: Sequence[int]
                     ) -> dict[int, LevelAggregate]:
    """``HEADLINE_METRICS`` averaged over each trial's runs; trials without runs are absent."""
    if not trial_row_ids:
        return {}
    columns = [func.avg(getattr(BenchmarkRunRow, name)) for name in HEADLINE_METRICS]
    stmt = (select(BenchmarkRunRow.trial_row_id, func.count(), *columns)
            .where(BenchmarkRunRow.trial_row_id.in_(list(trial_row_ids)))
            .group_by(BenchmarkRunRow.trial_row_id))
    found: dict[int, LevelAggregate] = {}
    for trial_row_id, num_levels, *values in session.execute(stmt):
        means = {name: (float(v) if v is not None else None)
                 for name, v in zip(HEADLINE_METRICS, values, strict=True)}
        found[trial_row_id] = LevelAggregate(num_levels, means)
    return found


def score_series(session: Session, study_id: int, limit: int) -> list[ScorePoint]:
    """The first ``limit`` trial numbers' latest attempts, by number (no runs, no argv)."""
    multi = getattr(TrialRow, "objective_values", None)  # present from schema revision 0002
    columns: list[Any] = [TrialRow.number, TrialRow.attempt, TrialRow.status, TrialRow.reason,
                          TrialRow.score, TrialRow.objective_value, TrialRow.params,
                          TrialRow.started_at, TrialRow.finished_at]
    if multi is not None:
        columns.append(multi)
    stmt = (select(*columns).where(TrialRow.study_id == study_id, latest_attempt_only())
            .order_by(TrialRow.number).limit(limit))
    points = []
    for values in session.execute(stmt):
        number, attempt, status, reason, score, value, params, started, finished = values[:9]
        points.append(ScorePoint(
            number=number, attempt=attempt, status=TrialStatus(status),
            reason=FailureReason(reason) if reason is not None else None, score=score,
            objective_value=value, objective_values=values[9] if multi is not None else None,
            params=dict(params), started_at=started, finished_at=finished))
    return points


def attempts_after(session: Session, study_id: int, after: tuple[int, int], limit: int,
                   with_runs: bool) -> list[TrialRow]:
    """Up to ``limit`` attempts of a study past (number, attempt) ``after``, in key order."""
    number, attempt = after
    stmt = (select(TrialRow)
            .where(TrialRow.study_id == study_id,
                   or_(TrialRow.number > number,
                       and_(TrialRow.number == number, TrialRow.attempt > attempt)))
            .order_by(TrialRow.number, TrialRow.attempt).limit(limit))
    if with_runs:
        stmt = stmt.options(selectinload(TrialRow.benchmark_runs))
    return list(session.scalars(stmt))


def fingerprint(session: Session, name: str, cache: SummaryCache | None = None
                ) -> Fingerprint | None:
    study = session.execute(select(StudyRow.id, StudyRow.status, StudyRow.finished_at)
                            .where(StudyRow.name == name)).first()
    if study is None:
        return None
    if cache is not None and (hit := cache.fingerprint(study.id, study.status,
                                                       study.finished_at)) is not None:
        return hit
    rows, finished, max_id = session.execute(
        select(func.count(), func.count(TrialRow.finished_at), func.max(TrialRow.id))
        .where(TrialRow.study_id == study.id)).one()
    found = Fingerprint(study.status, study.finished_at, rows, finished, max_id or 0)
    if cache is not None:
        cache.put_fingerprint(study.id, found)
    return found


def _cached_summaries(session: Session, rows: list[StudyRow], cache: SummaryCache | None
                      ) -> list[StudySummary]:
    if cache is None:
        return _summaries(session, rows)
    found = {row.id: hit for row in rows if (hit := cache.get(row)) is not None}
    missing = [row for row in rows if row.id not in found]
    for summary in _summaries(session, missing):
        cache.put(summary)
        found[summary.row.id] = summary
    return [found[row.id] for row in rows]


def _summaries(session: Session, rows: list[StudyRow]) -> list[StudySummary]:
    if not rows:
        return []
    ids = [row.id for row in rows]
    counts: dict[int, dict[TrialStatus, int]] = {i: {s: 0 for s in TrialStatus} for i in ids}
    best_scores: dict[int, float | None] = {}
    latest = _latest_attempts(ids)
    stmt = (select(latest.c.study_id, latest.c.status, func.count(), func.max(latest.c.score))
            .group_by(latest.c.study_id, latest.c.status))
    for study_id, status, count, max_score in session.execute(stmt):
        counts[study_id][TrialStatus(status)] = count
        if status == TrialStatus.SUCCEEDED.value:
            best_scores[study_id] = max_score
    recorded = {row.id: row.best_trial_number for row in rows
                if row.best_trial_number is not None}
    best_numbers: dict[int, int] = dict(recorded)
    unrecorded = [i for i in ids if i not in recorded and best_scores.get(i) is not None]
    if unrecorded:
        best_numbers.update(_best_by_score(session, unrecorded))
    if recorded:
        # The recorded best's own score (a multi-objective best need not have the top score).
        pairs = [and_(TrialRow.study_id == i, TrialRow.number == n) for i, n in recorded.items()]
        for study_id, score in session.execute(
                select(TrialRow.study_id, TrialRow.score)
                .where(or_(*pairs), latest_attempt_only())):
            best_scores[study_id] = score
    return [StudySummary(row, counts[row.id], best_scores.get(row.id), best_numbers.get(row.id))
            for row in rows]


def _best_by_score(session: Session, study_ids: list[int]) -> dict[int, int]:
    """The succeeded trial with the highest score of each study (ties: the lowest number)."""
    latest = _latest_attempts(study_ids)
    ranked = (select(latest.c.study_id, latest.c.number,
                     func.row_number().over(partition_by=latest.c.study_id,
                                            order_by=(latest.c.score.desc(), latest.c.number))
                     .label("rank"))
              .where(latest.c.status == TrialStatus.SUCCEEDED.value,
                     latest.c.score.is_not(None))
              .subquery())
    stmt = select(ranked.c.study_id, ranked.c.number).where(ranked.c.rank == 1)
    return {study_id: number for study_id, number in session.execute(stmt)}


def _latest_attempts(study_ids: list[int]) -> Subquery:
    """The latest attempt of every trial number of ``study_ids``: study_id, number, status,
    score.

    One pass over the unique key (study_id, number, attempt) ranking each number's attempts,
    where the ``latest_attempt_only`` anti-join probes the key once per row: 162 against
    6,162 buffers for three 1,000-trial studies on PostgreSQL."""
    ranked = (select(TrialRow.study_id, TrialRow.number, TrialRow.status, TrialRow.score,
                     func.row_number().over(partition_by=(TrialRow.study_id, TrialRow.number),
                                            order_by=TrialRow.attempt.desc()).label("newer"))
              .where(TrialRow.study_id.in_(study_ids)).subquery())
    return (select(ranked.c.study_id, ranked.c.number, ranked.c.status, ranked.c.score)
            .where(ranked.c.newer == 1).subquery())
