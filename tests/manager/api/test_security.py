"""Authentication, strict query validation, CORS and settings of the read API."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from common.errors import ConfigError, StoreUnavailable
from manager.api.settings import ApiSettings
from tests.manager.api.conftest import STUDY, TOKEN, make_app
from tests.pg import PostgresCluster

pytestmark = [pytest.mark.integration]
API = f"/api/v1/studies/{STUDY}"
GUARDED = ["/api/v1/studies", API, f"{API}/best", f"{API}/progress", f"{API}/trials",
           f"{API}/trials/0", f"{API}/export/trials", f"{API}/export/levels", f"{API}/plots",
           "/report", f"/report/studies/{STUDY}", f"/report/studies/{STUDY}/table",
           f"/report/studies/{STUDY}/trials/0", "/static/plotly.min.js", "/static/report.js",
           "/metrics", "/api/v1/openapi.json"]


@pytest.mark.parametrize("path", GUARDED)
def test_every_route_but_healthz_needs_the_token(auth_client: TestClient, path: str) -> None:
    """With a token configured: no token or a wrong one is 401 (with a Bearer challenge),
    the right one is served."""
    missing = auth_client.get(path)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = auth_client.get(path, headers={"Authorization": "Bearer " + "y" * len(TOKEN)})
    assert wrong.status_code == 401
    assert auth_client.get(path, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    ok = auth_client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200, ok.text


def test_healthz_needs_no_token_and_auth_off_needs_none(auth_client: TestClient,
                                                        client: TestClient) -> None:
    assert auth_client.get("/healthz").status_code == 200
    assert client.get(API).status_code == 200
    # A non-ASCII token must be refused, not crash the comparison.
    assert auth_client.get(API, headers={"Authorization": "Bearer é".encode()}).status_code == 401


@pytest.mark.parametrize("query", [
    "/api/v1/studies?limit=0", "/api/v1/studies?limit=201", "/api/v1/studies?limit=abc",
    "/api/v1/studies?offset=-1", "/api/v1/studies?offset=99999999999999999999999",
    "/api/v1/studies?status=sleeping", "/api/v1/studies?name_contains=%25%00",
    f"{API}/trials?limit=501", f"{API}/trials?offset=-5", f"{API}/trials?sort=password",
    f"{API}/trials?sort=score;drop", f"{API}/trials?order=sideways",
    f"{API}/trials?status=done", f"{API}/trials?reason=bored", f"{API}/trials?all_attempts=2",
    f"{API}/trials/-1", f"{API}/trials/99999999999", f"{API}/trials/x",
    f"{API}/trials/0?attempt=-1", f"{API}/export/trials?format=xml",
    "/api/v1/studies/bad%20name", "/api/v1/studies/%00", "/api/v1/studies/-lead",
    f"/api/v1/studies/{'x' * 65}",
])
def test_bad_query_parameters_are_422_never_500(client: TestClient, query: str) -> None:
    response = client.get(query)
    assert response.status_code == 422, response.text


def test_cors_is_off_unless_configured(api_database: str, client: TestClient) -> None:
    """No CORS headers by default; a configured origin is allowed, others are not."""
    origin = {"Origin": "https://dash.example"}
    assert "access-control-allow-origin" not in client.get(API, headers=origin).headers
    with TestClient(make_app(api_database, cors_origins=("https://dash.example",))) as c:
        assert c.get(API, headers=origin).headers[
            "access-control-allow-origin"] == "https://dash.example"
        other = c.get(API, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_settings_refuse_wildcard_cors_with_credentials_and_short_tokens() -> None:
    with pytest.raises(ConfigError, match="credentials"):
        ApiSettings.from_env({"SERVETUNE_DATABASE_URL": "sqlite:///x.db",
                              "SERVETUNE_API_CORS_ORIGINS": "*",
                              "SERVETUNE_API_CORS_CREDENTIALS": "true"})
    with pytest.raises(ConfigError, match="at least 16"):
        ApiSettings.from_env({"SERVETUNE_DATABASE_URL": "sqlite:///x.db",
                              "SERVETUNE_API_TOKEN": "short"})
    settings = ApiSettings.from_env({"SERVETUNE_DATABASE_URL": "sqlite:///x.db"})
    assert settings.host == "127.0.0.1" and settings.token is None
    assert settings.cors_origins == ()


def test_an_empty_database_is_refused_at_start(postgres_cluster: PostgresCluster) -> None:
    """The API does not create or migrate a schema: an empty database fails create_app."""
    url = postgres_cluster.create_database("api_empty")
    with pytest.raises(StoreUnavailable, match="no servetune schema"):
        make_app(url)
