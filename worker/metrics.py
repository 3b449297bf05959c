"""A trial's live metrics, exported with Ray's metrics API (``ray.util.metrics``) so they show
in the Ray dashboard's metrics view and in any Prometheus that scrapes the Ray nodes.

This is the one module that touches ``ray.util.metrics``. Ray prefixes every application
metric with ``ray_`` in its Prometheus output and appends ``_total`` to counters, and it adds
its own labels (``NodeAddress``, ``WorkerId``, ``SessionName``, ``Component``, ``Version``).
What a Prometheus user queries (Ray 2.60, checked by tests/worker/test_metrics.py):

- ``ray_servetune_trial_phase{study, trial, attempt, engine, gpus, phase}``: 1 for the phase
  the trial is in, 0 for the others (one series per phase of ``PHASES``, the way
  kube-state-metrics exports a pod's phase).
- ``ray_servetune_trial_gpus{study, trial, attempt, engine, gpus}``: the trial's GPU count.
- ``ray_servetune_level_output_tokens_per_s``, ``ray_servetune_level_ttft_p90_ms`` and
  ``ray_servetune_level_tpot_p90_ms`` ``{..., scenario, concurrency}``: the last finished
  benchmark level at each (scenario, concurrency).
- ``ray_servetune_trial_score{study, trial, attempt, engine, gpus}``: the trial's score once
  it has ended (``TrialRecord.score``: higher is better, failures graded below successes).
- ``ray_servetune_trials_finished_total{study, status, reason}``: trial attempts ended, by
  terminal status and failure reason (``reason=""`` for a success; a retried trial counts
  each attempt, its ``infra_error`` one included).

Gauges live as long as the process that set them: Ray re-exports a process's last values
every ``metrics_report_interval_ms`` (10 s by default) and drops them a few intervals after
the process exits, so a finished trial's gauges leave the scrape when its actor goes away
(Prometheus keeps their history). Counters are summed by the node's metrics agent and stay.

Without a connected Ray (a direct ``run_trial`` call, a unit test) every method is a no-op.
A ``TrialMetrics`` belongs to one trial attempt and is used from the thread that runs it.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.benchmark import LevelMetrics
from common.results import TrialRecord

if TYPE_CHECKING:
    from ray.util.metrics import Counter, Gauge

logger = logging.getLogger(__name__)

PHASES = ("pull", "startup", "benchmark", "teardown", "done")
PREFIX = "servetune_"
# The labels every per-trial gauge carries (values are strings, as Prometheus labels are).
TRIAL_TAGS = ("study", "trial", "attempt", "engine", "gpus")
LEVEL_TAGS = (*TRIAL_TAGS, "scenario", "concurrency")
FINISHED_TAGS = ("study", "status", "reason")


class TrialMetrics:
    """The metrics of one trial attempt; see the module docstring for what is exported.

    ``phase``, ``level`` and ``finished`` never raise for a failure of Ray's metrics (a trial
    is not failed by its observability); a phase name outside ``PHASES`` is a caller bug and
    raises ``ValueError`` whether or not Ray is connected. ``finished`` counts the trial once
    however often it is called.
    """

    def __init__(self, study: str, trial: int, attempt: int, gpus: int, engine: str, *,
                 export: bool = True) -> None:
        self._tags = {"study": study, "trial": str(trial), "attempt": str(attempt),
                      "engine": engine, "gpus": str(gpus)}
        self._instruments = _instruments() if export and ray_connected() else None
        self._finished = False
        self._record(lambda i: i.gpus.set(gpus, self._tags))

    @classmethod
    def disabled(cls) -> TrialMetrics:
        """A ``TrialMetrics`` that exports nothing, even inside Ray."""
        return cls("", 0, 0, 0, "", export=False)

    @property
    def enabled(self) -> bool:
        """Whether this trial's metrics reach Ray (a connected Ray worker or driver)."""
        return self._instruments is not None

    def phase(self, name: str) -> None:
        """The trial entered phase ``name``: its gauge is 1, the other phases' 0."""
        if name not in PHASES:
            raise ValueError(f"unknown trial phase {name!r}: expected one of {', '.join(PHASES)}")

        def record(i: _Instruments) -> None:
            for phase in PHASES:
                i.phase.set(1 if phase == name else 0, {**self._tags, "phase": phase})

        self._record(record)

    def level(self, level: LevelMetrics) -> None:
        """A benchmark level finished: its output throughput (tokens/s) and TTFT/TPOT p90
        (ms). A value that is not a number (no request completed) is left unset."""
        tags = {**self._tags, "scenario": level.scenario, "concurrency": str(level.concurrency)}

        def record(i: _Instruments) -> None:
            for gauge, value in ((i.output_tokens_per_s, level.output_tokens_per_s),
                                 (i.ttft_p90_ms, level.ttft_ms.p90),
                                 (i.tpot_p90_ms, level.tpot_ms.p90)):
                if math.isfinite(value):
                    gauge.set(value, tags)

        self._record(record)

    def finished(self, record: TrialRecord) -> None:
        """The trial ended with ``record`` (its terminal status, reason and score): phase
        ``done``, its score, and one more trial in the finished counter (once per attempt)."""
        if self._finished:
            return
        self._finished = True
        self.phase("done")
        finished_tags = {"study": record.study, "status": record.status.value,
                         "reason": record.reason.value if record.reason else ""}

        def record_end(i: _Instruments) -> None:
            if record.score is not None and math.isfinite(record.score):
                i.score.set(record.score, self._tags)
            i.trials_finished.inc(1, finished_tags)

        self._record(record_end)

    def _record(self, write: Callable[[_Instruments], None]) -> None:
        if self._instruments is None:
            return
        try:
            write(self._instruments)
        except Exception:  # noqa: BLE001 - metrics must never fail the trial they watch
            logger.warning("study %s trial %s: could not record a metric",
                           self._tags.get("study"), self._tags.get("trial"), exc_info=True)


