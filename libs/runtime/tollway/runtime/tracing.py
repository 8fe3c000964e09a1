"""Trace context across HTTP and Kafka: W3C ``traceparent`` in message headers.

Only the OpenTelemetry API is used, so with no SDK installed nothing is recorded or exported and
the context a client sent (``traceparent``) is carried unchanged from the edge through
gw.requests, the ledger's outbox, gw.authorized and the router's gw.usage and replies. Installing
an SDK and exporter (and ``TOLLWAY_TRACING=1``) turns the same spans into recorded ones.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from tollway.runtime.outbox import Outgoing

log = structlog.get_logger(__name__)

TRACE_HEADERS = ("traceparent", "tracestate")
Headers = tuple[tuple[str, bytes], ...]

_tracer = trace.get_tracer("tollway")


def setup_tracing(service: str) -> None:
    """Record spans when ``TOLLWAY_TRACING`` is set and the OpenTelemetry SDK is installed."""
    if os.environ.get("TOLLWAY_TRACING", "").lower() not in {"1", "true", "yes"}:
        return
    try:
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415 - optional extra
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
            BatchSpanProcessor,
            ConsoleSpanExporter,
        )
    except ImportError:
        log.warning("tracing_unavailable", hint="install opentelemetry-sdk to record spans")
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"tollway-{service}"}))
    if os.environ.get("OTEL_TRACES_EXPORTER") == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing_enabled", service=service)


def headers_out() -> Headers:
    """The current trace context as Kafka headers (empty when there is none)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple((k, v.encode()) for k, v in carrier.items() if k in TRACE_HEADERS)


def _carrier(headers: Iterable[tuple[str, bytes | str]] | None) -> dict[str, str]:
    return {
        k.lower(): v.decode("latin-1") if isinstance(v, bytes) else v
        for k, v in headers or ()
        if k.lower() in TRACE_HEADERS
    }


@contextlib.contextmanager
def span_from(
    name: str, headers: Iterable[tuple[str, bytes | str]] | None, kind: trace.SpanKind
) -> Iterator[None]:
    """Run the block in a span whose parent is the context carried in ``headers``."""
    parent = propagate.extract(_carrier(headers))
    token = otel_context.attach(parent)
    try:
        with _tracer.start_as_current_span(name, kind=kind):
            yield
    finally:
        otel_context.detach(token)


def with_causes(
    outgoing: Sequence[Outgoing], causes: dict[str, Headers], key: str = "request_id"
) -> list[Outgoing]:
    """Give each outgoing event the trace headers of the consumed event of the same request.

    A batch consumer applies many requests at once, so there is no single current context: the
    envelope's ``trace.request_id`` ties an emitted event to the record that caused it.
    """
    if not causes:
        return list(outgoing)
    out: list[Outgoing] = []
    for item in outgoing:
        headers = causes.get(_trace_id_of(item.value, key) or "")
        if headers and not any(k in TRACE_HEADERS for k, _ in item.headers):
            item = type(item)(item.topic, item.key, item.value, (*item.headers, *headers))  # noqa: PLW2901 - a new frozen value
        out.append(item)
    return out


def _trace_id_of(value: bytes, key: str) -> str | None:
    try:
        data: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    trace_part = data.get("trace") if isinstance(data, dict) else None
    found = trace_part.get(key) if isinstance(trace_part, dict) else None
    return found if isinstance(found, str) else None


class HttpTracing:
    """ASGI wrapper: each HTTP request runs in a server span continuing the caller's context."""

    def __init__(self, app: Any) -> None:
        """Wrap ``app``."""
        self._app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Attach the ``traceparent`` the client sent (if any) for the request's duration."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = [(k.decode("latin-1"), v) for k, v in scope.get("headers", ())]
        with span_from(f"HTTP {scope.get('method', '')}", headers, trace.SpanKind.SERVER):
            await self._app(scope, receive, send)
