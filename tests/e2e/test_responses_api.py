"""The OpenAI Responses API through the official SDK, on OpenAI channels (natively) and on
Anthropic channels (translated); Anthropic's count_tokens with the hold's own counter.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.test_billing_surfaces import MICRO, _hand_cost, _route
from tests.e2e.test_openai_sdk import settled_receipt

pytestmark = pytest.mark.e2e

CHANNELS = pytest.mark.parametrize(
    ("demo", "adapter"), [("openai-direct", "openai"), ("anthropic-direct", "anthropic")]
)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def _client(stack: Any, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.edge_url}/v1", api_key=key, max_retries=0)


def _classes(usage: Any) -> dict[str, int]:
    cached = usage.input_tokens_details.cached_tokens
    reasoning = usage.output_tokens_details.reasoning_tokens
    return {
        "input": usage.input_tokens - cached,
        "cached_input": cached,
        "output": usage.output_tokens - reasoning,
        "reasoning": reasoning,
    }


def _check_receipt(stack: Any, key: str, request_id: str, usage: Any) -> dict[str, Any]:
    receipt = settled_receipt(stack, key, request_id)
    assert receipt["endpoint"] == "responses"
    assert receipt["usage_estimated"] is False
    classes = _classes(usage)
    assert receipt["charged_micro"] == _hand_cost(classes)
    assert {c["class"]: c["tokens"] for c in receipt["token_classes"]} == {
        k: v for k, v in classes.items() if v
    }
    assert all(c["price_per_1m_micro"] == MICRO[c["class"]] for c in receipt["token_classes"])
    return receipt


@CHANNELS
def test_plain_text_with_instructions_and_parts(stack, tenant_factory, demo, adapter) -> None:
    tenant = tenant_factory({"credit": "10"})
    model = _route(stack, demo, "gpt-4o-mini", adapter=adapter)
    raw = _client(stack, tenant.api_key).responses.with_raw_response.create(
        model=model,
        instructions="Be brief.",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Describe the ledger."},
                    {"type": "input_text", "text": "In one line."},
                ],
            }
        ],
        max_output_tokens=200,
    )
    response = raw.parse()
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == model
    assert response.output_text
    assert response.usage is not None
    assert response.usage.output_tokens > 0
    _check_receipt(stack, tenant.api_key, raw.headers["x-request-id"], response.usage)
    assert raw.headers["x-tollway-cost"] != "0.000000"


@CHANNELS
def test_a_stream_has_the_responses_events_in_order(stack, tenant_factory, demo, adapter) -> None:
    tenant = tenant_factory({"credit": "10"})
    model = _route(stack, demo, "gpt-4o-mini", adapter=adapter)
    with _client(stack, tenant.api_key).responses.with_streaming_response.create(
        model=model, input="Tell me a story.", stream=True
    ) as raw:
        request_id = raw.headers["x-request-id"]
        events = list(raw.parse())
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert final.output_text == text
    assert final.model == model
    receipt = _check_receipt(stack, tenant.api_key, request_id, final.usage)
    # The last event states the charge.
    assert events[-1].model_extra["tollway"]["cost_micro"] == receipt["charged_micro"]


@CHANNELS
@pytest.mark.parametrize("stream", [False, True])
def test_tools_and_function_call_outputs(stack, tenant_factory, demo, adapter, stream) -> None:
    tenant = tenant_factory({"credit": "10"})
    model = _route(stack, demo, "gpt-4o-mini", adapter=adapter)
    client = _client(stack, tenant.api_key)
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        with client.responses.stream(model=model, input=ask, tools=[WEATHER]) as events:  # type: ignore[arg-type]
            first = events.get_final_response()
    else:
        first = client.responses.create(model=model, input=ask, tools=[WEATHER])  # type: ignore[arg-type]
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather"
    assert isinstance(json.loads(call.arguments), dict)
    follow_up = [
        *ask,
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'},
    ]
    second = client.responses.create(model=model, input=follow_up, tools=[WEATHER])  # type: ignore[arg-type]
    assert second.output_text
    assert not [item for item in second.output if item.type == "function_call"]


def test_reasoning_tokens_of_a_native_response_are_billed_at_the_reasoning_price(
    stack, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "10"})
    model = _route(stack, "openai-direct", "o4-mini")
    raw = _client(stack, tenant.api_key).responses.with_raw_response.create(
        model=model, input="Think, then answer.", max_output_tokens=300
    )
    usage = raw.parse().usage
    assert usage is not None
    assert usage.output_tokens_details.reasoning_tokens > 0
    _check_receipt(stack, tenant.api_key, raw.headers["x-request-id"], usage)


def test_what_cannot_be_served_is_a_clear_400_or_404(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    model = _route(stack, "anthropic-direct", "claude-sonnet-4-5", adapter="anthropic")
    client = _client(stack, tenant.api_key)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=model, input="hi", tools=[{"type": "web_search"}])  # type: ignore[list-item]
    assert caught.value.body["param"] == "tools[0].type"  # type: ignore[index]
    assert "web_search" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=model, input="hi", previous_response_id="resp_1")
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.retrieve("resp_1")
    assert "does not store responses" in missing.value.message


def test_count_tokens_uses_the_holds_counter(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    model = _route(stack, "anthropic-direct", "claude-sonnet-4-5", adapter="anthropic")
    body: dict[str, Any] = {
        "model": model,
        "system": "You count.",
        "messages": [{"role": "user", "content": "How many tokens is this?"}],
    }
    client = anthropic.Anthropic(base_url=stack.edge_url, api_key=tenant.api_key, max_retries=0)
    counted = client.messages.count_tokens(**body).input_tokens
    assert counted > 0
    raw = client.messages.with_raw_response.create(max_tokens=50, **body)
    receipt = settled_receipt(stack, tenant.api_key, raw.headers["x-request-id"])
    # The hold: every counted input token at its dearest class, max_tokens at the dearest output.
    dearest_in = max(MICRO[k] for k in ("input", "cached_input", "cache_write", "cache_write_1h"))
    dearest_out = max(MICRO["output"], MICRO["reasoning"])
    held = -(-(counted * dearest_in + 50 * dearest_out) // 1_000_000)
    assert receipt["hold"]["held_micro"] == held
    unknown = httpx.post(
        f"{stack.edge_url}/v1/messages/count_tokens",
        headers={"x-api-key": tenant.api_key},
        json={**body, "model": "no-such-model"},
    )
    assert unknown.status_code == 404
    assert unknown.json()["type"] == "error"