def ray_connected() -> bool:
    """Whether this process is a connected Ray worker or driver. Ray is not imported to find
    out: a process that has not imported it cannot be connected."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


@dataclass(frozen=True)
class _Instruments:
    phase: Gauge
    gpus: Gauge
    output_tokens_per_s: Gauge
    ttft_p90_ms: Gauge
    tpot_p90_ms: Gauge
    score: Gauge
    trials_finished: Counter


@functools.cache
def _instruments() -> _Instruments:
    """Ray's metric objects, created once per process: every trial a process runs (Tune
    reuses trial actors) records into the same ones, told apart by their tags."""
    from ray.util.metrics import Counter, Gauge

    def gauge(name: str, description: str, tag_keys: tuple[str, ...] = TRIAL_TAGS) -> Gauge:
        return Gauge(PREFIX + name, description=description, tag_keys=tag_keys)

    return _Instruments(
        phase=gauge("trial_phase", "1 for the phase the trial is in "
                    f"({', '.join(PHASES)}), 0 for the others.", (*TRIAL_TAGS, "phase")),
        gpus=gauge("trial_gpus", "GPUs the trial holds."),
        output_tokens_per_s=gauge("level_output_tokens_per_s",
                                  "Output throughput of the benchmark level, tokens/s.",
                                  LEVEL_TAGS),
        ttft_p90_ms=gauge("level_ttft_p90_ms",
                          "Time to first token of the benchmark level, p90, ms.", LEVEL_TAGS),
        tpot_p90_ms=gauge("level_tpot_p90_ms",
                          "Time per output token of the benchmark level, p90, ms.", LEVEL_TAGS),
        score=gauge("trial_score", "The trial's score once it has ended (higher is better)."),
        trials_finished=Counter(PREFIX + "trials_finished",
                                description="Trial attempts ended, by terminal status and reason.",
                                tag_keys=FINISHED_TAGS),
    )
