"""``StoreReader``: the read API's store refuses every write, on both backends."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from common.errors import ConfigError, StoreUnavailable
from common.store import Store
from common.store.queries import StudyFilter
from common.store.readonly import StoreReader


def test_reader_reads_what_the_store_wrote_and_cannot_write(store: Store,
                                                            database_url: str) -> None:
    """Writes through the reader's connections fail: a READ ONLY transaction on PostgreSQL,
    a mode=ro file with query_only on SQLite."""
    store.create_study("ro", {"name": "ro"})
    with StoreReader.open(database_url) as reader:
        summaries, count = reader.studies(StudyFilter(), 10, 0)
        assert count == 1 and summaries[0].row.name == "ro"
        with pytest.raises(StoreUnavailable, match="read-only|readonly"):
            with reader._session() as session:
                session.execute(text("DELETE FROM studies"))
    assert store.study("ro") is not None


def test_reader_refuses_memory_and_missing_databases(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError):
        StoreReader.open("sqlite://")
    with pytest.raises(StoreUnavailable):
        StoreReader.open(f"sqlite:///{tmp_path}/missing.db")
    assert not (tmp_path / "missing.db").exists()
