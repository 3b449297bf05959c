"""Trial writes through a real PostgreSQL outage: spooled while the server is down, written
in order when it is back, nothing lost and nothing duplicated."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.benchmark import LevelMetrics, Stats
from common.errors import StoreUnavailable
from common.results import FailureReason, TrialRecord, TrialStatus, utcnow
from common.store import Store
from common.store.spool import (
    SpoolingStore,
    flush_spools,
    record_from_json,
    record_to_json,
    with_retries,
)
from tests.common.conftest import _postgres_bin_dir
from tests.pg import PostgresCluster


@pytest.fixture
def pg() -> Iterator[PostgresCluster]:
    """A private PostgreSQL this test may stop (the session's stays up for the others)."""
    with PostgresCluster(_postgres_bin_dir()) as cluster:
        yield cluster


def _level(concurrency: int) -> LevelMetrics:
    stats = Stats(mean=10.0, p50=9.0, p90=12.0, p95=13.0, p99=15.0, min=5.0, max=20.0)
    return LevelMetrics(
        scenario="D(128,32)", concurrency=concurrency, num_completed=8, num_errors=0,
        duration_s=3.5, ttft_ms=stats, tpot_ms=stats, e2e_latency_ms=stats,
        input_tokens_per_s=100.0, output_tokens_per_s=50.0, total_tokens_per_s=150.0,
        requests_per_s=2.0, mean_input_tokens=128.0, mean_output_tokens=32.0)


def _record(number: int, **fields: object) -> TrialRecord:
    return TrialRecord(study="outage", number=number, params={"max-num-seqs": 8},
                       argv=["vllm", "serve", "m"], gpu_ids=["0"], node="n1", node_id="abc",
                       intent={"parallel.tp": 1}, **fields)  # type: ignore[arg-type]


def test_a_record_survives_its_json_form() -> None:
    record = _record(3, status=TrialStatus.FAILED, reason=FailureReason.SLO_VIOLATED,
                     score=-1.1, objective_values=[-1.1], slo={"worst_violation": 0.4},
                     phase_timings_s={"startup_s": 1.5}, finished_at=utcnow(),
                     levels=[_level(1), _level(4)])
    assert record_from_json(record_to_json(record)) == record


def test_writes_during_an_outage_are_spooled_and_written_in_order_when_it_ends(
        pg: PostgresCluster, tmp_path: Path) -> None:
    url = pg.create_database("outage")
    with Store.open(url) as store:
        store.create_study("outage", {"name": "outage"})
    spool = SpoolingStore(url, tmp_path / "spool.jsonl", outage_s=60)
    running = _record(0)
    spool.save_trial(running)  # database up: written at once
    assert spool.pending() == 0
    pg.stop()
    try:
        with pytest.raises(StoreUnavailable):
            Store.open(url).close()
        spool.save_trial(_record(1))  # never raises: spooled
        finished = _record(0, status=TrialStatus.SUCCEEDED, score=50.0, objective_value=50.0,
                           finished_at=utcnow(), levels=[_level(4)])
        spool.save_trial(finished)
        assert spool.pending() == 2 and not spool.flush()
    finally:
        pg.start()
    # Before the flush, the spooled end stands for attempt 0 (the database has it running):
    # a retried trial learns its result and the next attempt number from the spool too.
    (latest,) = spool.attempts("outage", 0)
    assert latest.status is TrialStatus.SUCCEEDED and latest.levels == finished.levels
    assert spool.next_attempt("outage", 1) == 1 and spool.pending() == 2
    assert spool.drain(timeout_s=30)
    assert spool.pending() == 0 and not (tmp_path / "spool.jsonl").exists()
    assert spool.next_attempt("outage", 0) == 1
    spool.close()
    with Store.open(url) as store:
        rows = store.trials("outage")
    assert [(r.number, r.attempt, r.status) for r in rows] == [
        (0, 0, TrialStatus.SUCCEEDED), (1, 0, TrialStatus.RUNNING)]
    assert rows[0].levels == finished.levels and rows[0].intent == {"parallel.tp": 1}


def test_reads_wait_for_the_database_and_left_spools_are_flushed_later(
        pg: PostgresCluster, tmp_path: Path) -> None:
    url = pg.create_database("later")
    with Store.open(url) as store:
        store.create_study("outage", {"name": "outage"})
    trial_dir = tmp_path / "outage" / "trial-0007"
    spool = SpoolingStore(url, trial_dir / "store-spool.jsonl", outage_s=0.5)
    pg.stop()
    restarted = threading.Timer(3.0, pg.start)
    try:
        spool.save_trial(_record(7, status=TrialStatus.FAILED,
                                 reason=FailureReason.ENGINE_CRASH, finished_at=utcnow()))
        assert not spool.drain()  # the budget (0.5 s) ends before the outage does
        spool.close()
        restarted.start()
        started = time.monotonic()
        with _opened_after_outage(url) as store:
            assert time.monotonic() - started >= 1.0
            assert store.trials("outage") == []
    finally:
        restarted.join()
    assert flush_spools(tmp_path, url) == (1, 0)
    with Store.open(url) as store:
        (row,) = store.trials("outage")
    assert row.number == 7 and row.reason is FailureReason.ENGINE_CRASH


def _opened_after_outage(url: str) -> Store:
    return with_retries(lambda: Store.open(url), outage_s=30)
