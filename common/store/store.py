"""The results database: studies, trial attempts and their benchmark runs.

``Store`` is the only way servetune reads or writes results; SQLAlchemy stays behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, cast

from alembic.util import CommandError
from sqlalchemy import Engine, Table, and_, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from common.errors import StoreUnavailable
from common.results import FailureReason, TrialRecord, TrialStatus, utcnow
from common.store.conversions import (
    level_to_values,
    record_to_values,
    row_to_record,
    row_to_study_info,
)
from common.store.engine import create_store_engine
from common.store.migrate import upgrade_to_head
from common.store.models import BenchmarkRunRow, StudyRow, TrialRow
from common.store.study import StudyInfo, StudyStatus

logger = logging.getLogger(__name__)

DEFAULT_DATABASE_URL_ENV = "SERVETUNE_DATABASE_URL"
"""Environment variable that holds the database URL of a deployment."""

_TRIAL_KEY = ("study_id", "number", "attempt")
_RUN_KEY = ("trial_row_id", "scenario", "concurrency")


class Store:
    """Studies, trial attempts and benchmark runs in an SQLite file or a PostgreSQL database.

    Contract:

    - Open with ``Store.open(url)``, which migrates the schema to the newest revision;
      ``close()`` (or leaving a ``with`` block) releases the connections.
    - Writes are idempotent upserts keyed by study name, by (study, trial number, attempt) and
      by (trial attempt, scenario, concurrency): repeating a write, as a resumed or retried
      study does, never duplicates a row.
    - Every method is one short transaction and makes no network call besides the database's,
      so callers never hold a transaction open across a deployment or a benchmark.
    - Thread-safe: threads may share one ``Store``. Processes each open their own (an engine
      must not cross ``fork``); several processes may write to the same SQLite file (WAL) or
      PostgreSQL database at once.
    - Timestamps are timezone-aware UTC; naive ones are refused with ``ValueError``.
    - Raises ``common.errors.StoreUnavailable`` when the database cannot be reached, is locked
      past the busy timeout, or has a schema newer than this servetune knows;
      ``LookupError`` for a study that does not exist where one must; ``ValueError`` for
      arguments outside the domain (an unknown status, duplicate levels).
    """

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose schema is already at head; use ``Store.open`` instead."""
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._url = engine.url.render_as_string(hide_password=True)

    @classmethod
    def open(cls, url: str) -> Store:
        """Open the database at ``url`` and upgrade its schema to head.

        ``url`` is ``sqlite:///PATH`` (parent directories are created) or
        ``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE`` (``postgresql://`` works
        too; without ``connect_timeout`` in the URL, connecting gives up after 10 s).
        Raises ``ConfigError`` for a malformed or unsupported URL and ``StoreUnavailable``
        when the database cannot be reached or migrated.
        """
        engine = create_store_engine(url)
        shown = engine.url.render_as_string(hide_password=True)
        try:
            with _unavailable_as_store_error(shown):
                upgrade_to_head(engine)
        except CommandError as e:
            engine.dispose()
            raise StoreUnavailable(
                f"cannot migrate database {shown}: {e}; if another servetune version "
                "upgraded it, run that version or a newer one", url=shown) from e
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._url

    def close(self) -> None:
        """Close every pooled connection; the store must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def create_study(self, name: str, config: Mapping[str, Any]) -> None:
        """Record that study ``name`` runs with ``config`` (the study file as submitted).

        Idempotent: for an existing study only the status goes back to ``running`` (and
        ``finished_at`` is cleared); the stored config and creation time are kept, and a
        different ``config`` is logged as a warning, not stored.
        """
        values = {"name": name, "config": dict(config), "status": StudyStatus.RUNNING.value,
                  "created_at": utcnow(), "finished_at": None, "best_trial_number": None}
        with self._transaction() as session:
            table = _table(StudyRow)
            stmt = self._insert(table).values(values)
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={"status": StudyStatus.RUNNING.value, "finished_at": None,
                      "cancel_requested_at": None})
            session.execute(stmt)
            stored = session.scalar(select(StudyRow.config).where(StudyRow.name == name))
        if stored != values["config"]:
            logger.warning("study %s exists with a different config; keeping the stored one "
                           "(use a new study name to run another config)", name)

    def request_cancel(self, name: str) -> StudyInfo | None:
        """Ask the driver running study ``name`` to stop it (it polls ``cancel_requested``);
        the study as stored, or None when there is none."""
        with self._transaction() as session:
            row = session.scalar(select(StudyRow).where(StudyRow.name == name))
            if row is None:
                return None
            if row.status == StudyStatus.RUNNING.value and row.cancel_requested_at is None:
                row.cancel_requested_at = utcnow()
            counts = _trial_counts(session, [row.id])
            return row_to_study_info(row, counts.get(row.id, {}))

    def cancel_requested(self, name: str) -> bool:
        """Whether ``servetune cancel`` asked to stop the running study ``name``."""
        with self._transaction() as session:
            when = session.scalar(select(StudyRow.cancel_requested_at)
                                  .where(StudyRow.name == name))
        return when is not None

    def delete_study(self, name: str) -> bool:
        """Delete study ``name`` with every trial attempt and benchmark run of it; False when
        there is no such study."""
        with self._transaction() as session:
            row = session.scalar(select(StudyRow).where(StudyRow.name == name))
            if row is None:
                return False
            session.delete(row)
        return True

    def finish_study(self, name: str, status: str | StudyStatus,
                     best_trial_number: int | None,
                     pareto_front: Sequence[int] | None = None) -> None:
        """Mark study ``name`` ended with a terminal ``status`` now, and record its best trial
        and, for a multi-objective study, the trial numbers on its Pareto front.

        Raises ``ValueError`` for ``running`` or an unknown status, ``LookupError`` when the
        study does not exist. Calling it again overwrites status, time and best trial.
        """
        terminal = StudyStatus(status)
        if not terminal.terminal:
            raise ValueError(f"finish_study status must be terminal, got {terminal.value!r}; "
                             f"use one of {[s.value for s in StudyStatus if s.terminal]}")
        with self._transaction() as session:
            row = session.scalar(select(StudyRow).where(StudyRow.name == name))
            if row is None:
                raise LookupError(f"no study named {name!r}; call create_study first")
            row.status = terminal.value
            row.finished_at = utcnow()
            row.best_trial_number = best_trial_number
            row.pareto_front = list(pareto_front) if pareto_front is not None else None

    def save_trial(self, record: TrialRecord) -> None:
        """Insert or update the attempt ``(record.study, record.number, record.attempt)``.

        Call it when the attempt starts (status ``running``) and again when it ends. The
        stored attempt then equals ``record``: its benchmark runs are upserted by (scenario,
        concurrency) and runs missing from ``record.levels`` are deleted. Saving the same
        record twice leaves one row per attempt and per level. Raises ``LookupError`` when
        the study does not exist and ``ValueError`` when two levels share a scenario and
        concurrency.
        """
        keys = [(level.scenario, level.concurrency) for level in record.levels]
        if len(set(keys)) != len(keys):
            raise ValueError(f"trial {record.number} of study {record.study!r} has duplicate "
                             f"(scenario, concurrency) levels: {sorted(keys)}")
        trial_values = record_to_values(record, study_id=0)  # validates before any I/O
        with self._transaction() as session:
            study_id = session.scalar(select(StudyRow.id).where(StudyRow.name == record.study))
            if study_id is None:
                raise LookupError(f"no study named {record.study!r}; call create_study first")
            trial_values["study_id"] = study_id
            trial_row_id = self._upsert_trial(session, trial_values)
            self._replace_runs(session, trial_row_id, record)

    def trials(self, study: str) -> list[TrialRecord]:
        """Every attempt of ``study`` ordered by (number, attempt), each with its levels
        ordered by (scenario, concurrency); empty for an unknown study."""
        stmt = (select(TrialRow).join(StudyRow).where(StudyRow.name == study)
                .order_by(TrialRow.number, TrialRow.attempt)
                .options(selectinload(TrialRow.benchmark_runs)))
        with self._transaction() as session:
            return [row_to_record(row, study) for row in session.scalars(stmt)]

    def next_attempt(self, study: str, number: int) -> int:
        """The attempt number a new run of trial ``number`` gets: one past the last stored
        (0 for a trial never run). A retried trial keeps every earlier attempt's row."""
        stmt = (select(func.max(TrialRow.attempt)).join(StudyRow)
                .where(StudyRow.name == study, TrialRow.number == number))
        with self._transaction() as session:
            last = session.scalar(stmt)
        return 0 if last is None else int(last) + 1

    def end_running(self, study: str, reason: FailureReason,
                    message: str) -> list[TrialRecord]:
        """End every attempt of ``study`` still ``running`` as failed with ``reason`` (no
        live trial will: its driver stopped or died); returns the attempts ended."""
        ended = []
        for record in self.trials(study):
            if record.status is TrialStatus.RUNNING:
                record.status = TrialStatus.FAILED
                record.reason = reason
                record.message = message
                record.finished_at = utcnow()
                self.save_trial(record)
                ended.append(record)
        return ended

    def attempts(self, study: str, number: int) -> list[TrialRecord]:
        """Every attempt of trial ``number`` of ``study``, oldest first, with its levels."""
        stmt = (select(TrialRow).join(StudyRow)
                .where(StudyRow.name == study, TrialRow.number == number)
                .order_by(TrialRow.attempt).options(selectinload(TrialRow.benchmark_runs)))
        with self._transaction() as session:
            return [row_to_record(row, study) for row in session.scalars(stmt)]

    def study(self, name: str) -> StudyInfo | None:
        """Study ``name`` with its trial counts, or ``None`` when there is none."""
        with self._transaction() as session:
            row = session.scalar(select(StudyRow).where(StudyRow.name == name))
            if row is None:
                return None
            counts = _trial_counts(session, [row.id])
            return row_to_study_info(row, counts.get(row.id, {}))

    def studies(self) -> list[StudyInfo]:
        """Every study with its trial counts, oldest first."""
        with self._transaction() as session:
            rows = session.scalars(select(StudyRow).order_by(StudyRow.created_at, StudyRow.id))
            counts = _trial_counts(session, None)
            return [row_to_study_info(row, counts.get(row.id, {})) for row in rows]

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        # One session per call: sessions are not thread-safe, the engine's pool is.
        with _unavailable_as_store_error(self._url), self._sessions.begin() as session:
            yield session

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        # Both dialects spell upserts INSERT ... ON CONFLICT, which stays atomic when two
        # processes write the same key at once (a select-then-insert would race).
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def _upsert_trial(self, session: Session, values: dict[str, Any]) -> int:
        stmt = self._insert(_table(TrialRow)).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(_TRIAL_KEY),
            set_={name: stmt.excluded[name] for name in values if name not in _TRIAL_KEY})
        trial_row_id: int = session.execute(stmt.returning(TrialRow.id)).scalar_one()
        return trial_row_id

    def _replace_runs(self, session: Session, trial_row_id: int, record: TrialRecord) -> None:
        keep = {(level.scenario, level.concurrency) for level in record.levels}
        existing = session.execute(
            select(BenchmarkRunRow.id, BenchmarkRunRow.scenario, BenchmarkRunRow.concurrency)
            .where(BenchmarkRunRow.trial_row_id == trial_row_id)).all()
        stale = [run_id for run_id, scenario, concurrency in existing
                 if (scenario, concurrency) not in keep]
        if stale:
            session.execute(delete(BenchmarkRunRow).where(BenchmarkRunRow.id.in_(stale)))
        if not record.levels:
            return
        rows = [level_to_values(level, trial_row_id) for level in record.levels]
        stmt = self._insert(_table(BenchmarkRunRow))
        stmt = stmt.on_conflict_do_update(
            index_elements=list(_RUN_KEY),
            set_={name: stmt.excluded[name] for name in rows[0] if name not in _RUN_KEY})
        session.execute(stmt, rows)


