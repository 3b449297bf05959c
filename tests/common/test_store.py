"""Conformance suite of ``common.store.Store``: every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
from datetime import datetime, timedelta, timezone
from multiprocessing.synchronize import Event
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event

from common.benchmark import LevelMetrics, Stats
from common.errors import ConfigError, StoreUnavailable
from common.results import FailureReason, TrialRecord, TrialStatus
from common.store import Store, StudyStatus
from common.store.engine import create_store_engine
from common.store.migrate import alembic_config, upgrade_to_head
from common.store.models import STUDY_STATUSES, TRIAL_STATUSES, Base
from tests.pg import free_port

STUDY = "llama-8b-h100"
CONFIG = {"engine": {"name": "vllm", "model": "meta-llama/Llama-3.1-8B-Instruct"},
          "search": {"num_trials": 8}}
T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def stats(base: float) -> Stats:
    return Stats(mean=base, p50=base * 0.9, p90=base * 1.5, p95=base * 1.7, p99=base * 2.0,
                 min=base * 0.5, max=base * 2.5)


def level(scenario: str, concurrency: int, ttft_ms: float = 50.0) -> LevelMetrics:
    return LevelMetrics(
        scenario=scenario, concurrency=concurrency, num_completed=100 * concurrency,
        num_errors=concurrency % 3, duration_s=60.25, ttft_ms=stats(ttft_ms),
        tpot_ms=stats(12.5), e2e_latency_ms=stats(3200.0), input_tokens_per_s=8123.5,
        output_tokens_per_s=2031.25, total_tokens_per_s=10154.75, requests_per_s=7.9,
        mean_input_tokens=1024.0, mean_output_tokens=256.5)


def record(number: int, attempt: int = 0, study: str = STUDY, **changes: object) -> TrialRecord:
    base = TrialRecord(
        study=study, number=number, attempt=attempt, trial_id=f"trial_{number:05d}",
        params={"max_num_seqs": 128 + number, "enable_chunked_prefill": True},
        argv=["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--max-num-seqs",
              str(128 + number)],
        gpu_ids=["0", "1"], node="10.0.0.7", phase_timings_s={"deploy": 41.5},
        started_at=T0 + timedelta(minutes=number))
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def finished(number: int, attempt: int = 0, **changes: object) -> TrialRecord:
    values: dict[str, Any] = {
        "status": TrialStatus.SUCCEEDED, "score": 2031.25, "objective_value": 2031.25,
        "finished_at": T0 + timedelta(minutes=number, seconds=330),
        "phase_timings_s": {"deploy": 41.5, "benchmark": 280.0},
        "levels": [level("D(1024,256)", 1), level("D(1024,256)", 8, 61.0),
                   level("D(1024,256)", 32, 90.0)],
    }
    values.update(changes)
    return record(number, attempt, **values)


def test_create_study_is_idempotent_and_keeps_the_first_config(store: Store) -> None:
    """Creating a study twice leaves one study with the config first submitted."""
    store.create_study(STUDY, CONFIG)
    first = store.study(STUDY)
    store.create_study(STUDY, {"engine": {"name": "sglang"}})

    infos = store.studies()
    assert [info.name for info in infos] == [STUDY]
    assert infos[0].config == CONFIG
    assert infos[0].status is StudyStatus.RUNNING
    assert first is not None and infos[0].created_at == first.created_at


def test_create_study_again_puts_a_finished_study_back_to_running(store: Store) -> None:
    """Resuming a finished study: status is running again, finished_at cleared, best kept."""
    store.create_study(STUDY, CONFIG)
    store.finish_study(STUDY, "failed", best_trial_number=3)
    store.create_study(STUDY, CONFIG)

    info = store.study(STUDY)
    assert info is not None
    assert info.status is StudyStatus.RUNNING
    assert info.finished_at is None
    assert info.best_trial_number == 3


def test_finish_study_records_status_time_and_best_trial(store: Store) -> None:
    store.create_study(STUDY, CONFIG)
    before = datetime.now(timezone.utc)
    store.finish_study(STUDY, StudyStatus.SUCCEEDED, best_trial_number=5)

    info = store.study(STUDY)
    assert info is not None
    assert info.status is StudyStatus.SUCCEEDED
    assert info.best_trial_number == 5
    assert info.finished_at is not None and info.finished_at.tzinfo is not None
    assert info.finished_at >= before - timedelta(seconds=1)
    assert info.created_at.utcoffset() == timedelta(0)


def test_finish_study_refuses_running_and_unknown_statuses(store: Store) -> None:
    store.create_study(STUDY, CONFIG)
    with pytest.raises(ValueError, match="terminal"):
        store.finish_study(STUDY, "running", None)
    with pytest.raises(ValueError):
        store.finish_study(STUDY, "done", None)


def test_unknown_study_is_none_and_has_no_trials_but_cannot_be_finished(store: Store) -> None:
    assert store.study("nope") is None
    assert store.trials("nope") == []
    assert store.studies() == []
    with pytest.raises(LookupError, match="nope"):
        store.finish_study("nope", "succeeded", None)
    with pytest.raises(LookupError, match="nope"):
        store.save_trial(record(0, study="nope"))


def test_saving_the_same_trial_twice_leaves_one_row(store: Store) -> None:
    store.create_study(STUDY, CONFIG)
    store.save_trial(finished(0))
    store.save_trial(finished(0))

    assert store.trials(STUDY) == [finished(0)]


def test_trial_start_then_finish_updates_the_row_and_adds_levels_once(store: Store) -> None:
    """A running record, then the finished one (saved twice): one attempt, three runs."""
    store.create_study(STUDY, CONFIG)
    store.save_trial(record(0))
    assert store.trials(STUDY) == [record(0)]

    store.save_trial(finished(0))
    store.save_trial(finished(0))

    [stored] = store.trials(STUDY)
    assert stored == finished(0)
    assert stored.status is TrialStatus.SUCCEEDED
    assert [(lv.scenario, lv.concurrency) for lv in stored.levels] == [
        ("D(1024,256)", 1), ("D(1024,256)", 8), ("D(1024,256)", 32)]


def test_saved_levels_replace_the_stored_ones(store: Store) -> None:
    """The stored attempt mirrors the last record: changed levels update, missing ones go."""
    store.create_study(STUDY, CONFIG)
    store.save_trial(finished(0))
    changed = finished(0, levels=[level("D(1024,256)", 8, ttft_ms=75.0),
                                  level("D(128,2048)", 8)])
    store.save_trial(changed)

    [stored] = store.trials(STUDY)
    assert stored.levels == [level("D(1024,256)", 8, ttft_ms=75.0), level("D(128,2048)", 8)]


def test_levels_round_trip_every_statistic_and_nan_for_empty_levels(store: Store) -> None:
    """Each LevelMetrics field survives; a level without samples keeps NaN latencies."""
    store.create_study(STUDY, CONFIG)
    empty = LevelMetrics(
        scenario="D(1024,256)", concurrency=256, num_completed=0, num_errors=12,
        duration_s=30.0, ttft_ms=Stats.of([]), tpot_ms=Stats.of([]),
        e2e_latency_ms=Stats.of([]), input_tokens_per_s=0.0, output_tokens_per_s=0.0,
        total_tokens_per_s=0.0, requests_per_s=0.0, mean_input_tokens=0.0,
        mean_output_tokens=0.0)
    store.save_trial(finished(0, levels=[level("D(1024,256)", 1), empty]))

    [stored] = store.trials(STUDY)
    assert stored.levels[0] == level("D(1024,256)", 1)
    assert stored.levels[0].error_rate == level("D(1024,256)", 1).error_rate
    back = stored.levels[1]
    assert (back.num_completed, back.num_errors, back.error_rate) == (0, 12, 1.0)
    assert all(math.isnan(getattr(back.ttft_ms, s)) for s in ("mean", "p50", "p99", "max"))


def test_failed_trial_round_trips_reason_message_and_log_excerpt(store: Store) -> None:
    store.create_study(STUDY, CONFIG)
    log = "INFO starting\n" + "x" * 20_000 + "\ntorch.OutOfMemoryError: CUDA out of memory ü"
    failed = record(2, status=TrialStatus.FAILED, reason=FailureReason.INFEASIBLE_CONFIG,
                    message="engine exited 1 during startup: CUDA out of memory",
                    log_excerpt=log, finished_at=T0 + timedelta(minutes=3))
    store.save_trial(failed)

    [stored] = store.trials(STUDY)
    assert stored == failed
    assert stored.reason is FailureReason.INFEASIBLE_CONFIG
    assert stored.score is None and stored.levels == []


def test_nul_characters_in_logs_are_stored_as_replacement_characters(store: Store) -> None:
    """A log tail with NUL bytes (PostgreSQL text cannot hold them) is stored, not refused."""
    store.create_study(STUDY, CONFIG)
    store.save_trial(record(0, status=TrialStatus.FAILED, reason=FailureReason.ENGINE_CRASH,
                            message="exit 139\x00", log_excerpt="core dumped\x00\x00tail"))

    [stored] = store.trials(STUDY)
    assert stored.message == "exit 139\ufffd"
    assert stored.log_excerpt == "core dumped\ufffd\ufffdtail"


def test_a_retried_attempt_is_a_separate_row(store: Store) -> None:
    store.create_study(STUDY, CONFIG)
    lost = record(4, status=TrialStatus.FAILED, reason=FailureReason.NODE_LOST,
                  finished_at=T0 + timedelta(minutes=5))
    store.save_trial(lost)
    store.save_trial(finished(4, attempt=1))

    assert store.trials(STUDY) == [lost, finished(4, attempt=1)]


def test_trials_are_ordered_by_number_then_attempt(store: Store) -> None:
    store.create_study(STUDY, CONFIG)
    for number, attempt in [(3, 0), (1, 1), (10, 0), (1, 0), (2, 0), (1, 2)]:
        store.save_trial(record(number, attempt))

    keys = [(r.number, r.attempt) for r in store.trials(STUDY)]
    assert keys == [(1, 0), (1, 1), (1, 2), (2, 0), (3, 0), (10, 0)]


def test_trials_of_one_study_leave_other_studies_alone(store: Store) -> None:
    store.create_study(STUDY, CONFIG)
    store.create_study("other", CONFIG)
    store.save_trial(finished(0))
    store.save_trial(record(0, study="other"))

    assert store.trials(STUDY) == [finished(0)]
    assert store.trials("other") == [record(0, study="other")]


def test_studies_count_each_trial_once_by_its_latest_attempt(store: Store) -> None:
    store.create_study(STUDY, CONFIG)
    store.create_study("other", {"engine": {"name": "sglang"}})
    store.save_trial(finished(0))
    store.save_trial(record(1, status=TrialStatus.FAILED, reason=FailureReason.NODE_LOST))
    store.save_trial(finished(1, attempt=1))
    store.save_trial(record(2, status=TrialStatus.FAILED, reason=FailureReason.SLO_VIOLATED))
    store.save_trial(record(3))
    store.save_trial(record(0, study="other"))

    by_name = {info.name: info for info in store.studies()}
    assert [info.name for info in store.studies()] == [STUDY, "other"]
    assert by_name[STUDY].trial_counts == {
        TrialStatus.SUCCEEDED: 2, TrialStatus.FAILED: 1, TrialStatus.RUNNING: 1}
    assert by_name[STUDY].num_trials == 4
    assert by_name["other"].trial_counts == {
        TrialStatus.SUCCEEDED: 0, TrialStatus.FAILED: 0, TrialStatus.RUNNING: 1}
    assert store.study(STUDY) == by_name[STUDY]


def test_timestamps_come_back_as_the_same_utc_instant(store: Store) -> None:
    """An aware time in another zone is stored as UTC and read back aware, same instant."""
    store.create_study(STUDY, CONFIG)
    cest = timezone(timedelta(hours=2))
    store.save_trial(record(0, started_at=datetime(2026, 5, 1, 14, 0, 0, 123456, cest)))

    [stored] = store.trials(STUDY)
    assert stored.started_at == datetime(2026, 5, 1, 12, 0, 0, 123456, timezone.utc)
    assert stored.started_at.tzinfo is not None
    assert stored.started_at.utcoffset() == timedelta(0)


def test_naive_timestamps_and_duplicate_levels_are_refused(store: Store) -> None:
    store.create_study(STUDY, CONFIG)
    with pytest.raises(ValueError, match="naive"):
        store.save_trial(record(0, started_at=datetime(2026, 5, 1, 12, 0, 0)))
    with pytest.raises(ValueError, match="duplicate"):
        store.save_trial(finished(0, levels=[level("D(1024,256)", 8), level("D(1024,256)", 8)]))
    assert store.trials(STUDY) == []


def test_concurrent_processes_opening_and_writing_an_empty_database_all_land(
        database_url: str) -> None:
    """Four trial processes start at once on an empty database: the schema is migrated once
    (the others wait), the study is created once, and none of their writes is lost (SQLite:
    WAL and a busy timeout)."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    writers = [context.Process(target=_write_trials, args=(database_url, writer, 10, start))
               for writer in range(4)]
    for process in writers:
        process.start()
    start.set()
    for process in writers:
        process.join(timeout=120)
    assert [p.exitcode for p in writers] == [0, 0, 0, 0]

    with Store.open(database_url) as store:
        trials = store.trials(STUDY)
        assert [info.name for info in store.studies()] == [STUDY]
    assert [t.number for t in trials] == sorted(w * 100 + i for w in range(4) for i in range(10))
    assert all(len(t.levels) == 3 and t.status is TrialStatus.SUCCEEDED for t in trials)


