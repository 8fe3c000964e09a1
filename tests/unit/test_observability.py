"""Metric helpers and trace-header plumbing, without a stack."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import propagate
from prometheus_client import REGISTRY

from tollway.events.envelope import Trace, encode, make
from tollway.events.gateway import AttemptFinished
from tollway.runtime.metrics import observe_breaker
from tollway.runtime.outbox import Outgoing
from tollway.runtime.tracing import headers_out, with_causes

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _trips(scope: str) -> float:
    return REGISTRY.get_sample_value("tollway_breaker_trips_total", {"scope": scope}) or 0.0


def _open(scope: str) -> float | None:
    return REGISTRY.get_sample_value("tollway_breakers_open", {"scope": scope})


def test_a_breaker_trip_counts_once_per_opening_and_the_gauge_follows() -> None:
    observe_breaker("ch-unit", "closed", "open")
    observe_breaker("ch-unit", "open", "half_open")
    assert _open("ch-unit") == 0
    observe_breaker("ch-unit", "half_open", "open")
    observe_breaker("ch-unit", "open", "open")
    assert _trips("ch-unit") == 2
    assert _open("ch-unit") == 1


def test_no_trace_headers_without_a_current_context() -> None:
    assert headers_out() == ()


def test_headers_out_carries_the_attached_context() -> None:
    token = otel_context.attach(propagate.extract({"traceparent": PARENT}))
    try:
        assert dict(headers_out())["traceparent"] == PARENT.encode()
    finally:
        otel_context.detach(token)


def _outgoing(request_id: str) -> Outgoing:
    payload = AttemptFinished.model_construct(request_id=request_id)
    return Outgoing("gw.usage", "acct", encode(make(payload, trace=Trace(request_id=request_id))))


def test_emitted_events_take_the_headers_of_their_cause_only() -> None:
    causes = {"req-a": (("traceparent", PARENT.encode()),)}
    traced, untraced = with_causes([_outgoing("req-a"), _outgoing("req-b")], causes)
    assert traced.headers == (("traceparent", PARENT.encode()),)
    assert untraced.headers == ()


def test_with_causes_keeps_existing_headers_and_never_doubles_them() -> None:
    first = with_causes([_outgoing("req-a")], {"req-a": (("traceparent", PARENT.encode()),)})
    again = with_causes(first, {"req-a": (("traceparent", b"00-other-01"),)})
    assert again[0].headers == (("traceparent", PARENT.encode()),)
