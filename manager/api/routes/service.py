"""The service's own routes: health (no auth) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from common.errors import StoreUnavailable
from manager.api.deps import SharedReader
from manager.api.schemas import HealthOut

health_router = APIRouter(tags=["service"])
router = APIRouter(tags=["service"])


@health_router.get("/healthz", response_model=HealthOut,
                   responses={503: {"model": HealthOut, "description": "database unreachable"}},
                   summary="Liveness and database reachability (never needs a token)")
async def healthz(reader: SharedReader) -> HealthOut | JSONResponse:
    try:
        await run_in_threadpool(reader.ping)
    except StoreUnavailable:
        body = HealthOut(status="unavailable", database="unreachable")
        return JSONResponse(body.model_dump(), status_code=503)
    return HealthOut(status="ok", database="ok")


@router.get("/metrics", response_class=Response, summary="Prometheus metrics of this service",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
