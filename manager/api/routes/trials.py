"""Trials of a study: a filtered, sorted page, and one trial with its runs."""

from __future__ import annotations

import enum
from typing import Annotated

from fastapi import APIRouter, Query

from common.results import FailureReason, TrialStatus
from common.store.queries import TRIAL_SORT_KEYS, TrialFilter, TrialSort
from manager.api import conversions
from manager.api.deps import MAX_TRIAL_NUMBER, NotFound, Reader, StudyRowOf, TrialNumber
from manager.api.schemas import TrialOut, TrialsPage

router = APIRouter(prefix="/studies/{name}/trials", tags=["trials"])
MAX_LIMIT = 500
MAX_OFFSET = 10_000_000

# The allow-list of sort keys as an enum, so OpenAPI lists them and others get a 422.
TrialSortKey = enum.Enum("TrialSortKey", {key: key for key in TRIAL_SORT_KEYS}, type=str)  # type: ignore[misc]


class Order(str, enum.Enum):
    asc = "asc"
    desc = "desc"


@router.get("", response_model=TrialsPage, summary="A study's trials")
def list_trials(
        reader: Reader, study: StudyRowOf,
        status: Annotated[TrialStatus | None, Query(description="only this status")] = None,
        reason: Annotated[FailureReason | None, Query(
            description="only failed trials with this reason")] = None,
        sort: Annotated[TrialSortKey, Query(  # type: ignore[valid-type]
            description="a trial column, or a benchmark metric (mean over the trial's "
            "runs)")] = TrialSortKey.number,  # type: ignore[attr-defined]
        order: Annotated[Order, Query()] = Order.asc,
        all_attempts: Annotated[bool, Query(
            description="every attempt of retried trials, not only the latest")] = False,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> TrialsPage:
    rows, count = reader.trials(study, TrialFilter(status, reason, all_attempts),
                                TrialSort(sort.value, order is Order.desc), limit, offset)
    aggregates = reader.level_aggregates([row.id for row in rows])
    return TrialsPage(data=[conversions.trial_summary_out(row, aggregates.get(row.id))
                            for row in rows], count=count)


@router.get("/{number}", response_model=TrialOut, summary="One trial")
def get_trial(reader: Reader, study: StudyRowOf, number: TrialNumber,
              attempt: Annotated[int | None, Query(
                  ge=0, le=MAX_TRIAL_NUMBER,
                  description="which attempt (default: the latest)")] = None) -> TrialOut:
    """Params, argv and launch command, GPU ids, node, phase timings, per-level metrics,
    failure reason and log excerpt."""
    row = reader.trial(study, number, attempt)
    attempts = reader.attempts(study, number) if row is not None else []
    if row is None:
        which = f" attempt {attempt}" if attempt is not None else ""
        raise NotFound(f"study {study.name!r} has no trial {number}{which}")
    return conversions.trial_out(row, attempts)
