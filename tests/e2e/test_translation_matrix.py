"""Every client dialect against every channel dialect: {chat, responses, messages} clients x
{openai, anthropic} channels x {stream, not} x {text, tool call}.

Each case goes through the official SDK of its client, must come back in the client's own
shape (text, or a tool call with JSON arguments), and must settle with usage the upstream
reported (never estimated) and a charge equal to its token classes at the channel's prices.
Every call is bounded by the SDK's timeout, so a hung translation fails instead of stalling.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest

from tests.e2e.test_billing_surfaces import MICRO, _hand_cost, _route
from tests.e2e.test_openai_sdk import settled_receipt

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.e2e

TIMEOUT_S = 30
PROPERTIES = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = {
    "chat": [{"type": "function", "function": {"name": "get_weather", "parameters": PROPERTIES}}],
    "responses": [{"type": "function", "name": "get_weather", "parameters": PROPERTIES}],
    "messages": [{"name": "get_weather", "input_schema": PROPERTIES}],
}


@pytest.fixture(scope="module")
def routes(stack: Any) -> dict[str, str]:
    """One catalog model per channel dialect, priced per token class (built once)."""
    return {
        "openai": _route(stack, "openai-direct", "gpt-4o-mini"),
        "anthropic": _route(stack, "anthropic-direct", "claude-sonnet-4-5", adapter="anthropic"),
    }


def _prompt(tool: bool) -> str:
    return "What is the weather in Paris?" if tool else "Tell me about ledgers."


def _chat(stack: Any, key: str, model: str, *, stream: bool, tool: bool) -> tuple[Any, str]:
    client = openai.OpenAI(
        base_url=f"{stack.edge_url}/v1", api_key=key, max_retries=0, timeout=TIMEOUT_S
    )
    args: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": _prompt(tool)}],
        "max_tokens": 200,
    }
    if tool:
        args["tools"] = TOOLS["chat"]
    if not stream:
        raw = client.chat.completions.with_raw_response.create(**args)
        message = raw.parse().choices[0].message
        calls = [(c.function.name, c.function.arguments) for c in message.tool_calls or []]
        return (calls or message.content), raw.headers["x-request-id"]
    with client.chat.completions.with_streaming_response.create(**args, stream=True) as raw:
        chunks = list(raw.parse())
        request_id = raw.headers["x-request-id"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    names = [
        t.function.name
        for c in chunks
        if c.choices
        for t in c.choices[0].delta.tool_calls or []
        if t.function and t.function.name
    ]
    arguments = "".join(
        t.function.arguments or ""
        for c in chunks
        if c.choices
        for t in c.choices[0].delta.tool_calls or []
        if t.function
    )
    return ([(names[0], arguments)] if names else text), request_id


def _responses(stack: Any, key: str, model: str, *, stream: bool, tool: bool) -> tuple[Any, str]:
    client = openai.OpenAI(
        base_url=f"{stack.edge_url}/v1", api_key=key, max_retries=0, timeout=TIMEOUT_S
    )
    args: dict[str, Any] = {"model": model, "input": _prompt(tool), "max_output_tokens": 200}
    if tool:
        args["tools"] = TOOLS["responses"]
    if stream:
        with client.responses.with_streaming_response.create(**args, stream=True) as raw:
            events = list(raw.parse())
            request_id = raw.headers["x-request-id"]
        response = events[-1].response
    else:
        raw = client.responses.with_raw_response.create(**args)
        response, request_id = raw.parse(), raw.headers["x-request-id"]
    calls = [(i.name, i.arguments) for i in response.output if i.type == "function_call"]
    return (calls or response.output_text), request_id


def _messages(stack: Any, key: str, model: str, *, stream: bool, tool: bool) -> tuple[Any, str]:
    client = anthropic.Anthropic(
        base_url=stack.edge_url, api_key=key, max_retries=0, timeout=TIMEOUT_S
    )
    args: dict[str, Any] = {
        "model": model,
        "max_tokens": 200,
        "messages": [{"role": "user", "content": _prompt(tool)}],
    }
    if tool:
        args["tools"] = TOOLS["messages"]
    if stream:
        with client.messages.with_streaming_response.create(**args, stream=True) as raw:
            request_id = raw.headers["x-request-id"]
            events = list(raw.parse())
        text = "".join(
            e.delta.text
            for e in events
            if e.type == "content_block_delta" and e.delta.type == "text_delta"
        )
        names = [
            e.content_block.name
            for e in events
            if e.type == "content_block_start" and e.content_block.type == "tool_use"
        ]
        arguments = "".join(
            e.delta.partial_json
            for e in events
            if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
        )
        return ([(names[0], arguments)] if names else text), request_id
    raw = client.messages.with_raw_response.create(**args)
    message = raw.parse()
    calls = [(b.name, json.dumps(b.input)) for b in message.content if b.type == "tool_use"]
    text = "".join(b.text for b in message.content if b.type == "text")
    return (calls or text), raw.headers["x-request-id"]


CLIENTS: dict[str, Callable[..., tuple[Any, str]]] = {
    "chat": _chat,
    "responses": _responses,
    "messages": _messages,
}


@pytest.mark.parametrize("tool", [False, True], ids=["text", "tool"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("channel", ["openai", "anthropic"])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_every_client_reaches_every_channel(
    stack, tenant_factory, routes, client, channel, stream, tool
) -> None:
    tenant = tenant_factory({"credit": "10"})
    answer, request_id = CLIENTS[client](
        stack, tenant.api_key, routes[channel], stream=stream, tool=tool
    )
    if tool:
        [(name, arguments)] = answer
        assert name == "get_weather"
        assert isinstance(json.loads(arguments), dict)
    else:
        assert isinstance(answer, str)
        assert len(answer.split()) > 3
    receipt = settled_receipt(stack, tenant.api_key, request_id)
    assert receipt["protocol"] == ("anthropic" if client == "messages" else "openai")
    assert receipt["stream"] is stream
    assert receipt["usage_estimated"] is False
    [attempt] = receipt["attempts"]
    assert attempt["outcome"] == "ok"
    classes = {c["class"]: c["tokens"] for c in receipt["token_classes"]}
    assert all(c["price_per_1m_micro"] == MICRO[c["class"]] for c in receipt["token_classes"])
    assert receipt["charged_micro"] == _hand_cost(classes) > 0
