"""Metrics on every service and trace context through Kafka headers, on the real stack."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from tests.conftest import wait_for
from tollway.devstack.stack import SERVICES
from tollway.events import topics
from tollway.runtime.kafka import partitions_of

pytestmark = pytest.mark.e2e

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def _chat(stack: Any, key: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{stack.edge_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}", **(headers or {})},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=30,
    )


def _metrics(stack: Any, service: str) -> str:
    response = httpx.get(stack.metrics_url(service), timeout=5)
    assert response.status_code == 200
    return response.text


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _serving(stack: Any, service: str) -> str | None:
    try:
        return _metrics(stack, service)
    except httpx.ConnectError:  # the worker is still starting (only the edge is waited for)
        return None


def test_every_service_serves_prometheus_metrics(stack) -> None:
    for service in SERVICES:
        text = wait_for(lambda s=service: _serving(stack, s), what=f"{service} /metrics")
        assert _sample(text, "process_resident_memory_bytes"), service


def test_edge_latency_histogram_is_labelled_by_route_template(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    response = _chat(stack, tenant.api_key)
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    httpx.get(
        f"{stack.edge_url}/v1/receipts/{request_id}",
        headers={"authorization": f"Bearer {tenant.api_key}"},
    )

    text = _metrics(stack, "edge")
    count = "tollway_http_request_duration_seconds_count"
    assert _sample(text, count, method="POST", route="/v1/chat/completions", status="200")
    assert re.search(r'_count\{method="GET",route="/v1/receipts/\{request_id[^"]*\}"', text)
    # Raw paths would make one series per request: ids must never become label values.
    assert request_id not in text


def test_router_counts_upstream_attempts_by_outcome(stack, tenant_factory, upstream) -> None:
    tenant = tenant_factory({"credit": "10"})
    name = "tollway_upstream_attempts_total"
    before = _sample(_metrics(stack, "router"), name, channel="openai-direct", outcome="http_error")
    upstream.post(
        "/_control/faults", json={"channel": "openai-direct", "kind": "status", "status": 503}
    )

    assert _chat(stack, tenant.api_key).status_code == 200  # the retry succeeds

    text = _metrics(stack, "router")
    failed = _sample(text, name, channel="openai-direct", outcome="http_error")
    assert failed == (before or 0) + 1
    assert _sample(text, name, channel="openai-direct", outcome="ok")


def test_ledger_exports_lag_and_open_holds(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    assert _chat(stack, tenant.api_key).status_code == 200

    def exported() -> str | None:
        text = _metrics(stack, "ledger")
        wanted = (
            _sample(text, "tollway_consumer_lag", group="ledger", topic=topics.USAGE) is not None
            and _sample(text, "tollway_projection_lag_seconds", group="ledger") is not None
            and _sample(text, "tollway_open_holds") is not None
        )
        return text if wanted else None

    text = wait_for(exported, what="ledger lag and hold metrics")
    applied = _sample(text, "tollway_events_applied_total", group="ledger", type="request.received")
    assert applied is not None
    assert applied >= 1


def _traced_messages(bootstrap: str, topic: str, request_id: str) -> list[tuple[str, bytes]]:
    """Headers of every message on ``topic`` (all partitions, start to end) for the request."""

    async def read() -> list[tuple[str, bytes]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        await consumer.start()
        try:
            partitions = await partitions_of(consumer, topic)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            found: list[tuple[str, bytes]] = []
            # Read to the end offsets seen now: one fetch returns only a slice of a long log.
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                for records in batches.values():
                    for m in records:
                        try:
                            trace = orjson.loads(m.value).get("trace") or {}
                        except orjson.JSONDecodeError:
                            continue  # a poison message another test put in the log
                        if trace.get("request_id") == request_id:
                            found.extend(m.headers or [("none", b"")])
            return found
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_client_trace_context_travels_through_every_topic(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    response = _chat(stack, tenant.api_key, {"traceparent": TRACEPARENT})
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]

    for topic in (topics.REQUESTS, topics.AUTHORIZED, topics.USAGE):
        headers = wait_for(
            lambda t=topic: _traced_messages(stack.bootstrap, t, request_id),
            what=f"{topic} messages of the request",
        )
        parents = [v.decode() for k, v in headers if k == "traceparent"]
        assert parents, f"{topic} carried no traceparent"
        assert all(re.fullmatch(f"00-{TRACE_ID}-[0-9a-f]{{16}}-01", p) for p in parents), topic


def test_requests_without_trace_context_carry_no_trace_headers(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    response = _chat(stack, tenant.api_key)
    request_id = response.headers["x-request-id"]

    headers = wait_for(
        lambda: _traced_messages(stack.bootstrap, topics.USAGE, request_id), what="usage events"
    )
    assert not [k for k, _ in headers if k == "traceparent"]
