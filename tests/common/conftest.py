"""Database fixtures: every store test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.store import Store
from tests.pg import PostgresCluster, PostgresNotFound, find_bin_dir

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster for the whole session, on 127.0.0.1 and a free port.

    Fails (never skips) without PostgreSQL binaries: the PostgreSQL half of the suite is
    part of the contract, and scripts/ensure-postgres.sh installs them.
    """
    with PostgresCluster(_postgres_bin_dir()) as cluster:
        yield cluster


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database: an SQLite file in a directory that does not exist yet, or a
    fresh database on the session's PostgreSQL cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/results/servetune.db"
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    # The cluster is deleted at the end of the session, so test databases are never dropped.
    return cluster.create_database(f"test_{uuid.uuid4().hex[:16]}")


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A ``Store`` on a fresh database of each backend, closed after the test."""
    opened = Store.open(database_url)
    try:
        yield opened
    finally:
        opened.close()


def _postgres_bin_dir() -> Path:
    try:
        return find_bin_dir()
    except PostgresNotFound as e:
        missing = str(e)
    # Failed outside the except block, so the report shows the message, not a chained error.
    pytest.fail(missing, pytrace=False)
