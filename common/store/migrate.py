"""Schema migrations: Alembic configured in code, with its scripts inside this package.

No ``alembic.ini`` and no dependence on the working directory: ``alembic_config`` points
Alembic at ``common/store/migrations``. To write a new revision after changing ``models.py``::

    from alembic import command
    from common.store.migrate import alembic_config
    command.revision(alembic_config(url="sqlite:///scratch.db"), "what changed",
                     autogenerate=True)

(upgrade the scratch database to head first, and review the generated script).
"""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, func, select

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Arbitrary constant key for pg_advisory_xact_lock: serializes servetune processes that
# migrate the same PostgreSQL database at once.
_POSTGRES_MIGRATION_LOCK_KEY = 0x5E27E7
# Alembic's EnvironmentContext is process-global state, so two threads must not run
# commands at the same time.
_alembic_lock = threading.Lock()


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic ``Config`` for servetune's migrations.

    With ``connection``, commands run on it (inside its transaction); otherwise on ``url``.
    """
    config = Config()
    # ConfigParser interpolates '%', which may appear in paths and URL-encoded passwords.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Bring the database schema to the newest revision; a no-op when it is there already.

    Safe to call from several processes at once: on PostgreSQL an advisory lock serializes
    them, on SQLite the migration's ``BEGIN IMMEDIATE`` transaction does. All steps run in
    one transaction (both backends have transactional DDL), so a failed upgrade leaves the
    schema as it was. Raises SQLAlchemy's and Alembic's errors; ``Store.open`` translates them.

    Every trial actor opens a store, and the schema is almost always at head already: one
    read of ``alembic_version`` answers that without the locks or Alembic. It cannot skip a
    needed upgrade, since an upgrade commits its version row with its DDL; anything else
    (no version table yet, an older or a newer revision) takes the locked path, where
    Alembic decides again under the lock.
    """
    if _at_head(engine):
        return
    with _alembic_lock, engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(_POSTGRES_MIGRATION_LOCK_KEY)))
        command.upgrade(alembic_config(connection), "head")


def _at_head(engine: Engine) -> bool:
    """Whether the database records exactly the scripts' head revisions.

    Read with a cursor of the DBAPI connection itself, so SQLAlchemy begins no transaction:
    on the store's SQLite engine that would be ``BEGIN IMMEDIATE``, the file's write lock,
    which a check must not queue for (the engine's connections have no implicit ``BEGIN``,
    so SQLite reads without it). On PostgreSQL the pool rolls back the connection it gets
    back. Connecting still goes through SQLAlchemy, which raises its own errors."""
    with engine.connect() as connection:
        cursor = connection.connection.cursor()
        try:
            cursor.execute("SELECT version_num FROM alembic_version")
            current = {row[0] for row in cursor.fetchall()}
        except engine.dialect.loaded_dbapi.Error:
            return False  # no version table (an empty database), or a failed read
        finally:
            cursor.close()
    return current == _script_heads()


@cache
def _script_heads() -> frozenset[str]:
    """The head revisions of the migration scripts (read once: they ship with servetune)."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())
