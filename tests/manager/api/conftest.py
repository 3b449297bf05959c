"""The read API's fixtures: one real simulated study in a throwaway PostgreSQL, shared.

A small grid study runs once per session with ``run_study`` (local Ray with fake GPUs, the
simulated engine, real genai-bench) and writes a PostgreSQL database; a second study,
``live``, is written through ``Store`` by the tests themselves while they watch it run.
Apps are built over that database with and without a bearer token.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from common.config import parse_study
from common.store import Store
from manager.api.app import create_app
from manager.api.settings import ApiSettings
from manager.driver import run_study
from manager.paths import StudyPaths
from tests.common.conftest import postgres_cluster  # noqa: F401  (a fixture)
from tests.pg import PostgresCluster

STUDY = "api-grid"
TOKEN = "test-token-" + "x" * 24
REUSE_ENV = "SERVETUNE_TEST_API_DATABASE_URL"
STUDY_FILE = {
    "name": STUDY, "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
    "engine": {"name": "vllm", "simulated": True},
    # A 5% memory fraction cannot hold the weights: an OOM at startup, stored as a failed
    # trial (infeasible_config) next to the ones that succeed.
    "search_space": {"tensor-parallel-size": [1, 2], "gpu-memory-utilization": [0.05, 0.85]},
    "search": {"algorithm": "grid", "max_concurrent_trials": 4},
    "benchmark": {"scenarios": ["D(128,32)"], "concurrency": [2, 4], "requests_per_level": 8,
                  "seconds_per_level": 60, "timeouts": {"startup_s": 60}},
    "cluster": {"gpus_per_node": 8, "dashboard": False},
}


@pytest.fixture(scope="session")
def api_database(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a PostgreSQL database holding study ``api-grid``, written by a real run.

    ``$SERVETUNE_TEST_API_DATABASE_URL`` names a database that already holds that study
    (written by this fixture before), to iterate on the API tests without re-running it."""
    reused = os.environ.get(REUSE_ENV)
    if reused:
        return reused
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    url = cluster.create_database(f"api_{uuid.uuid4().hex[:12]}")
    study = parse_study(STUDY_FILE)
    results: Path = tmp_path_factory.mktemp("api-study")
    outcome = run_study(study, StudyPaths(results, url))
    assert outcome.best is not None, [t.message for t in outcome.trials]
    return url


@pytest.fixture(scope="session")
def writer(api_database: str) -> Iterator[Store]:
    """A read-write store on the same database, for tests that write a live study."""
    store = Store.open(api_database)
    yield store
    store.close()


def make_app(url: str, **settings: object) -> FastAPI:
    return create_app(ApiSettings(database_url=url, **settings))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def app(api_database: str) -> Iterator[FastAPI]:
    """The API without authentication, with a fast live-progress poll."""
    application = make_app(api_database, poll_interval_s=0.1, events_max_s=5.0)
    with TestClient(application):
        yield application


@pytest.fixture(scope="session")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def auth_client(api_database: str) -> Iterator[TestClient]:
    """A client of the API with ``TOKEN`` required (it sends no token by itself)."""
    with TestClient(make_app(api_database, api_token=TOKEN)) as test_client:
        yield test_client
