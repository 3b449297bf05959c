"""Prometheus metrics of the API service itself: requests and their latency, per route.

Each app has its own registry (several apps in one process, as in tests, do not collide).
Routes are labelled by their template (``/api/v1/studies/{name}``), never by the raw path,
so the label set stays bounded whatever clients send.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROUTE_KEY = "servetune.route"

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class ServiceMetrics:
    """The collectors, registered on a fresh registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("servetune_api_requests", "HTTP requests served",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("servetune_api_request_duration_seconds",
                                 "Time to the end of the response (streams included)",
                                 ["method", "route"], buckets=LATENCY_BUCKETS_S,
                                 registry=self.registry)
        self.in_flight = Gauge("servetune_api_requests_in_flight",
                               "Requests being served now", registry=self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (no buffering, so event streams pass through untouched)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get(ROUTE_KEY) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


def route_label(prefix: str) -> Callable[[Request], None]:
    """A dependency recording the matched route's template (with the ``prefix`` its router
    is included under) for the middleware's labels."""

    def label(request: Request) -> None:
        route = request.scope.get("route")
        request.scope[ROUTE_KEY] = prefix + str(getattr(route, "path", ""))

    return label
