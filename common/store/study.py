"""Domain view of a stored study: its status and a summary of its trials."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.results import TrialStatus


class StudyStatus(str, enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self is not StudyStatus.RUNNING


@dataclass(frozen=True)
class StudyInfo:
    """A study as stored, with its trials counted by status.

    ``trial_counts`` has every ``TrialStatus`` as a key and counts each trial number once, by
    the status of its latest attempt (a trial whose attempt 0 was lost and attempt 1
    succeeded counts as one succeeded trial). Timestamps are UTC.
    """

    name: str
    config: dict[str, Any]
    status: StudyStatus
    created_at: datetime
    finished_at: datetime | None
    best_trial_number: int | None
    trial_counts: dict[TrialStatus, int]
    pareto_front: list[int] | None = None

    @property
    def num_trials(self) -> int:
        return sum(self.trial_counts.values())
