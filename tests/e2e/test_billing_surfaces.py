"""Token classes billed right and the cost on every answer, through the official SDKs.

Each test builds its own channel with a price per token class, calls it, and checks that the
receipt's classes and amount equal a hand computation from the usage the SDK received and the
channel's prices; and that the answer itself states the charge (headers, ``usage.cost``, the
last event of a stream, OpenRouter's generation record).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.route_kit import admin_client, new_channel, new_model
from tests.e2e.test_openai_sdk import settled_receipt

pytestmark = pytest.mark.e2e

# Per 1M tokens, in the bucket's unit.
PRICES = {
    "input": "3",
    "output": "15",
    "cached_input": "0.3",
    "cache_write": "3.75",
    "cache_write_1h": "6",
    "reasoning": "20",
}
MICRO = {name: int(float(value) * 1_000_000) for name, value in PRICES.items()}


def _route(stack: Any, demo: str, upstream_model: str, **fields: Any) -> str:
    with admin_client(stack) as admin:
        channel = new_channel(admin, stack, demo, prices=PRICES, **fields)
        return new_model(admin, [{"channel_id": channel, "upstream_model": upstream_model}])


def _hand_cost(classes: dict[str, int]) -> int:
    exact = sum(tokens * MICRO[name] for name, tokens in classes.items())
    return -(-exact // 1_000_000)


def _receipt_classes(receipt: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {c["class"]: (c["tokens"], c["price_per_1m_micro"]) for c in receipt["token_classes"]}


def _anthropic(stack: Any, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.edge_url, api_key=key, max_retries=0)


@pytest.mark.parametrize("ttl", ["5m", "1h"])
def test_anthropic_cache_writes_then_reads_are_billed_at_their_prices(
    stack, tenant_factory, ttl
) -> None:
    tenant = tenant_factory({"credit": "10"})
    model = _route(stack, "anthropic-direct", "claude-sonnet-4-5", adapter="anthropic")
    control: dict[str, Any] = {"type": "ephemeral", "ttl": ttl}
    system = [{"type": "text", "text": f"{uuid.uuid4()} " + "handbook " * 300}]
    system[0]["cache_control"] = control
    client = _anthropic(stack, tenant.api_key)
    write_class = "cache_write_1h" if ttl == "1h" else "cache_write"
    for expected in (write_class, "cached_input"):
        raw = client.messages.with_raw_response.create(
            model=model,
            max_tokens=64,
            system=system,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "What does the handbook say?"}],
        )
        usage = raw.parse().usage
        written = usage.cache_creation_input_tokens or 0
        read = usage.cache_read_input_tokens or 0
        assert (written if expected == write_class else read) > 300
        classes = {
            "input": usage.input_tokens,
            write_class: written,
            "cached_input": read,
            "output": usage.output_tokens,
        }
        receipt = settled_receipt(stack, tenant.api_key, raw.headers["x-request-id"])
        assert _receipt_classes(receipt) == {
            name: (tokens, MICRO[name]) for name, tokens in classes.items() if tokens
        }
        assert receipt["charged_micro"] == _hand_cost(classes)
        assert raw.headers["x-tollway-cost"] == f"{_hand_cost(classes) / 1e6:.6f}"
        assert raw.headers["x-tollway-bucket"] == "credit"
        assert raw.headers["x-tollway-request-id"] == raw.headers["x-request-id"]


def test_reasoning_and_cached_openai_tokens_are_billed_at_their_prices(
    stack, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "10"})
    model = _route(stack, "openai-direct", "o4-mini")
    client = openai.OpenAI(base_url=f"{stack.edge_url}/v1", api_key=tenant.api_key, max_retries=0)
    messages = [
        {"role": "system", "content": f"{uuid.uuid4()} " + "rules " * 300},
        {"role": "user", "content": "Go."},
    ]
    for turn in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            max_completion_tokens=400,
            prompt_cache_key="billing-test",
            extra_body={"usage": {"include": True}},
        )
        completion = raw.parse()
        usage = completion.usage
        assert usage is not None
        cached = usage.prompt_tokens_details.cached_tokens or 0  # type: ignore[union-attr]
        reasoning = usage.completion_tokens_details.reasoning_tokens or 0  # type: ignore[union-attr]
        assert reasoning > 0
        assert (cached > 0) == (turn == 1)
        classes = {
            "input": usage.prompt_tokens - cached,
            "cached_input": cached,
            "output": usage.completion_tokens - reasoning,
            "reasoning": reasoning,
        }
        receipt = settled_receipt(stack, tenant.api_key, raw.headers["x-request-id"])
        assert receipt["charged_micro"] == _hand_cost(classes)
        assert _receipt_classes(receipt) == {
            name: (tokens, MICRO[name]) for name, tokens in classes.items() if tokens
        }
        # OpenRouter's usage.cost, asked for with usage.include, in the bucket's unit.
        assert completion.usage.model_extra["cost"] == pytest.approx(_hand_cost(classes) / 1e6)  # type: ignore[union-attr]


def _sse(response: httpx.Response) -> list[tuple[str | None, str]]:
    events, event = [], None
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            events.append((event, line[5:].strip()))
            event = None
    return events


@pytest.mark.parametrize(
    ("path", "demo", "adapter", "body"),
    [
        (
            "/v1/chat/completions",
            "openai-direct",
            "openai",
            {"messages": [{"role": "user", "content": "hi"}]},
        ),
        (
            "/v1/messages",
            "anthropic-direct",
            "anthropic",
            {"max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
        ),
        (
            "/v1/messages",
            "openai-direct",
            "openai",
            {"max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
        ),
    ],
)
def test_the_last_event_of_a_stream_states_the_charge(
    stack, tenant_factory, path, demo, adapter, body
) -> None:
    tenant = tenant_factory({"credit": "10"})
    model = _route(stack, demo, "demo-model", adapter=adapter)
    with httpx.stream(
        "POST",
        f"{stack.edge_url}{path}",
        headers={"authorization": f"Bearer {tenant.api_key}"},
        json={"model": model, "stream": True, **body},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-tollway-request-id"]
        events = _sse(response)
    receipt = settled_receipt(stack, tenant.api_key, request_id)
    if path == "/v1/messages":
        assert events[-1][0] == "message_stop"
        cost = json.loads(events[-1][1])["tollway"]
    else:
        # [DONE] stays last; the chunk before it (the finish chunk) carries the charge.
        assert events[-1][1] == "[DONE]"
        last = json.loads(events[-2][1])
        assert last["choices"][0]["finish_reason"] == "stop"
        cost = last["tollway"]
        # The client did not ask for usage: the upstream's usage chunk was not relayed.
        assert all('"usage":{' not in data for _, data in events)
    assert cost["cost_micro"] == receipt["charged_micro"] > 0
    assert cost["bucket"] == "credit"
    assert receipt["usage_estimated"] is False


def test_generation_is_the_receipt_in_openrouters_shape(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    model = _route(stack, "openai-direct", "gpt-4o-mini")
    auth = {"authorization": f"Bearer {tenant.api_key}"}
    answer = httpx.post(
        f"{stack.edge_url}/v1/chat/completions",
        headers=auth,
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    request_id = answer.headers["x-tollway-request-id"]
    receipt = settled_receipt(stack, tenant.api_key, request_id)
    got = httpx.get(f"{stack.edge_url}/api/v1/generation", params={"id": request_id}, headers=auth)
    assert got.status_code == 200
    data = got.json()["data"]
    assert data["id"] == request_id
    assert data["model"] == model
    assert data["total_cost_micro"] == receipt["charged_micro"]
    assert f"{data['total_cost']:.6f}" == answer.headers["x-tollway-cost"]
    assert data["tokens_prompt"] == answer.json()["usage"]["prompt_tokens"]
    assert data["tokens_completion"] == answer.json()["usage"]["completion_tokens"]
    assert data["upstream_id"] == receipt["attempts"][0]["upstream_request_id"]
    assert [p["status"] for p in data["provider_responses"]] == [200]
    assert data["api_type"] == "completions"
    missing = httpx.get(f"{stack.edge_url}/api/v1/generation", params={"id": "req_x"}, headers=auth)
    assert missing.status_code == 404


def test_a_402_names_its_limit_for_machines(stack, tenant_factory) -> None:
    tenant = tenant_factory({})
    for path, body in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/messages", {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    ):
        response = httpx.post(
            f"{stack.edge_url}{path}",
            headers={"authorization": f"Bearer {tenant.api_key}"},
            json={"model": "gpt-4o-mini", **body},
            timeout=30,
        )
        assert response.status_code == 402
        error = response.json()["error"]
        assert error["limit"] == "bucket:credit"
        assert error["limit_source"] == error["metadata"]["limit_source"] == "bucket"
        assert response.headers["x-tollway-cost"] == "0.000000"
