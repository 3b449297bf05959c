"""Connecting to the results database: URL checks and per-backend engine settings.

Two backends: an SQLite file (one machine; several trial processes write to it at once) and
PostgreSQL through psycopg 3 (clusters).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from common.errors import ConfigError

# How long an SQLite writer waits for another process's write lock before failing; writes are
# short (one trial), so reaching this means a stuck process, not contention.
SQLITE_BUSY_TIMEOUT_S = 30.0
# libpq's default is to wait forever for an unreachable host; fail fast instead.
POSTGRES_CONNECT_TIMEOUT_S = 10
SUPPORTED_URLS = ("sqlite:///PATH", "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE")


def create_store_engine(url: str) -> Engine:
    """Create an engine for ``url``; connects lazily (this function does no I/O but mkdir).

    ``postgresql://`` URLs get the psycopg 3 driver. For an SQLite file the parent directories
    are created, and every connection uses WAL, a busy timeout, foreign keys and
    ``BEGIN IMMEDIATE`` transactions. Raises ``ConfigError`` for a malformed or unsupported URL.
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return _postgres_engine(parsed)


def parse_url(url: str) -> URL:
    """Parse and check a database URL; raises ``ConfigError`` naming the supported forms."""
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ConfigError(
            f"malformed database URL {url!r}: use one of {', '.join(SUPPORTED_URLS)}",
            path="database URL", value=url, allowed=SUPPORTED_URLS) from e
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.get_driver_name() in ("psycopg2", "psycopg"):
        # Bare postgresql:// means psycopg2 to SQLAlchemy; servetune ships psycopg 3 only.
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and parsed.get_driver_name() == "pysqlite":
        return parsed
    shown = parsed.render_as_string(hide_password=True)
    raise ConfigError(
        f"unsupported database URL {shown!r}: use one of {', '.join(SUPPORTED_URLS)}",
        path="database URL", value=shown, allowed=SUPPORTED_URLS)


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        # One shared connection, or every pooled connection would see its own empty database.
        engine = create_engine(url, poolclass=StaticPool,
                               connect_args={"check_same_thread": False})
    else:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, connection_record: Any) -> None:
    # The sqlite3 module's own BEGIN is deferred and skipped for reads; SQLAlchemy's "begin"
    # event issues ours instead (see _begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers run beside one writer; NORMAL sync is durable enough under WAL
        # (a power cut may lose the last commits, never corrupt the file).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        # Off by default in SQLite; the schema relies on ON DELETE CASCADE.
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _begin_immediate(connection: Any) -> None:
    # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
    # another process committed in between (the busy timeout does not apply); taking the
    # write lock up front makes concurrent writers queue on the busy timeout instead.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _postgres_engine(url: URL) -> Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    # pre-ping: a pooled connection dropped by a server restart is replaced, not handed out.
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
