"""What the driver does when the platform fails a trial: lost attempts, capacity lost for good.

Ray Tune retries a trial whose actor died (``FailureConfig.max_failures``), but the attempt
that died never recorded its end: ``TrialFaults`` ends it in the store, as ``node_lost`` when
its node is gone and ``infra_error`` otherwise, before the next attempt starts (which gets the
next attempt number, so every attempt keeps its own row).

Tune also leaves a trial PENDING forever when no node can hold it. The study checks every
layout against the largest node before it starts; ``ServetuneScheduler`` covers capacity lost
later (a node that never comes back): a pending trial that needs more GPUs than any live node
has for ``cluster.unschedulable_after_s`` is recorded as ``unschedulable``, with what it
needs, and stopped. Otherwise the scheduler defers to Tune's FIFO scheduler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import ray
from ray.tune import Callback, Stopper
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from common.errors import StoreUnavailable
from common.results import FailureReason, TrialRecord, TrialStatus, utcnow
from common.store import Store

logger = logging.getLogger(__name__)
# How often the capacity watchdog reads the cluster's nodes (each step would be too often).
CAPACITY_POLL_S = 2.0
# How long an attempt whose actor died is watched for its node being declared dead (Ray's
# health checks take about 15-30 s to give up on a node). An actor that died on its own and
# whose node is lost within this window is recorded node_lost too: both are retried alike.
NODE_CONFIRM_S = 60.0


def trial_number(trial: Trial | str) -> int:
    """The study's number of a Tune trial, or of a trial name (``<study>-<number>``, as
    ``driver.TrialNamer`` names them)."""
    name = trial if isinstance(trial, str) else str(trial.custom_trial_name or trial)
    return int(name.rsplit("-", 1)[-1])


def alive_nodes() -> dict[str, dict[str, Any]]:
    """Live nodes of the cluster by node id."""
    return {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}


def trial_gpus(trial: Trial) -> float:
    """GPUs a trial's placement group asks for (its bundles together: one node)."""
    return sum(float(b.get("GPU", 0)) for b in trial.placement_group_factory.bundles)


class LazyStore:
    """A store opened on first use and left out when pickled: Tune pickles its callbacks and
    scheduler with the experiment's state (``tuner.pkl``), and a database connection does not
    pickle. Neither is the database URL written there (it may carry a password): a pickled
    copy keeps the study's name and finds the URL the driver process registered for it."""

    _urls: dict[str, str] = {}  # study name -> database URL, in the driver process

    def __init__(self, study: str, url: str) -> None:
        self.study = study
        LazyStore.register(study, url)
        self._store: Store | None = None

    @classmethod
    def register(cls, study: str, url: str) -> None:
        """The URL a restored copy of the study's LazyStore opens (``servetune resume``)."""
        cls._urls[study] = url

    @property
    def url(self) -> str:
        return LazyStore._urls[self.study]

    def get(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.url)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __getstate__(self) -> dict[str, Any]:
        return {"study": self.study, "_store": None}


