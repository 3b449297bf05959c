"""What one request of the read API costs the database: one connection checkout, and no
query for what the route does not show, observed on the reader's own engine."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from common.results import utcnow
from common.store.readonly import StoreReader
from manager.api import conversions
from manager.api.app import create_app
from manager.api.settings import ApiSettings
from tests.manager.api.conftest import STUDY

pytestmark = [pytest.mark.integration]
API = f"/api/v1/studies/{STUDY}"


@dataclass
class Seen:
    """Connection checkouts and SQL statements on the reader's engine since ``clear``."""

    checkouts: int = 0
    statements: list[str] = field(default_factory=list)

    def clear(self) -> None:
        self.checkouts = 0
        self.statements.clear()


@pytest.fixture(scope="module")
def reader(api_database: str) -> Iterator[StoreReader]:
    with StoreReader.open(api_database) as opened:
        yield opened


@pytest.fixture(scope="module")
def watched(reader: StoreReader, api_database: str) -> Iterator[tuple[TestClient, Seen]]:
    """A client of an app over ``reader``, and what its engine sees."""
    seen = Seen()

    def checkout(*args: Any) -> None:
        seen.checkouts += 1

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        seen.statements.append(sql)

    event.listen(reader._engine, "checkout", checkout)
    event.listen(reader._engine, "before_cursor_execute", statement)
    settings = ApiSettings(database_url=api_database, poll_interval_s=0.1, events_max_s=5.0)
    with TestClient(create_app(settings, reader)) as client:
        yield client, seen


@pytest.mark.parametrize("path", [
    "/api/v1/studies", API, f"{API}/best", f"{API}/progress", f"{API}/trials",
    f"{API}/trials?sort=ttft_ms_p95", f"{API}/trials/0", f"{API}/plots", "/report",
    f"/report/studies/{STUDY}", f"/report/studies/{STUDY}/table",
    f"/report/studies/{STUDY}/trials/0", "/healthz",
])
def test_a_request_checks_out_one_connection(watched: tuple[TestClient, Seen],
                                             path: str) -> None:
    """The study lookup of a route's dependency and the handler's queries share it."""
    client, seen = watched
    seen.clear()
    assert client.get(path).status_code == 200
    assert seen.checkouts == 1


def test_a_not_modified_progress_poll_and_a_missing_study_check_out_one_too(
        watched: tuple[TestClient, Seen]) -> None:
    client, seen = watched
    etag = client.get(f"{API}/progress").headers["etag"]
    seen.clear()
    assert client.get(f"{API}/progress", headers={"If-None-Match": etag}).status_code == 304
    assert seen.checkouts == 1
    seen.clear()
    assert client.get("/api/v1/studies/nope/trials").status_code == 404
    assert seen.checkouts == 1


def test_best_config_reads_no_benchmark_run_and_answers_as_from_the_full_summary(
        watched: tuple[TestClient, Seen], reader: StoreReader) -> None:
    """Only the study row and the best trial's columns a launch command needs."""
    client, seen = watched
    seen.clear()
    body = client.get(f"{API}/best").json()
    assert seen.statements and not _mentions(seen.statements, "benchmark_runs")
    assert not _mentions(seen.statements, "log_excerpt")
    full = reader.study(STUDY)
    assert full is not None and full.best is not None
    assert body == conversions.best_config_out(full.row, full.best).model_dump(mode="json")


def test_progress_and_its_event_stream_do_not_load_the_best_trial(
        watched: tuple[TestClient, Seen], reader: StoreReader) -> None:
    """Counts and the best score and number only: no trial row, no benchmark run."""
    client, seen = watched
    seen.clear()
    body = client.get(f"{API}/progress").json()
    events = client.get(f"{API}/events").text  # one event: the study has ended
    assert "event: progress" in events
    assert seen.statements and not _mentions(seen.statements, "benchmark_runs")
    assert not _mentions(seen.statements, "trials.argv")
    full, fingerprint = reader.study(STUDY), reader.fingerprint(STUDY)
    assert full is not None and full.row.finished_at is not None  # elapsed_s is fixed
    assert body == conversions.progress_out(full, fingerprint, utcnow()).model_dump(mode="json")


def _mentions(statements: list[str], name: str) -> bool:
    return any(name in sql for sql in statements)
