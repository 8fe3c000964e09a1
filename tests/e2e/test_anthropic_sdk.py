"""The official Anthropic SDK pointed at the gateway: messages, streams, tools, errors in the
Anthropic shape, and an Anthropic-format client reaching an OpenAI channel.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.e2e.test_openai_sdk import settled_receipt

pytestmark = pytest.mark.e2e

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def sdk(stack: Any, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.edge_url, api_key=key, max_retries=0)


@pytest.mark.parametrize(
    ("model", "channel"),
    [("claude-3-5-haiku", "anthropic-direct"), ("gpt-4o-mini", "openai-direct")],
)
def test_message_is_answered_billed_and_explained(stack, tenant_factory, model, channel) -> None:
    tenant = tenant_factory({"credit": "10"})
    raw = sdk(stack, tenant.api_key).messages.with_raw_response.create(
        model=model,
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello, ledger."}],
        metadata={"user_id": "end-user-9"},
    )
    message = raw.parse()

    assert message.type == "message"
    assert message.model == model
    assert message.content[0].type == "text"
    assert message.content[0].text
    assert message.usage.output_tokens > 0
    receipt = settled_receipt(stack, tenant.api_key, raw.headers["x-request-id"])
    assert receipt["protocol"] == "anthropic"
    assert receipt["user"] == "end-user-9"
    [attempt] = receipt["attempts"]
    assert attempt["channel"] == channel
    assert attempt["usage"]["output_tokens"] == message.usage.output_tokens
    assert receipt["charged_micro"] > 0


@pytest.mark.parametrize("model", ["claude-3-5-haiku", "gpt-4o-mini"])
def test_stream_has_every_event_of_the_messages_api(stack, tenant_factory, model) -> None:
    tenant = tenant_factory({"credit": "10"})
    with sdk(stack, tenant.api_key).messages.stream(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "Tell me a story."}]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()

    assert kinds[0] == "message_start"
    assert {"content_block_start", "content_block_delta", "content_block_stop"} <= set(kinds)
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert final.content[0].type == "text"
    assert final.content[0].text
    assert final.usage.output_tokens > 0
    assert final.model == model


@pytest.mark.parametrize("model", ["claude-3-5-haiku", "gpt-4o-mini"])
def test_tools_work_streamed_and_not(stack, tenant_factory, model) -> None:
    tenant = tenant_factory({"credit": "10"})
    client = sdk(stack, tenant.api_key)
    ask: dict[str, Any] = {
        "model": model,
        "max_tokens": 200,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "any"},
        "messages": [{"role": "user", "content": "Weather in Lima?"}],
    }

    message = client.messages.create(**ask)
    with client.messages.stream(**ask) as stream:
        streamed = stream.get_final_message()

    for answer in (message, streamed):
        [block] = [b for b in answer.content if b.type == "tool_use"]
        assert block.name == "get_weather"
        assert isinstance(block.input, dict)
        assert answer.stop_reason == "tool_use"


def test_tool_results_go_back_to_an_openai_channel(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    message = sdk(stack, tenant.api_key).messages.create(
        model="gpt-4o-mini",
        max_tokens=100,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Weather in Lima?"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Lima"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}],
            },
        ],
    )

    assert message.content
    assert message.usage.input_tokens > 0