def _table(row_class: type[StudyRow | TrialRow | BenchmarkRunRow]) -> Table:
    # Declarative classes are typed as mapping any FromClause; these three map Tables.
    return cast(Table, row_class.__table__)


def _trial_counts(session: Session,
                  study_ids: Sequence[int] | None) -> dict[int, dict[TrialStatus, int]]:
    """Trials per status of each study, counting each number once by its latest attempt."""
    latest = (select(TrialRow.study_id, TrialRow.number,
                     func.max(TrialRow.attempt).label("attempt"))
              .group_by(TrialRow.study_id, TrialRow.number))
    if study_ids is not None:
        latest = latest.where(TrialRow.study_id.in_(study_ids))
    last = latest.subquery()
    stmt = (select(TrialRow.study_id, TrialRow.status, func.count())
            .join(last, and_(TrialRow.study_id == last.c.study_id,
                             TrialRow.number == last.c.number,
                             TrialRow.attempt == last.c.attempt))
            .group_by(TrialRow.study_id, TrialRow.status))
    counts: dict[int, dict[TrialStatus, int]] = {}
    for study_id, status, count in session.execute(stmt):
        counts.setdefault(study_id, {})[TrialStatus(status)] = count
    return counts


@contextmanager
def _unavailable_as_store_error(url: str) -> Iterator[None]:
    """Turn "cannot reach or lock the database" errors into ``StoreUnavailable``."""
    try:
        yield
    except (OperationalError, InterfaceError, PoolTimeoutError) as e:
        cause = str(getattr(e, "orig", None) or e).strip().splitlines()
        detail = cause[0] if cause else type(e).__name__
        raise StoreUnavailable(
            f"database {url} is unavailable ({detail}); check that it is running, reachable "
            f"and that ${DEFAULT_DATABASE_URL_ENV} points at it, then retry", url=url) from e
