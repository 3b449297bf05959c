"""Read-only access to the results database, for the read API (``manager.api``).

``StoreReader`` never migrates and never writes: on PostgreSQL every transaction runs with
``default_transaction_read_only`` (and a statement timeout, so one slow query cannot hold a
connection forever); an SQLite file is opened ``mode=ro`` with ``PRAGMA query_only``. Give it a
database role that may only ``SELECT`` where you can; read-only transactions are the second
line of defence.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import URL, Engine, create_engine, event, select, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from common.errors import ConfigError, StoreUnavailable
from common.store import queries
from common.store.engine import POSTGRES_CONNECT_TIMEOUT_S, parse_url
from common.store.migrate import alembic_config
from common.store.models import StudyRow, TrialRow
from common.store.queries import (
    Fingerprint,
    LevelAggregate,
    StudyFilter,
    StudySummary,
    SummaryCache,
    TrialFilter,
    TrialSort,
)

DEFAULT_STATEMENT_TIMEOUT_S = 10.0
"""PostgreSQL ``statement_timeout`` of every API query."""


class StoreReader:
    """Reads studies, trials and benchmark runs; never writes, never migrates.

    Thread-safe like ``Store`` (one session per call, pooled connections; a ``transaction``
    view is not: its calls must come one after another). The counts, best trial and
    fingerprint of terminal studies are cached (``queries.SummaryCache``): they change only
    when a study runs again, which changes its status. Methods raise
    ``StoreUnavailable`` when the database cannot be reached. Returned rows are detached:
    their columns and the relationships the method names as loaded can be read after the
    call, nothing else.
    """

    def __init__(self, engine: Engine, url: str | None = None) -> None:
        """Wrap a read-only engine; use ``StoreReader.open`` instead. ``url`` is the URL to
        name in messages (default: the engine's), password hidden."""
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._url = url or engine.url.render_as_string(hide_password=True)
        self._bound: Session | None = None  # the session of a ``transaction`` view
        self._summaries = SummaryCache()

    @classmethod
    def open(cls, url: str, *, pool_size: int = 10,
             statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S) -> StoreReader:
        """Open ``url`` read-only and check that servetune's schema is there, at a revision
        this servetune knows. Raises ``ConfigError`` for a malformed or in-memory URL and
        ``StoreUnavailable`` for a database that is missing, unreachable or unmigrated."""
        parsed = parse_url(url)
        if parsed.get_backend_name() == "sqlite":
            engine = _sqlite_engine(parsed)
        else:
            engine = _postgres_engine(parsed, pool_size, statement_timeout_s)
        reader = cls(engine, parsed.render_as_string(hide_password=True))
        try:
            reader.check_schema()
        except BaseException:
            engine.dispose()
            raise
        return reader

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._url

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def check_schema(self) -> None:
        """Raise ``StoreUnavailable`` unless the schema is at a revision servetune knows."""
        known = {script.revision for script in
                 ScriptDirectory.from_config(alembic_config()).walk_revisions()}
        try:
            with self._session() as session:
                revision = session.scalar(text("SELECT version_num FROM alembic_version"))
        except StoreUnavailable as e:
            raise StoreUnavailable(
                f"database {self._url} has no servetune schema or cannot be read ({e}); "
                "run a study against it first (that creates and migrates the schema)",
                url=self._url) from e
        if revision not in known:
            raise StoreUnavailable(
                f"database {self._url} is at schema revision {revision!r}, which this "
                "servetune does not know; run the servetune version that wrote it, or newer",
                url=self._url)

    @contextmanager
    def transaction(self) -> Iterator[StoreReader]:
        """A view of this reader whose calls inside the block share one transaction (one
        connection checkout, one consistent snapshot on PostgreSQL) instead of one each,
        from whichever thread makes them: a web request's dependencies and its handler run
        on different threads of a pool. Calls must not overlap (a session is not
        thread-safe). A view's ``transaction`` joins its own. After the block the view's
        calls run in their own transactions again, like this reader's, so a streamed
        response may read on. Returned rows stay readable after the block."""
        with self._session() as session:
            view = copy.copy(self)  # the same engine and caches
            view._bound = session
            try:
                yield view
            finally:
                view._bound = None

    def study_row(self, name: str) -> StudyRow | None:
        """The study's row alone (one indexed lookup), or ``None``."""
        with self._session() as session:
            return session.scalar(select(StudyRow).where(StudyRow.name == name))

    def ping(self) -> None:
        """One round trip to the database; raises ``StoreUnavailable``."""
        with self._session() as session:
            session.execute(text("SELECT 1"))

    def studies(self, where: StudyFilter, limit: int, offset: int
                ) -> tuple[list[StudySummary], int]:
        with self._session() as session:
            return queries.studies_page(session, where, limit, offset, self._summaries)

    def study(self, name: str) -> StudySummary | None:
        """The study with its counts and its best trial (``benchmark_runs`` loaded)."""
        with self._session() as session:
            return queries.study_summary(session, name, self._summaries)

    def study_counts(self, name: str) -> StudySummary | None:
        """The study with its counts and best score and number; ``best`` is not loaded."""
        with self._session() as session:
            return queries.study_counts(session, name, self._summaries)

    def best_trial(self, study: StudyRow) -> TrialRow | None:
        """The study's best trial (``StudySummary.best_number``'s latest attempt) without
        its runs or ``queries.LIST_DEFERRED``."""
        with self._session() as session:
            return queries.best_trial(session, study)

    def trials(self, study: StudyRow, where: TrialFilter, sort: TrialSort, limit: int,
               offset: int) -> tuple[list[TrialRow], int]:
        """A page of ``study``'s trials (latest attempts unless ``where.all_attempts``)."""
        with self._session() as session:
            return queries.trials_page(session, study.id, where, sort, limit, offset)

    def trial(self, study: StudyRow, number: int, attempt: int | None = None
              ) -> TrialRow | None:
        """One attempt (default: the latest) with ``benchmark_runs`` loaded."""
        with self._session() as session:
            return queries.trial_attempt(session, study.id, number, attempt)

    def attempts(self, study: StudyRow, number: int) -> list[int]:
        with self._session() as session:
            return queries.attempt_numbers(session, study.id, number)

    def trials_with_runs(self, study: StudyRow, numbers: Sequence[int]) -> list[TrialRow]:
        """Latest attempts of trials ``numbers`` with ``benchmark_runs`` loaded."""
        with self._session() as session:
            return queries.latest_with_runs(session, study.id, numbers)

    def level_aggregates(self, trial_row_ids: Sequence[int]) -> dict[int, LevelAggregate]:
        with self._session() as session:
            return queries.level_aggregates(session, trial_row_ids)

    def score_series(self, study: StudyRow, limit: int) -> list[queries.ScorePoint]:
        with self._session() as session:
            return queries.score_series(session, study.id, limit)

    def export_chunks(self, study: StudyRow, with_runs: bool, chunk: int = 500
                      ) -> Iterator[list[TrialRow]]:
        """Every attempt of ``study`` by (number, attempt), ``chunk`` rows per list; one short
        transaction per chunk (keyset pagination), so a long download holds no snapshot."""
        after: tuple[int, int] = (-1, -1)
        while True:
            with self._session() as session:
                rows = queries.attempts_after(session, study.id, after, chunk, with_runs)
            if not rows:
                return
            yield rows
            after = (rows[-1].number, rows[-1].attempt)

    def fingerprint(self, name: str) -> Fingerprint | None:
        with self._session() as session:
            return queries.fingerprint(session, name, self._summaries)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """The view's session, else a new one in its own transaction. Database errors come
        out as ``StoreUnavailable`` here, inside a view too: the call that failed raises it,
        not the end of the transaction, so a caller that catches it sees it."""
        try:
            if self._bound is not None:
                yield self._bound
            else:
                with self._sessions.begin() as session:
                    yield session
        except (OperationalError, InterfaceError, PoolTimeoutError) as e:
            raise _unavailable(self._url, e) from e
        except DBAPIError as e:
            # e.g. a missing table (schema not created) or a statement timeout.
            raise _unavailable(self._url, e) from e


def _unavailable(url: str, e: Exception) -> StoreUnavailable:
    cause = str(getattr(e, "orig", None) or e).strip().splitlines()
    detail = cause[0] if cause else type(e).__name__
    return StoreUnavailable(f"database {url} is unavailable ({detail}); check that it is "
                            "running and reachable, then retry", url=url)


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        raise ConfigError("the read API needs a database file or server, not an in-memory "
                          "SQLite database", path="database URL", value=database)
    # A URI filename with mode=ro: SQLite itself refuses every write on this connection.
    engine = create_engine(f"sqlite:///file:{database}?mode=ro&uri=true",
                           connect_args={"timeout": 30.0, "check_same_thread": False})
    event.listen(engine, "connect", _sqlite_query_only)
    return engine


def _sqlite_query_only(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA query_only=ON")
    finally:
        cursor.close()


def _postgres_engine(url: URL, pool_size: int, statement_timeout_s: float) -> Engine:
    options = (f"-c default_transaction_read_only=on "
               f"-c statement_timeout={int(statement_timeout_s * 1000)}")
    connect_args: dict[str, Any] = {"options": options}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size,
                         max_overflow=pool_size, connect_args=connect_args)
