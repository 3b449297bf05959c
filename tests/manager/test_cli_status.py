"""`servetune status`: a study's state read from the database alone, without writing to it."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from common.config import parse_study
from common.results import FailureReason, TrialRecord, TrialStatus
from common.store import Store, StudyStatus
from common.store.readonly import StoreReader
from manager.cli import main
from manager.status import StudyProgress, duration, render, study_progress

STUDY = "status-demo"
CONFIG = parse_study({
    "name": STUDY, "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
    "engine": {"name": "sglang", "simulated": True},
    "search_space": {"tp-size": [1, 2], "chunked-prefill-size": [2048, 4096]},
    "search": {"algorithm": "tpe", "max_trials": 12}}).model_dump(mode="json")


def _trial(number: int, start: datetime, status: TrialStatus = TrialStatus.SUCCEEDED,
           reason: FailureReason | None = None, attempt: int = 0,
           score: float | None = None, gpu_ids: tuple[str, ...] = ("0",),
           node: str = "10.0.0.7", baseline: bool = False) -> TrialRecord:
    finished = None if status is TrialStatus.RUNNING else start + timedelta(seconds=90)
    if score is None and status is TrialStatus.SUCCEEDED:
        score = 1000.0 + number
    return TrialRecord(
        study=STUDY, number=number, attempt=attempt, trial_id=f"t{number}",
        params={"tp-size": len(gpu_ids), "chunked-prefill-size": 2048 * (1 + number % 2)},
        gpu_ids=list(gpu_ids), node=node, status=status, reason=reason, score=score,
        objective_value=score, baseline=baseline, started_at=start, finished_at=finished,
        message="" if reason is None else f"failed: {reason.value}")


def _write_study(url: str, finished: bool = False) -> datetime:
    """Write the study, its trials relative to its creation time; returns that time."""
    with Store.open(url) as store:
        store.create_study(STUDY, CONFIG)
        info = store.study(STUDY)
        assert info is not None
        created = info.created_at
        store.save_trial(_trial(0, created, baseline=True, score=900.0))
        store.save_trial(_trial(1, created, score=1500.0, gpu_ids=("0", "1")))
        store.save_trial(_trial(2, created, TrialStatus.FAILED,
                                FailureReason.INFEASIBLE_CONFIG, score=-1.0))
        store.save_trial(_trial(3, created, TrialStatus.FAILED,
                                FailureReason.INFEASIBLE_CONFIG, score=-1.0))
        store.save_trial(_trial(4, created, TrialStatus.FAILED,
                                FailureReason.STARTUP_TIMEOUT, score=-2.0))
        # Trial 5 lost its node and was retried; attempt 1 runs now on another node.
        store.save_trial(_trial(5, created, TrialStatus.FAILED, FailureReason.NODE_LOST))
        if not finished:
            store.save_trial(_trial(5, created + timedelta(minutes=3), TrialStatus.RUNNING,
                                    attempt=1, gpu_ids=("2", "3"), node="10.0.0.8"))
            store.save_trial(_trial(6, created + timedelta(minutes=4), TrialStatus.RUNNING,
                                    gpu_ids=("4",)))
        else:
            store.save_trial(_trial(5, created, attempt=1, score=1200.0))
            store.finish_study(STUDY, "succeeded", best_trial_number=1)
    return created


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "results" / "servetune.db"
    return f"sqlite:///{path}", path


def test_running_study_counts_latest_attempts_and_lists_running_trials(
        db: tuple[str, Path]) -> None:
    """Trials are counted once, by their latest attempt; failures are grouped by reason; each
    running trial shows its node, GPU ids and how long it has run; the best so far is the
    highest-scoring succeeded trial; the elapsed time runs from the study's creation."""
    url, _ = db
    created = _write_study(url)
    as_of = created + timedelta(minutes=5, seconds=7)
    with StoreReader.open(url) as reader:
        progress = study_progress(reader, STUDY, as_of)
    assert progress is not None
    assert progress.num_trials == 7 and progress.retried == 1
    assert progress.count(TrialStatus.SUCCEEDED) == 2
    assert progress.count(TrialStatus.FAILED) == 3
    assert progress.outcomes[(TrialStatus.FAILED, "infeasible_config")] == 2
    assert progress.elapsed_s == pytest.approx(307.0)
    assert [(t.number, t.attempt, t.node, t.gpu_ids) for t in progress.running] == [
        (5, 1, "10.0.0.8", ["2", "3"]), (6, 0, "10.0.0.7", ["4"])]
    lines = render(progress)
    since = created.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert lines[0] == f"study status-demo: running for 5m 07s (since {since})"
    assert lines[1] == "trials: 7 of up to 12 (2 succeeded, 3 failed, 2 running); " \
                       "1 attempt(s) retried"
    assert lines[2] == "  failed by reason: infeasible_config 2, startup_timeout 1"
    assert lines[3] == "running:"
    assert lines[4].startswith("  trial 5 attempt 1 on 10.0.0.8, GPUs 2,3, for 2m 07s  [")
    assert lines[5].startswith("  trial 6 on 10.0.0.7, GPUs 4, for 1m 07s  [tp-size=1")
    assert lines[6].startswith("best so far: trial 1, output_throughput")
    assert "= 1500, score 1500" in lines[6] and "tp-size=2" in lines[6]


