"""``StoreReader``: the read API's store refuses every write, on both backends."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event, text

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


def test_a_transaction_view_is_one_checkout_across_threads_and_still_read_only(
        store: Store, database_url: str) -> None:
    """A view's calls from two threads share one connection checkout; after the block its
    calls get their own again; a write through a view fails as the reader's do."""
    store.create_study("tx", {"name": "tx"})
    with StoreReader.open(database_url) as reader:
        checkouts: list[object] = []
        event.listen(reader._engine, "checkout", lambda *args: checkouts.append(args))
        with reader.transaction() as view, ThreadPoolExecutor(1) as other_thread:
            row = other_thread.submit(view.study_row, "tx").result()
            summary = view.study_counts("tx")
            assert row is not None and summary is not None and summary.row.id == row.id
            assert summary.best is None
        assert len(checkouts) == 1
        assert view.study_row("tx") is not None and len(checkouts) == 2
        with pytest.raises(StoreUnavailable, match="read-only|readonly"):
            with reader.transaction() as view, view._session() as session:
                session.execute(text("DELETE FROM studies"))
    assert store.study("tx") is not None


def test_reader_refuses_memory_and_missing_databases(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError):
        StoreReader.open("sqlite://")
    with pytest.raises(StoreUnavailable):
        StoreReader.open(f"sqlite:///{tmp_path}/missing.db")
    assert not (tmp_path / "missing.db").exists()
