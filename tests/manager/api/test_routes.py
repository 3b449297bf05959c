"""Every route of the read API against a real PostgreSQL holding a real simulated study."""

from __future__ import annotations

import csv
import io
import json
import shlex

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.manager.api.conftest import STUDY, STUDY_FILE

pytestmark = [pytest.mark.integration, pytest.mark.slow]
API = f"/api/v1/studies/{STUDY}"


def test_studies_list_has_the_run_with_counts_best_score_and_pagination(
        client: TestClient) -> None:
    """The list shows the study's status, trial counts by latest attempt and best score, and
    pages as ``{data, count}``."""
    body = client.get("/api/v1/studies").json()
    assert set(body) == {"data", "count"} and body["count"] >= 1
    study = next(s for s in body["data"] if s["name"] == STUDY)
    assert study["status"] == "succeeded" and study["engine"] == "vllm" and study["simulated"]
    counts = study["trial_counts"]
    assert counts["failed"] == 2 and counts["succeeded"] >= 2 and counts["running"] == 0
    assert counts["total"] == counts["failed"] + counts["succeeded"]
    trials = client.get(f"{API}/trials", params={"limit": 500}).json()["data"]
    best = max(t["score"] for t in trials if t["status"] == "succeeded")
    assert study["best_score"] == pytest.approx(best)
    assert study["objective"]["metric"] == "output_throughput"
    assert client.get("/api/v1/studies", params={"name_contains": "api-gr"}).json()["count"] >= 1
    assert client.get("/api/v1/studies", params={"name_contains": "zz-none"}).json() == {
        "data": [], "count": 0}
    assert all(s["status"] == "running" for s in
               client.get("/api/v1/studies", params={"status": "running"}).json()["data"])
    page = client.get("/api/v1/studies", params={"limit": 1, "offset": 0}).json()
    assert len(page["data"]) == 1 and page["count"] == body["count"]


def test_study_detail_has_config_as_submitted_progress_and_best_trial(
        client: TestClient) -> None:
    """One study: the submitted config, progress, the best trial with its levels; no Pareto
    front for a single-objective study."""
    detail = client.get(API).json()
    assert detail["config"]["name"] == STUDY
    assert set(detail["config"]["search_space"]) == set(STUDY_FILE["search_space"])  # type: ignore[arg-type]
    assert detail["progress"]["status"] == "succeeded" and detail["progress"]["tag"]
    best = detail["best_trial"]
    assert best["number"] == detail["best_trial_number"] and best["status"] == "succeeded"
    assert sorted(lv["concurrency"] for lv in best["levels"]) == [2, 4]
    assert detail["pareto_front"] is None


def test_trials_filter_sort_and_paginate(client: TestClient) -> None:
    """Filters by status and reason, sorts by a trial column and by a benchmark metric
    (trials without runs last), pages with a total count."""
    everything = client.get(f"{API}/trials").json()
    assert everything["count"] == len(everything["data"]) >= 4
    failed = client.get(f"{API}/trials", params={"status": "failed"}).json()
    assert failed["count"] == 2 and {t["reason"] for t in failed["data"]} == {
        "infeasible_config"}
    by_reason = client.get(f"{API}/trials", params={"reason": "infeasible_config"}).json()
    assert by_reason["count"] == 2
    assert client.get(f"{API}/trials", params={"reason": "node_lost"}).json()["count"] == 0
    scores = [t["score"] for t in client.get(
        f"{API}/trials", params={"sort": "score", "order": "desc"}).json()["data"]]
    assert scores == sorted(scores, reverse=True)
    by_tput = client.get(f"{API}/trials", params={"sort": "output_tokens_per_s",
                                                  "order": "desc"}).json()["data"]
    values = [t["metrics"].get("output_tokens_per_s") for t in by_tput]
    present = [v for v in values if v is not None]
    assert present == sorted(present, reverse=True) and values[-1] is None
    page = client.get(f"{API}/trials", params={"limit": 2, "offset": 1}).json()
    assert page["count"] == everything["count"]
    assert [t["number"] for t in page["data"]] == [
        t["number"] for t in everything["data"][1:3]]


def test_trial_detail_of_a_failed_and_a_succeeded_trial(client: TestClient) -> None:
    """One trial: params, argv and its shell form, GPU ids, node, phase timings, levels;
    a failed one has its reason and the engine's log excerpt."""
    failed_number = client.get(f"{API}/trials", params={"status": "failed"}).json()[
        "data"][0]["number"]
    failed = client.get(f"{API}/trials/{failed_number}").json()
    assert failed["reason"] == "infeasible_config" and failed["levels"] == []
    assert "memory" in failed["log_excerpt"].lower()  # the engine's own OOM message
    best_number = client.get(API).json()["best_trial_number"]
    trial = client.get(f"{API}/trials/{best_number}").json()
    assert trial["argv"] and trial["launch_command"] == shlex.join(trial["argv"])
    assert len(trial["gpu_ids"]) == trial["num_gpus"] == trial["params"].get(
        "tensor-parallel-size", 1)
    assert trial["node"] and trial["phase_timings_s"]["startup_s"] > 0
    assert trial["attempts"] == [0]
    level = trial["levels"][0]
    assert level["num_completed"] > 0 and level["output_tokens_per_s"] > 0
    assert level["ttft_ms"]["p95"] > 0
    assert client.get(f"{API}/trials/{best_number}", params={"attempt": 0}).status_code == 200
    assert client.get(f"{API}/trials/{best_number}", params={"attempt": 7}).status_code == 404
    assert client.get(f"{API}/trials/9999").status_code == 404