def test_cli_prints_a_finished_study_and_never_writes_the_database(
        db: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """`servetune status NAME --database-url URL` exits 0 with the study's end, its counts and
    the recorded best trial, and leaves the database file byte for byte as it was (and its
    write-ahead log empty)."""
    url, path = db
    _write_study(url, finished=True)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["status", STUDY, "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("study status-demo: succeeded after ")
    assert "trials: 6 of up to 12 (3 succeeded, 3 failed, 0 running); 1 attempt(s) " \
           "retried" in out
    assert "running:" not in out
    assert "best so far: trial 1, output_throughput" in out
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    # A reader of a WAL-mode file maps its -shm index; nothing goes into the log.
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_unknown_study_is_a_usage_error_and_a_missing_database_is_not_created(
        db: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown study name exits 2 naming it; a database that does not exist exits 1 and
    is not created (status never creates or migrates a schema); the URL may come from
    $SERVETUNE_DATABASE_URL."""
    url, path = db
    monkeypatch.setenv("SERVETUNE_DATABASE_URL", url)
    assert main(["status", STUDY]) == 1
    assert "no servetune schema" in capsys.readouterr().err
    assert not path.exists()
    _write_study(url)
    assert main(["status", "nope"]) == 2
    assert "no study named 'nope'" in capsys.readouterr().err


def test_a_study_without_successes_says_so() -> None:
    """No succeeded trial: the best line says none yet, and a study with no trials counts 0."""
    created = datetime(2026, 1, 1, tzinfo=timezone.utc)
    progress = StudyProgress(STUDY, StudyStatus.RUNNING, created, None,
                             created + timedelta(seconds=42), None, "objective", {}, [], 0,
                             None)
    lines = render(progress)
    assert lines[1] == "trials: 0 (0 succeeded, 0 failed, 0 running)"
    assert lines[-1] == "best so far: none (no trial has succeeded yet)"


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (42.9, "42s"), (307, "5m 07s"),
                                                (3600 * 3 + 125, "3h 02m"), (-5, "0s")])
def test_duration_shows_the_two_largest_units(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_trials_lists_each_trials_last_attempt_and_every_attempt_on_request(
        db: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Trial 5 was retried (node_lost, then attempt 1 succeeded): `servetune trials` shows it
    once, its last attempt, and says an earlier attempt is hidden; `--attempts` lists both as
    5.0 and 5.1."""
    url, _ = db
    created = _write_study(url, finished=True)
    with Store.open(url) as store:
        store.save_trial(_trial(5, created + timedelta(minutes=3), attempt=1,
                                gpu_ids=("2", "3"), node="10.0.0.8"))
    assert main(["trials", STUDY, "--database-url", url]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    fives = [row for row in rows if row and row[0] == "5"]
    assert len(fives) == 1 and fives[0][1] == "succeeded"
    assert ["(1", "earlier", "attempt(s)"] == rows[-1][:3]
    assert main(["trials", STUDY, "--database-url", url, "--attempts"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [row[:3] for row in rows if row and row[0].startswith("5.")] == [
        ["5.0", "failed", "node_lost"], ["5.1", "succeeded", "1005"]]
    assert ["0.0*", "succeeded"] == next(row[:2] for row in rows if row[0].startswith("0."))
