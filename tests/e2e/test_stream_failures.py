"""Streams that go wrong: before the first byte (transparent fallback), after it (an error event,
the consumed part settled), and a client that leaves mid-stream (the upstream call stops, the
hold settles to what was streamed, counted and marked estimated when usage never came).
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import wait_for
from tests.e2e.test_openai_sdk import client, settled_receipt
from tollway.events.pricing import Price, Usage, cost_micro

pytestmark = pytest.mark.e2e

PROMPT = [{"role": "user", "content": "Write a long essay about ledgers."}]


def _arm(upstream: httpx.Client, channel: str, kind: str, **extra: Any) -> None:
    response = upstream.post("/_control/faults", json={"channel": channel, "kind": kind, **extra})
    response.raise_for_status()


def _pace(upstream: httpx.Client, channel: str, chunk_delay_ms: int) -> None:
    body = {"channel": channel, "chunk_delay_ms": chunk_delay_ms}
    upstream.post("/_control/latency", json=body).raise_for_status()


def test_failure_before_the_first_byte_falls_back_transparently(
    stack, tenant_factory, upstream
) -> None:
    tenant = tenant_factory({"credit": "10"})
    _arm(upstream, "openai-direct", "status", status=503, count=2)

    with client(stack, tenant.api_key).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=PROMPT, stream=True, stream_options={"include_usage": True}
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())

    assert chunks[-1].usage is not None
    receipt = settled_receipt(stack, tenant.api_key, request_id)
    outcomes = [(a["channel"], a["outcome"], a["status"]) for a in receipt["attempts"]]
    assert outcomes == [
        ("openai-direct", "http_error", 503),
        ("openai-direct", "http_error", 503),
        ("openai-backup", "ok", 200),
    ]
    assert receipt["served_by"] == "openai-backup"
    assert receipt["fallback"] is True
    usage = Usage(
        input_tokens=chunks[-1].usage.prompt_tokens,
        output_tokens=chunks[-1].usage.completion_tokens,
    )
    assert receipt["charged_micro"] == cost_micro(usage, Price(input=150_000, output=600_000))


def test_cut_after_the_first_byte_ends_with_an_error_event_and_settles_the_consumed_part(
    stack, tenant_factory, upstream
) -> None:
    tenant = tenant_factory({"credit": "10"})
    _arm(upstream, "openai-direct", "cut_stream", after_chunks=3)
    received: list[str] = []

    with client(stack, tenant.api_key).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=PROMPT, stream=True, max_tokens=200
    ) as response:
        request_id = response.headers["x-request-id"]

        def consume() -> None:
            for chunk in response.parse():
                received.extend(c.delta.content or "" for c in chunk.choices)

        with pytest.raises(openai.APIError) as caught:
            consume()

    assert "stream" in caught.value.message
    assert received  # the client did get the first part
    receipt = settled_receipt(stack, tenant.api_key, request_id)
    [attempt] = receipt["attempts"]
    assert attempt["channel"] == "openai-direct"
    assert attempt["outcome"] != "ok"
    assert receipt["status"] == "settled"
    assert receipt["usage_estimated"] is True
    assert 0 < receipt["usage"]["output_tokens"] <= 200
    assert receipt["charged_micro"] > 0
    # Booked once, as the tenant's charge: the same tokens are not the operator's loss too.
    assert receipt.get("upstream_loss_micro", 0) == 0
    # The receipt says what the client saw: an error after part of the answer.
    assert receipt["final_status"] == 502
    assert "stream failed" in receipt["error"]
    balance = httpx.get(
        f"{stack.edge_url}/v1/balance", headers={"authorization": f"Bearer {tenant.api_key}"}
    ).json()["buckets"][0]
    assert balance["held_micro"] == 0
    assert balance["available_micro"] == 10_000_000 - receipt["charged_micro"]


def test_anthropic_stream_cut_ends_with_an_error_event(stack, tenant_factory, upstream) -> None:
    tenant = tenant_factory({"credit": "10"})
    _arm(upstream, "anthropic-direct", "cut_stream", after_chunks=2)
    sdk = anthropic.Anthropic(base_url=stack.edge_url, api_key=tenant.api_key, max_retries=0)

    def consume() -> None:
        with sdk.messages.stream(model="claude-3-5-haiku", max_tokens=200, messages=PROMPT) as s:
            for _ in s:
                pass

    with pytest.raises(anthropic.APIStatusError):
        consume()


def test_client_disconnect_stops_the_upstream_and_settles_what_was_streamed(
    stack, tenant_factory, upstream
) -> None:
    tenant = tenant_factory({"credit": "10"})
    _arm(upstream, "openai-direct", "no_usage")
    _pace(upstream, "openai-direct", 100)
    try:
        with client(stack, tenant.api_key).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=PROMPT, stream=True, max_tokens=150
        ) as response:
            request_id = response.headers["x-request-id"]
            stream = iter(response.parse())
            for _ in range(3):
                next(stream)
        # leaving the block closes the connection mid-stream
        receipt = settled_receipt(stack, tenant.api_key, request_id)
    finally:
        _pace(upstream, "openai-direct", 0)

    [attempt] = receipt["attempts"]
    assert attempt["error_class"] == "client_disconnected"
    assert attempt["latency_ms"] < 150 * 100  # stopped long before the whole stream
    assert receipt["usage_estimated"] is True
    assert 0 < receipt["usage"]["output_tokens"] < 150
    held = wait_for(
        lambda: httpx.get(
            f"{stack.edge_url}/v1/balance", headers={"authorization": f"Bearer {tenant.api_key}"}
        ).json()["buckets"][0],
        what="balance",
    )
    assert held["held_micro"] == 0
    assert held["available_micro"] == 10_000_000 - receipt["charged_micro"]