class TrialFaults(Callback):
    """Ends the running attempt of a trial whose actor died, with the reason it died.

    Tune learns of a dead actor (its socket closed) before Ray's health checks mark the node
    dead, so an attempt whose node still looks alive is first stored as ``infra_error`` and
    watched for ``NODE_CONFIRM_S``: if its node is declared dead meanwhile, the attempt becomes
    ``node_lost``."""

    def __init__(self, study: str, store: LazyStore, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.study = study
        self._store = store
        self.clock = clock
        # (number, attempt) -> (node id, watch until)
        self._suspects: dict[tuple[int, int], _Suspect] = {}
        self._unrecorded: list[tuple[Trial, bool]] = []  # lost while the database was away
        self._last_poll = float("-inf")

    @property
    def store(self) -> Store:
        return self._store.get()

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial,
                         **info: Any) -> None:
        self._record_lost(trial, retried=True)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self._record_lost(trial, retried=False)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info: Any) -> None:
        """A trial the scheduler stopped before its final report: if its actor went before
        the trial could record that, record it here as pruned, scored as last reported."""
        last = trial.last_result or {}
        if last.get("final", True):
            return
        try:
            running = [r for r in self.store.attempts(self.study, trial_number(trial))
                       if r.status is TrialStatus.RUNNING]
            for record in running:
                record.status = TrialStatus.FAILED
                record.reason = FailureReason.PRUNED
                record.score = last.get("score")
                record.message = (f"stopped by the search's scheduler after level "
                                  f"{last.get('concurrency', '?')}")
                record.finished_at = utcnow()
                self.store.save_trial(record)
        except StoreUnavailable as e:
            logger.warning("database unavailable; pruned trial %s not recorded: %s", trial, e)

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        now = self.clock()
        if (self._suspects or self._unrecorded) and now - self._last_poll >= CAPACITY_POLL_S:
            self._last_poll = now
            self._record_unrecorded()
            try:
                self._confirm_lost_nodes(now)
            except StoreUnavailable as e:
                logger.warning("database unavailable; lost attempts recorded later: %s", e)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._record_unrecorded()
        if self._suspects:
            try:
                self._confirm_lost_nodes(self.clock())
            except StoreUnavailable as e:
                logger.warning("database unavailable; node losses not confirmed: %s", e)
        self._store.close()

    def _record_unrecorded(self) -> None:
        """Lost attempts seen while the database was away (each goes back on the list if it
        still is)."""
        pending, self._unrecorded = self._unrecorded, []
        for trial, retried in pending:
            self._record_lost(trial, retried=retried)

    def _record_lost(self, trial: Trial, *, retried: bool) -> None:
        try:
            self._end_running(trial, retried=retried)
        except StoreUnavailable as e:  # a database outage must not end the study: later
            logger.warning("database unavailable; trial %s's lost attempt recorded later: %s",
                           trial, e)
            self._unrecorded.append((trial, retried))

    def _end_running(self, trial: Trial, *, retried: bool) -> None:
        number = trial_number(trial)
        running = [r for r in self.store.attempts(self.study, number)
                   if r.status is TrialStatus.RUNNING]
        if not running:
            return  # the attempt recorded its own end (e.g. an infra_error it raised)
        live = alive_nodes()
        cause = _error_line(trial)
        for record in running:
            record.finished_at = utcnow()
            node_gone = bool(record.node_id) and record.node_id not in live
            _mark_lost(record, node_gone, cause, retried)
            if record.node_id and not node_gone:
                self._suspects[(number, record.attempt)] = _Suspect(
                    record.node_id, self.clock() + NODE_CONFIRM_S, cause, retried)
            self.store.save_trial(record)
            _print_attempt(record)

    def _confirm_lost_nodes(self, now: float) -> None:
        live = alive_nodes()
        for (number, attempt), suspect in list(self._suspects.items()):
            if suspect.node_id in live:
                if now >= suspect.until:
                    del self._suspects[(number, attempt)]  # the node lives: the actor died
                continue
            record = next((r for r in self.store.attempts(self.study, number)
                           if r.attempt == attempt), None)
            del self._suspects[(number, attempt)]
            if record is None or record.reason is not FailureReason.INFRA_ERROR:
                continue
            _mark_lost(record, True, suspect.cause, suspect.retried)
            self.store.save_trial(record)
            _print_attempt(record)


class _Suspect(NamedTuple):
    """An attempt whose actor died while its node still looked alive."""

    node_id: str
    until: float  # watched until (the clock's time)
    cause: str
    retried: bool


def _mark_lost(record: TrialRecord, node_gone: bool, cause: str, retried: bool) -> None:
    """End ``record`` as ``node_lost`` (its node is gone) or ``infra_error`` (its actor died)."""
    record.status = TrialStatus.FAILED
    if node_gone:
        record.reason = FailureReason.NODE_LOST
        record.message = (f"node {record.node} ({record.node_id[:12]}) was lost while the "
                          f"trial ran ({cause})")
    else:
        record.reason = FailureReason.INFRA_ERROR
        record.message = f"the trial's actor died: {cause}"
    if retried:
        record.message += "; retried"


def _print_attempt(record: TrialRecord) -> None:
    reason = record.reason.value if record.reason else "?"
    print(f"trial {record.number} attempt {record.attempt}: {reason}: {record.message}",
          flush=True)


