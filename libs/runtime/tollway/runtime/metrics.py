"""Prometheus metrics every service exports on ``TOLLWAY_METRICS_PORT`` at ``/metrics``.

The metrics are process-wide objects (prometheus_client's registry); a service exports only what
it touches, plus the process collectors (RSS, CPU, open fds). Nothing here is read back by the
services: a projection never depends on a metric, and a metric's wall-clock reading (projection
lag) never feeds a decision.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from tollway.runtime.tracing import setup_tracing

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


log = structlog.get_logger(__name__)

# Gateway overhead is milliseconds, upstream calls are seconds: buckets cover both.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_REQUEST_SECONDS = Histogram(
    "tollway_http_request_duration_seconds",
    "HTTP requests served, by method, route template and status.",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_ATTEMPTS = Counter(
    "tollway_upstream_attempts",
    "Upstream attempts by channel, route type and outcome (ok, http_error, timeout, ...).",
    ["channel", "route_type", "outcome"],
)
UPSTREAM_ATTEMPT_SECONDS = Histogram(
    "tollway_upstream_attempt_duration_seconds",
    "Upstream attempt latency by channel and outcome.",
    ["channel", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "tollway_consumer_lag",
    "Messages behind the partition's end after the last applied batch.",
    ["group", "topic", "partition"],
)
PROJECTION_LAG = Gauge(
    "tollway_projection_lag_seconds",
    "Age of the newest event applied by a group (now minus its occurred_at).",
    ["group"],
)
EVENTS_APPLIED = Counter(
    "tollway_events_applied",
    "Events applied by a consumer group, by event type (breaker trips: type breaker.tripped).",
    ["group", "type"],
)
DEAD_LETTERED = Counter(
    "tollway_dead_lettered", "Poison messages sent to a dead-letter topic.", ["topic"]
)
BREAKER_TRIPS = Counter(
    "tollway_breaker_trips",
    "Circuit breakers opening (a closed or half-open breaker tripping), by scope.",
    ["scope"],
)
BREAKERS_OPEN = Gauge("tollway_breakers_open", "Breakers open right now, by scope.", ["scope"])
BATCH_APPLY_SECONDS = Histogram(
    "tollway_batch_apply_duration_seconds",
    "One consumed batch applied and committed in Postgres (offsets with effects), by group.",
    ["group"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_RECORDS = Histogram(
    "tollway_batch_records",
    "Records per consumed batch, by group.",
    ["group"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)
OUTBOX_PUBLISH_SECONDS = Histogram(
    "tollway_outbox_publish_duration_seconds",
    "Committed outbox rows published to Kafka and acknowledged, by schema.",
    ["schema"],
    buckets=_LATENCY_BUCKETS,
)
OPEN_HOLDS = Gauge("tollway_open_holds", "Holds placed and not yet settled, released or expired.")


def start_metrics_server(port: int | None, host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside the pod
    """Serve ``/metrics`` on ``port`` in a background thread; ``None`` or 0 leaves it off."""
    if not port:
        return
    start_http_server(port, addr=host)
    log.info("metrics_serving", port=port)


def start_observability(service: str, metrics_port: int | None) -> None:
    """Per process, once: the metrics endpoint and (when enabled) span recording."""
    setup_tracing(service)
    start_metrics_server(metrics_port)


def observe_attempt(channel: str, route_type: str, outcome: str, latency_ms: int) -> None:
    """Count one upstream attempt (failed ones included) and its latency."""
    UPSTREAM_ATTEMPTS.labels(channel, route_type, outcome).inc()
    UPSTREAM_ATTEMPT_SECONDS.labels(channel, outcome).observe(latency_ms / 1000)


def observe_breaker(scope: str, from_state: str, to_state: str) -> None:
    """Record a breaker transition: a trip when it opens; the open gauge follows both ways."""
    if to_state == "open" and from_state != "open":
        BREAKER_TRIPS.labels(scope).inc()
        BREAKERS_OPEN.labels(scope).set(1)
    elif to_state != "open":
        BREAKERS_OPEN.labels(scope).set(0)


class HttpMetrics:
    """ASGI wrapper: time every HTTP request by its route template (never the raw path)."""

    def __init__(self, app: Any) -> None:
        """Wrap ``app``."""
        self._app = app

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any
    ) -> None:
        """Pass through, recording the status and the duration of HTTP requests."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, record_status)
        finally:
            # Litestar writes the matched template into the scope; unmatched paths share a label
            # so that scanners cannot blow up the series count.
            route = scope.get("path_template") or "unmatched"
            with contextlib.suppress(ValueError):
                HTTP_REQUEST_SECONDS.labels(scope.get("method", ""), route, str(status)).observe(
                    time.perf_counter() - started
                )
