"""Trial results that outlive a database outage: retried writes, a local spool, ordered flush.

A trial's actor writes its attempt twice (when it starts and when it ends). ``SpoolingStore``
makes those writes survive the database being unreachable for a while: a write that fails
with ``StoreUnavailable`` is appended to a spool file (JSON lines, one complete snapshot of
the attempt per line) and every later write first flushes the spool in order, so the
database ends with the newest snapshot (writes are idempotent upserts keyed by study, trial
number and attempt). ``drain`` retries with exponential backoff until the spool is empty or
the outage budget is spent; reads (``attempts``, ``next_attempt``) wait
the same way.

A spool left behind (the database stayed away longer than the budget) stays on disk next to
the trial's logs; ``flush_spools`` writes every spool under a directory, which the driver
runs at the end of a study and ``servetune resume`` runs before it resumes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from common.benchmark import LevelMetrics, Stats
from common.errors import StoreUnavailable
from common.results import FailureReason, TrialRecord, TrialStatus
from common.store.store import Store

logger = logging.getLogger(__name__)
SPOOL_NAME = "store-spool.jsonl"
T = TypeVar("T")


class SpoolingStore:
    """The writes of one trial attempt, spooled to ``spool_path`` while the database is away.

    ``outage_s`` bounds how long a read or ``drain`` waits for the database; writes never
    wait (they spool). ``opener`` opens the store (``Store.open``)."""

    def __init__(self, url: str, spool_path: Path, *, outage_s: float = 300.0,
                 opener: Callable[[str], Store] = Store.open,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.spool_path = spool_path
        self.outage_s = outage_s
        self._opener, self._sleep, self._clock = opener, sleep, clock
        self._store: Store | None = None

    # -- writes ---------------------------------------------------------------------------

    def save_trial(self, record: TrialRecord) -> None:
        """Write ``record``; spool it if the database is unreachable (never raises for that)."""
        if self.pending() or not self._try(lambda store: store.save_trial(record)):
            self._append(record)
            self.flush()

    def pending(self) -> int:
        """Snapshots waiting in the spool."""
        return len(self._entries())

    def flush(self) -> bool:
        """Write the spooled snapshots in order, once; True when the spool is empty."""
        entries = self._entries()
        if not entries:
            return True
        written = 0
        for entry in entries:
            if not self._try(lambda store, e=entry: store.save_trial(record_from_json(e))):
                break
            written += 1
        self._rewrite(entries[written:])
        if written:
            logger.warning("database %s is back: flushed %d spooled result(s)%s", self.url,
                           written, "" if written == len(entries) else
                           f", {len(entries) - written} still spooled")
        return written == len(entries)

    def drain(self, timeout_s: float | None = None) -> bool:
        """Flush until the spool is empty (True) or ``timeout_s`` (default ``outage_s``)
        has passed (False: the spool stays on disk)."""
        return retry_until(self.flush, self.outage_s if timeout_s is None else timeout_s,
                           self._sleep, self._clock)

    # -- reads ----------------------------------------------------------------------------

    def attempts(self, study: str, number: int) -> list[TrialRecord]:
        """``Store.attempts``, waiting up to ``outage_s`` for the database; a spooled snapshot
        stands for its attempt (it is newer than the stored row, or the only one)."""
        stored = with_retries(lambda: self._connected().attempts(study, number),
                              self.outage_s, self._sleep, self._clock)
        by_attempt = {record.attempt: record for record in stored}
        for entry in self._entries():
            record = record_from_json(entry)
            if record.study == study and record.number == number:
                by_attempt[record.attempt] = record
        return [by_attempt[attempt] for attempt in sorted(by_attempt)]

    def next_attempt(self, study: str, number: int) -> int:
        """``Store.next_attempt`` (one ``max`` query, no rows loaded), waiting up to
        ``outage_s`` for the database; the spool counts too (an attempt spooled but not yet
        written)."""
        spooled = [record_from_json(e) for e in self._entries()]
        mine = [r.attempt for r in spooled if r.study == study and r.number == number]
        stored = with_retries(lambda: self._connected().next_attempt(study, number),
                              self.outage_s, self._sleep, self._clock)
        return max([stored, *(a + 1 for a in mine)])

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- internals ------------------------------------------------------------------------

    def _connected(self) -> Store:
        if self._store is None:
            self._store = self._opener(self.url)
        return self._store

    def _try(self, write: Callable[[Store], object]) -> bool:
        try:
            write(self._connected())
            return True
        except StoreUnavailable as e:
            logger.warning("database unavailable, spooling to %s: %s", self.spool_path, e)
            return False

    def _append(self, record: TrialRecord) -> None:
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        with self.spool_path.open("a") as f:
            f.write(json.dumps(record_to_json(record)) + "\n")

    def _entries(self) -> list[dict[str, Any]]:
        try:
            lines = self.spool_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def _rewrite(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            self.spool_path.unlink(missing_ok=True)
            return
        tmp = self.spool_path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
        tmp.replace(self.spool_path)  # atomic: a crash leaves the old or the new spool


def retry_until(step: Callable[[], bool], timeout_s: float,
                sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> bool:
    """Call ``step`` until it returns True (then True), backing off from 0.25 s to 5 s
    between calls, for up to ``timeout_s`` (then False)."""
    deadline = clock() + timeout_s
    delay = 0.25
    while not step():
        if clock() >= deadline:
            return False
        sleep(min(delay, max(deadline - clock(), 0.0)))
        delay = min(delay * 2, 5.0)
    return True


def with_retries(call: Callable[[], T], outage_s: float,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> T:
    """``call()``, retried (``retry_until``) while it raises ``StoreUnavailable``, for up to
    ``outage_s`` seconds; then the last error propagates."""
    outcome: list[T] = []
    errors: list[StoreUnavailable] = []

    def step() -> bool:
        try:
            outcome.append(call())
            return True
        except StoreUnavailable as e:
            logger.warning("database unavailable; retrying: %s", e)
            errors[:] = [e]
            return False

    if not retry_until(step, outage_s, sleep, clock):
        raise errors[-1]
    return outcome[0]


def spools_under(root: Path) -> Iterator[Path]:
    """Every spool file below ``root``."""
    if root.exists():
        yield from sorted(root.rglob(SPOOL_NAME))


def flush_spools(root: Path, url: str, timeout_s: float = 0.0) -> tuple[int, int]:
    """Write every spool below ``root`` to the database at ``url``; returns (snapshots
    written, snapshots still spooled)."""
    written = left = 0
    for path in spools_under(root):
        spool = SpoolingStore(url, path, outage_s=timeout_s)
        before = spool.pending()
        try:
            spool.drain()
        finally:
            spool.close()
        remaining = spool.pending()
        written += before - remaining
        left += remaining
    return written, left


def record_to_json(record: TrialRecord) -> dict[str, Any]:
    """A trial record as JSON-ready data (``record_from_json`` reverses it)."""
    data = dataclasses.asdict(record)
    data["status"] = record.status.value
    data["reason"] = record.reason.value if record.reason else None
    data["started_at"] = record.started_at.isoformat()
    data["finished_at"] = record.finished_at.isoformat() if record.finished_at else None
    return data


def record_from_json(data: dict[str, Any]) -> TrialRecord:
    values = dict(data)
    values["status"] = TrialStatus(values["status"])
    values["reason"] = FailureReason(values["reason"]) if values.get("reason") else None
    values["started_at"] = datetime.fromisoformat(values["started_at"])
    values["finished_at"] = (datetime.fromisoformat(values["finished_at"])
                             if values.get("finished_at") else None)
    values["levels"] = [_level(level) for level in values.get("levels", [])]
    return TrialRecord(**values)


def _level(data: dict[str, Any]) -> LevelMetrics:
    values = dict(data)
    for name in ("ttft_ms", "tpot_ms", "e2e_latency_ms"):
        values[name] = Stats(**values[name])
    return LevelMetrics(**values)