def _error_line(trial: Trial) -> str:
    path = trial.error_file
    try:
        lines = [ln for ln in Path(path).read_text(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith("Failure #")] if path else []
    except OSError:
        lines = []
    return lines[-1].strip()[:300] if lines else "no error recorded"


class ServetuneScheduler(TrialScheduler):
    """A Tune scheduler (FIFO, or ASHA for ``search.scheduler: asha``) with a capacity
    watchdog for pending trials: every decision is the inner scheduler's.

    ``record_unschedulable(trial, needs, largest)`` stores the trial's failed attempt; the
    watchdog then stops the trial in Tune (the searcher sees it pruned)."""

    def __init__(self, wait_s: float,
                 record_unschedulable: Callable[[Trial, float, float], None],
                 inner: TrialScheduler | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.inner = inner or FIFOScheduler()
        self.wait_s = wait_s
        self.record_unschedulable = record_unschedulable
        self.clock = clock
        self._unfit_since: dict[str, float] = {}
        self._last_poll = float("-inf")

    def set_search_properties(self, metric: str | None, mode: str | None,
                              **spec: Any) -> bool:
        return bool(self.inner.set_search_properties(metric, mode, **spec))

    @property
    def metric(self) -> str | None:
        return self.inner.metric

    @property
    def supports_buffered_results(self) -> bool:
        return bool(self.inner.supports_buffered_results)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self.inner.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self.inner.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial,
                        result: dict[str, Any]) -> str:
        return str(self.inner.on_trial_result(tune_controller, trial, result))

    def on_trial_complete(self, tune_controller: Any, trial: Trial,
                          result: dict[str, Any]) -> None:
        self.inner.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self.inner.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return str(self.inner.debug_string())

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        now = self.clock()
        if now - self._last_poll >= CAPACITY_POLL_S:
            self._last_poll = now
            self._watch(tune_controller, now)
        return self.inner.choose_trial_to_run(tune_controller)

    def _watch(self, tune_controller: Any, now: float) -> None:
        pending = [t for t in tune_controller.get_trials() if t.status == Trial.PENDING]
        if not pending:
            self._unfit_since.clear()
            return
        largest = max((float(n.get("Resources", {}).get("GPU", 0))
                       for n in alive_nodes().values()), default=0.0)
        unfit = {t.trial_id: t for t in pending if trial_gpus(t) > largest}
        for trial_id in list(self._unfit_since):
            if trial_id not in unfit:
                del self._unfit_since[trial_id]  # a node that fits came (back)
        for trial_id, trial in unfit.items():
            since = self._unfit_since.setdefault(trial_id, now)
            if now - since < self.wait_s:
                continue
            del self._unfit_since[trial_id]
            self.record_unschedulable(trial, trial_gpus(trial), largest)
            tune_controller.stop_trial(trial)


def unschedulable_record(study: str, number: int, attempt: int, params: dict[str, Any],
                         needs: float, largest: float, waited_s: float) -> TrialRecord:
    """The failed attempt of a trial no live node can hold."""
    now = utcnow()
    return TrialRecord(
        study=study, number=number, attempt=attempt, params=params,
        status=TrialStatus.FAILED, reason=FailureReason.UNSCHEDULABLE,
        message=(f"needs {needs:g} GPUs on one node, but the largest live node has "
                 f"{largest:g}; waited {waited_s:g} s (cluster.unschedulable_after_s) for "
                 "capacity that did not come back"),
        started_at=now, finished_at=now)


class CancelRequested(Stopper):
    """Ends the Tune run when ``servetune cancel`` has marked the study in the database
    (polled every ``CAPACITY_POLL_S``; a database outage never stops the study)."""

    def __init__(self, study: str, store: LazyStore,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.study = study
        self._store = store
        self.clock = clock
        self._last_poll = float("-inf")
        self.requested = False

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        now = self.clock()
        if not self.requested and now - self._last_poll >= CAPACITY_POLL_S:
            self._last_poll = now
            try:
                self.requested = self._store.get().cancel_requested(self.study)
            except StoreUnavailable:
                return False
            if self.requested:
                print(f"study {self.study}: cancel requested (servetune cancel): stopping "
                      "its trials", flush=True)
        return self.requested
