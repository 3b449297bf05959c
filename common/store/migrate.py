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
from pathlib import Path

from alembic import command
from alembic.config import Config
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
    """
    with _alembic_lock, engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(_POSTGRES_MIGRATION_LOCK_KEY)))
        command.upgrade(alembic_config(connection), "head")
