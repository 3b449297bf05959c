"""``create_app(settings)``: the read API's FastAPI application.

Routes: ``/api/v1/...`` (JSON, documented at ``/api/v1/openapi.json``), ``/report/...``
(HTML), ``/static/...`` (the report's assets), ``/healthz`` (no token) and ``/metrics``
(Prometheus). Errors are mapped to HTTP here and only here: ``NotFound`` → 404,
``StoreUnavailable`` → 503, a bad query → 422 (FastAPI's validation).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from common.errors import StoreUnavailable
from common.store.readonly import StoreReader
from manager.api.deps import NotFound, require_token
from manager.api.effects import EffectsCache
from manager.api.metrics import MetricsMiddleware, ServiceMetrics, route_label
from manager.api.routes import exports, report, service, studies, trials
from manager.api.schemas import ErrorOut
from manager.api.settings import ApiSettings

logger = logging.getLogger(__name__)
API_PREFIX = "/api/v1"
OPENAPI_URL = f"{API_PREFIX}/openapi.json"
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or wrong bearer token"},
    404: {"model": ErrorOut, "description": "no such study or trial"},
    503: {"model": ErrorOut, "description": "the database is unavailable"},
}


def create_app(settings: ApiSettings, reader: StoreReader | None = None) -> FastAPI:
    """The application over ``settings.database_url`` (opened read-only now, so a missing
    or unmigrated database fails here with ``StoreUnavailable``), or over ``reader``, which
    the caller then owns. The app closes a reader it opened when it shuts down."""
    owned = reader is None
    store = reader if reader is not None else StoreReader.open(
        settings.database_url, statement_timeout_s=settings.statement_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            store.close()

    app = FastAPI(title="servetune", version="1", lifespan=lifespan,
                  description="Read-only results of servetune studies: studies, trials, "
                  "benchmark runs, exports, live progress and an HTML report.",
                  root_path=settings.root_path, openapi_url=None, docs_url=None,
                  redoc_url=None)
    app.state.settings = settings
    app.state.reader = store
    app.state.metrics = ServiceMetrics()
    app.state.effects = EffectsCache()

    # The label first: a request refused by the token check is still counted by route.
    top = [Depends(route_label(""))]
    guarded = [*top, Depends(require_token)]
    app.include_router(service.health_router, dependencies=top)
    app.include_router(service.router, dependencies=guarded)
    api = [Depends(route_label(API_PREFIX)), Depends(require_token)]
    for router in (studies.router, trials.router, exports.router, report.api_router):
        app.include_router(router, prefix=API_PREFIX, dependencies=api, responses=_ERRORS)
    app.include_router(report.router, dependencies=guarded, responses=_ERRORS)
    app.include_router(report.assets_router, dependencies=guarded)

    @app.get(OPENAPI_URL, include_in_schema=False, dependencies=guarded)
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(title=app.title, version=app.version,
                                             description=app.description, routes=app.routes)
        return app.openapi_schema

    _add_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_credentials=settings.cors_allow_credentials,
                           allow_methods=["GET"], allow_headers=["Authorization"],
                           expose_headers=["ETag"])
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def app_from_env() -> FastAPI:
    """The app with settings from the environment, for several worker processes::

        uvicorn --factory manager.api.app:app_from_env --workers 4 --host 127.0.0.1
    """
    return create_app(ApiSettings.from_env())


def _add_error_handlers(app: FastAPI) -> None:
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("read API: %s", exc)
        return JSONResponse({"detail": "the results database is unavailable; retry later"},
                            status_code=503, headers={"Retry-After": "5"})

    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(StoreUnavailable, unavailable)
