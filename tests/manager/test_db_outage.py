"""PostgreSQL stopped for 10 s in the middle of a sweep: trials spool what they cannot write,
write it when the server is back, and the study ends with every result stored exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from common.config import parse_study
from common.results import TrialStatus
from common.store import Store
from common.store.spool import spools_under
from manager.driver import run_study
from manager.paths import StudyPaths
from tests.common.conftest import _postgres_bin_dir
from tests.manager.test_driver import SMALL_BENCHMARK
from tests.pg import PostgresCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OUTAGE_S = 10.0


@pytest.fixture
def pg() -> Iterator[PostgresCluster]:
    with PostgresCluster(_postgres_bin_dir()) as cluster:
        yield cluster


class Outage(threading.Thread):
    """Stops PostgreSQL once a trial is running and starts it again OUTAGE_S later."""

    def __init__(self, pg: PostgresCluster, url: str, study: str, results: Path) -> None:
        super().__init__(daemon=True)
        self.pg, self.url, self.study, self.results = pg, url, study, results
        self.window: tuple[datetime, datetime] | None = None
        self.spooled: list[Path] = []  # spool files seen while the server was down
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                time.sleep(0.5)
                try:
                    with Store.open(self.url) as store:
                        if any(t.status is TrialStatus.RUNNING
                               for t in store.trials(self.study)):
                            break
                except Exception:  # noqa: BLE001 - the study may not exist yet
                    continue
            time.sleep(2.0)
            self.pg.stop()
            stopped = datetime.now(timezone.utc)
            # At least OUTAGE_S, and until a trial has had to spool a result (at most 3 min).
            until = time.monotonic() + OUTAGE_S
            while time.monotonic() < until or (not self.spooled
                                               and time.monotonic() < until + 170):
                time.sleep(0.25)
                self.spooled = self.spooled or list(spools_under(self.results))
            self.pg.start()
            self.window = (stopped, datetime.now(timezone.utc))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


def test_a_ten_second_database_outage_loses_no_result(pg: PostgresCluster,
                                                      tmp_path: Path) -> None:
    url = pg.create_database("sweep")
    study = parse_study({
        "name": "db-outage", "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "engine": {"name": "vllm", "simulated": True},
        "search_space": {"max-num-seqs": [16, 32, 64, 128, 256]},
        "search": {"algorithm": "grid", "max_concurrent_trials": 2, "baseline": False},
        "benchmark": SMALL_BENCHMARK, "storage": {"database_url": url},
        "cluster": {"gpus_per_node": 2, "dashboard": False}})
    paths = StudyPaths.resolve(study, tmp_path)
    outage = Outage(pg, url, study.name, paths.results_dir)
    outage.start()
    outcome = run_study(study, paths)
    outage.join(timeout=60)
    assert outage.error is None and outage.window is not None, outage.error

    with Store.open(url) as store:
        rows = store.trials(study.name)
        info = store.study(study.name)
    assert sorted((t.number, t.attempt) for t in rows) == [(n, 0) for n in range(5)]
    assert all(t.status is TrialStatus.SUCCEEDED for t in rows), [t.message for t in rows]
    assert all(t.levels and t.finished_at for t in rows)
    assert info is not None and info.status.value == "succeeded"
    assert len(outcome.trials) == 5 and not outcome.interrupted
    # The outage hit a trial's write (it spooled), and every spool was written since.
    stopped, restarted = outage.window
    assert (restarted - stopped).total_seconds() >= OUTAGE_S
    assert outage.spooled, "no trial wrote while the database was down"
    assert list(spools_under(paths.results_dir)) == []
    assert any(stopped <= t.finished_at <= restarted for t in rows if t.finished_at)
