"""Live progress (ETag polling and Server-Sent Events) and redaction, on studies the tests
write themselves through ``Store`` while the API reads them."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from common.results import FailureReason, TrialRecord, TrialStatus, utcnow
from common.store import Store

pytestmark = [pytest.mark.integration]
SECRET = "sk-livetestsecret0123456789"
CONFIG = {"name": "live", "model": {"name": "m"}, "engine": {"name": "vllm", "simulated": True},
          "search_space": {"max-num-seqs": [32, 64]}, "search": {"max_trials": 2}}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _trial(study: str, number: int, **fields: object) -> TrialRecord:
    return TrialRecord(study=study, number=number, params={"max-num-seqs": 32},
                       argv=["vllm", "serve", "m"], gpu_ids=["0"], node="n", **fields)  # type: ignore[arg-type]


def test_progress_etag_answers_304_until_the_study_changes(client: TestClient,
                                                           writer: Store) -> None:
    """Conditional polling: the same ETag gets 304; a trial ending changes it."""
    name = _name("etag")
    writer.create_study(name, {**CONFIG, "name": name})
    writer.save_trial(_trial(name, 0))
    first = client.get(f"/api/v1/studies/{name}/progress")
    etag = first.headers["etag"]
    assert first.json()["trial_counts"]["running"] == 1
    again = client.get(f"/api/v1/studies/{name}/progress", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag
    writer.save_trial(_trial(name, 0, status=TrialStatus.SUCCEEDED, score=1.0,
                             objective_value=1.0, finished_at=utcnow()))
    changed = client.get(f"/api/v1/studies/{name}/progress", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json()["trial_counts"]["succeeded"] == 1
    assert client.get("/api/v1/studies/nope/progress").status_code == 404


def test_event_stream_sends_progress_on_each_change_and_ends_when_the_study_does(
        client: TestClient, writer: Store) -> None:
    """SSE: a progress event at once, one per stored change while the study runs, and the
    stream closes after the terminal status."""
    name = _name("sse")
    writer.create_study(name, {**CONFIG, "name": name})

    def run() -> None:
        time.sleep(0.5)
        writer.save_trial(_trial(name, 0))
        time.sleep(0.5)
        writer.save_trial(_trial(name, 0, status=TrialStatus.FAILED, score=-2.0,
                                 reason=FailureReason.ENGINE_CRASH, finished_at=utcnow()))
        time.sleep(0.5)
        writer.finish_study(name, "succeeded", None)

    study = threading.Thread(target=run)
    study.start()
    started = time.monotonic()
    try:
        response = client.get(f"/api/v1/studies/{name}/events")
    finally:
        study.join()
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line.removeprefix("data: ")) for line in response.text.splitlines()
              if line.startswith("data: ")]
    assert time.monotonic() - started < 5.0  # ended with the study, not at events_max_s
    assert events[0]["trial_counts"]["total"] == 0 and events[0]["status"] == "running"
    assert any(e["trial_counts"]["running"] == 1 for e in events)
    assert events[-1]["status"] == "succeeded" and events[-1]["trial_counts"]["failed"] == 1
    assert len({e["tag"] for e in events}) == len(events)  # each event is a change
    assert client.get("/api/v1/studies/nope/events").status_code == 404


def test_no_route_returns_a_secret_from_config_argv_or_log(client: TestClient,
                                                            writer: Store) -> None:
    """A study whose config, argv and log carry secrets: every route masks them."""
    name = _name("secrets")
    config = {**CONFIG, "name": name, "fixed_flags": {"api-key": SECRET},
              "storage": {"database_url": f"postgresql://u:{SECRET}@db/x"},
              "launcher": {"env": {"MY_TOKEN": SECRET}}}
    writer.create_study(name, config)
    writer.save_trial(_trial(name, 0, status=TrialStatus.SUCCEEDED, score=1.0,
                             objective_value=1.0, finished_at=utcnow(),
                             log_excerpt=f"starting with api_key={SECRET}",
                             message=f"token {SECRET}"))
    record = _trial(name, 0, status=TrialStatus.SUCCEEDED, score=1.0, objective_value=1.0,
                    finished_at=utcnow(), log_excerpt=f"starting with api_key={SECRET}")
    record.argv = ["vllm", "serve", "m", "--api-key", SECRET, f"--hf-token={SECRET}"]
    record.params = {"max-num-seqs": 32, "api-key": SECRET}
    writer.save_trial(record)
    writer.finish_study(name, "succeeded", 0)
    base = f"/api/v1/studies/{name}"
    for path in ["/api/v1/studies", base, f"{base}/best", f"{base}/trials", f"{base}/trials/0",
                 f"{base}/export/trials", f"{base}/export/trials?format=json",
                 f"{base}/plots", f"/report/studies/{name}", f"/report/studies/{name}/trials/0",
                 f"{base}/progress"]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert SECRET not in response.text, path
    assert "***" in client.get(f"{base}/best").json()["launch_command"]


def test_a_study_without_trials_exports_a_header_and_an_empty_array(client: TestClient,
                                                                    writer: Store) -> None:
    name = _name("empty")
    writer.create_study(name, {**CONFIG, "name": name})
    trials = client.get(f"/api/v1/studies/{name}/export/trials").text.splitlines()
    assert len(trials) == 1 and trials[0].startswith("number,attempt,")
    assert "param.max-num-seqs" in trials[0]
    assert client.get(f"/api/v1/studies/{name}/export/levels?format=json").json() == []
    assert client.get(f"/api/v1/studies/{name}/best").status_code == 404
    plots = client.get(f"/api/v1/studies/{name}/plots").json()
    assert plots["scores"] == [] and plots["importance_method"] == "none"


def test_a_multi_objective_study_shows_its_pareto_front(client: TestClient,
                                                        writer: Store) -> None:
    """The study detail lists the stored Pareto front's trials with one value per
    objective; the report data names the same trial numbers."""
    name = _name("pareto")
    config = {**CONFIG, "name": name, "objective": {
        "metric": "output_throughput", "per_gpu": True,
        "pareto_with": [{"metric": "ttft", "statistic": "p90"}]}}
    writer.create_study(name, config)
    values = {0: [900.0, 120.0], 1: [700.0, 60.0], 2: [600.0, 130.0]}
    for number, objective_values in values.items():
        writer.save_trial(_trial(name, number, status=TrialStatus.SUCCEEDED,
                                 score=objective_values[0], objective_value=objective_values[0],
                                 objective_values=objective_values, finished_at=utcnow()))
    writer.finish_study(name, "succeeded", 0, pareto_front=[0, 1])
    detail = client.get(f"/api/v1/studies/{name}").json()
    front = {t["number"]: t["objective_values"] for t in detail["pareto_front"]}
    assert front == {0: [900.0, 120.0], 1: [700.0, 60.0]}
    plots = client.get(f"/api/v1/studies/{name}/plots").json()
    assert sorted(plots["pareto_front"]) == [0, 1]