def test_threads_sharing_one_store_all_land(store: Store) -> None:
    store.create_study(STUDY, CONFIG)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            for i in range(10):
                store.save_trial(record(writer * 100 + i))
                store.save_trial(finished(writer * 100 + i))
        except BaseException as e:  # surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(store.trials(STUDY)) == 40
    info = store.study(STUDY)
    assert info is not None and info.trial_counts[TrialStatus.SUCCEEDED] == 40


def test_opening_again_keeps_the_data(database_url: str) -> None:
    """A second open (schema already at head) migrates nothing and loses nothing."""
    with Store.open(database_url) as store:
        store.create_study(STUDY, CONFIG)
        store.save_trial(finished(0))
    with Store.open(database_url) as store:
        assert store.trials(STUDY) == [finished(0)]


def test_a_database_at_head_is_not_migrated_again_and_an_older_one_is(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """At head, opening reads ``alembic_version`` and stops: Alembic's upgrade does not run
    and nothing goes through the engine (no BEGIN IMMEDIATE, no advisory lock). A database
    at an older revision still goes through the locked Alembic upgrade to head."""
    upgrades: list[str] = []
    real_upgrade = command.upgrade

    def recording_upgrade(config: Config, revision: str, **kwargs: Any) -> None:
        upgrades.append(revision)
        real_upgrade(config, revision, **kwargs)

    engine = create_store_engine(database_url)
    statements: list[str] = []
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0002")
        monkeypatch.setattr(command, "upgrade", recording_upgrade)
        event.listen(engine, "before_cursor_execute",
                     lambda conn, cursor, statement, *rest: statements.append(statement))
        upgrade_to_head(engine)
        assert upgrades == ["head"] and _revisions(engine) == _heads()
        assert any("pg_advisory_xact_lock" in sql or sql == "BEGIN IMMEDIATE"
                   for sql in statements)  # the locked path
        statements.clear()
        upgrade_to_head(engine)
        assert upgrades == ["head"] and statements == []
    finally:
        engine.dispose()


def _revisions(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def _heads() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def test_migrated_schema_matches_the_models(store: Store, database_url: str) -> None:
    """Alembic finds no difference between head and models.py (a model change needs a
    migration)."""
    engine = create_store_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_status_check_constraints_match_the_domain_enums() -> None:
    assert STUDY_STATUSES == tuple(s.value for s in StudyStatus)
    assert TRIAL_STATUSES == tuple(s.value for s in TrialStatus)


def test_unreachable_postgresql_raises_store_unavailable_fast() -> None:
    """Nothing listening: StoreUnavailable within seconds, password not in the message."""
    url = f"postgresql+psycopg://servetune:s3cret@127.0.0.1:{free_port()}/servetune"
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        Store.open(url + "?connect_timeout=2")
    assert time.monotonic() - started < 10
    assert "s3cret" not in str(caught.value)
    assert caught.value.url is not None and "s3cret" not in caught.value.url


def test_unsupported_database_urls_raise_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Store.open("mysql://root@localhost/servetune")
    assert caught.value.allowed is not None
    with pytest.raises(ConfigError):
        Store.open("not a url")


def _write_trials(url: str, writer: int, count: int, start: Event) -> None:
    """Child process body: when ``start`` is set, open the store, create the study and save
    ``count`` trials (each at its start and at its end)."""
    start.wait(60)
    with Store.open(url) as store:
        store.create_study(STUDY, CONFIG)
        for i in range(count):
            store.save_trial(record(writer * 100 + i))
            store.save_trial(finished(writer * 100 + i))


def test_attempts_end_running_cancel_requests_and_delete(store: Store) -> None:
    """The fault-handling calls on both backends: a retried trial's attempts, ending what a
    dead driver left running, a cancel request that a new run clears, deleting a study."""
    from common.results import FailureReason, TrialRecord, TrialStatus, utcnow

    store.create_study("faults", {"name": "faults"})
    assert store.next_attempt("faults", 3) == 0
    store.save_trial(TrialRecord(study="faults", number=3, attempt=0, status=TrialStatus.FAILED,
                                 reason=FailureReason.NODE_LOST, finished_at=utcnow()))
    store.save_trial(TrialRecord(study="faults", number=3, attempt=1, node_id="n2"))
    store.save_trial(TrialRecord(study="faults", number=4))
    assert store.next_attempt("faults", 3) == 2
    assert [a.attempt for a in store.attempts("faults", 3)] == [0, 1]
    ended = store.end_running("faults", FailureReason.DRIVER_LOST, "driver gone")
    assert sorted((r.number, r.attempt) for r in ended) == [(3, 1), (4, 0)]
    assert [(r.number, r.attempt, r.reason) for r in store.trials("faults")] == [
        (3, 0, FailureReason.NODE_LOST), (3, 1, FailureReason.DRIVER_LOST),
        (4, 0, FailureReason.DRIVER_LOST)]
    assert all(r.finished_at is not None for r in store.trials("faults"))
    assert store.attempts("faults", 3)[1].node_id == "n2"
    assert store.end_running("faults", FailureReason.CANCELLED, "x") == []
    assert not store.cancel_requested("faults")
    assert store.request_cancel("faults") is not None and store.cancel_requested("faults")
    store.create_study("faults", {"name": "faults"})  # a resumed run starts uncancelled
    assert not store.cancel_requested("faults")
    assert store.request_cancel("nope") is None
    assert store.delete_study("faults") and store.trials("faults") == []
    assert store.study("faults") is None and not store.delete_study("faults")