def test_best_config_as_launch_command_and_yaml(client: TestClient) -> None:
    """The best config: the winner's flags, argv as one shell line, and a YAML snippet."""
    best = client.get(f"{API}/best").json()
    assert best["trial_number"] == client.get(API).json()["best_trial_number"]
    assert shlex.split(best["launch_command"]) == best["argv"]
    snippet = yaml.safe_load(best["yaml"])
    assert snippet["flags"] == best["flags"] and snippet["argv"] == best["argv"]
    assert best["flags"]["tensor-parallel-size"] == best["params"]["tensor-parallel-size"]


def test_exports_in_csv_and_json(client: TestClient) -> None:
    """Trials and per-level metrics export as CSV (with a header) and as JSON arrays with
    the same rows."""
    response = client.get(f"{API}/export/trials")
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    as_json = client.get(f"{API}/export/trials", params={"format": "json"}).json()
    assert len(rows) == len(as_json) >= 4
    assert {"param.tensor-parallel-size", "score", "launch_command"} <= set(rows[0])
    assert [int(r["number"]) for r in rows] == [t["number"] for t in as_json]
    levels = list(csv.DictReader(io.StringIO(client.get(f"{API}/export/levels").text)))
    levels_json = client.get(f"{API}/export/levels", params={"format": "json"}).json()
    succeeded = sum(1 for t in as_json if t["status"] == "succeeded")
    assert len(levels) == len(levels_json) == 2 * succeeded
    assert {"concurrency", "ttft_ms_p95", "output_tokens_per_s"} <= set(levels[0])


def test_plots_data_has_scores_best_so_far_top_trials_and_param_effects(
        client: TestClient) -> None:
    """The report's data: one point per trial with a monotone best-so-far line, levels of
    the top trials, and an effect for every param."""
    plots = client.get(f"{API}/plots").json()
    best = [p["best_so_far"] for p in plots["scores"] if p["best_so_far"] is not None]
    assert best == sorted(best)  # a maximized objective only grows
    assert plots["top_trials"] and all(t["levels"] for t in plots["top_trials"])
    assert {e["param"] for e in plots["param_effects"]} >= {"tensor-parallel-size"}
    assert plots["pareto_front"] is None


def test_healthz_and_prometheus_metrics(client: TestClient) -> None:
    """/healthz pings the database; /metrics counts requests by route template."""
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    client.get(f"{API}/trials/0")
    text = client.get("/metrics").text
    assert 'route="/api/v1/studies/{name}/trials/{number}"' in text
    assert "servetune_api_request_duration_seconds_bucket" in text


def test_report_pages_render_server_side(client: TestClient) -> None:
    """The report index, study page, table fragment and trial page are HTML that links the
    trials and shows launch commands; plotly.js comes from this server."""
    index = client.get("/report")
    assert index.status_code == 200 and f"/report/studies/{STUDY}" in index.text
    page = client.get(f"/report/studies/{STUDY}").text
    assert '<script src="/static/plotly.min.js">' in page and 'id="plot-scores"' in page
    assert f"/report/studies/{STUDY}/trials/" in page
    assert "worker.sim" in client.get(f"/report/studies/{STUDY}/table").text
    trial = client.get(f"/report/studies/{STUDY}/trials/0")
    assert trial.status_code == 200 and "Benchmark runs" in trial.text
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    assert client.get("/static/report.js").status_code == 200
    assert client.get("/static/nope.js").status_code == 404
    assert client.get("/", follow_redirects=False).headers["location"] == "/report"


def test_openapi_documents_every_route_under_api_v1(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    paths = set(spec["paths"])
    assert {"/api/v1/studies", "/api/v1/studies/{name}", "/api/v1/studies/{name}/trials",
            "/api/v1/studies/{name}/trials/{number}", "/api/v1/studies/{name}/best",
            "/api/v1/studies/{name}/export/trials", "/api/v1/studies/{name}/export/levels",
            "/api/v1/studies/{name}/progress", "/api/v1/studies/{name}/events",
            "/healthz", "/metrics"} <= paths
    assert "HTTPBearer" in json.dumps(spec["components"]["securitySchemes"])
