"""The official OpenAI SDK pointed at the gateway, changing nothing else: chat, stream, tools,
JSON mode, multimodal parts, embeddings, models, and an OpenAI-format client reaching an
Anthropic channel.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.e2e

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def client(stack: Any, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.edge_url}/v1", api_key=key, max_retries=0)


def settled_receipt(stack: Any, key: str, request_id: str) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        response = httpx.get(
            f"{stack.edge_url}/v1/receipts/{request_id}",
            headers={"authorization": f"Bearer {key}"},
        )
        body: dict[str, Any] = response.json() if response.status_code == 200 else {}
        return body if body.get("status") in {"settled", "released"} else None

    return wait_for(read, what=f"receipt {request_id} to close")  # type: ignore[no-any-return]


def test_stream_relays_chunks_and_usage_and_settles_what_was_reported(
    stack, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "10"})
    with client(stack, tenant.api_key).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Tell me a story."}],
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert text
    assert usage is not None
    assert usage.completion_tokens > 0
    assert all(c.model == "gpt-4o-mini" for c in chunks)
    assert chunks[-2].choices[0].finish_reason == "stop"
    receipt = settled_receipt(stack, tenant.api_key, request_id)
    assert receipt["stream"] is True
    assert receipt["usage"]["output_tokens"] == usage.completion_tokens
    assert receipt["usage"]["input_tokens"] == usage.prompt_tokens
    assert receipt["usage_estimated"] is False
    assert receipt["charged_micro"] > 0


def test_stream_without_include_usage_sends_no_usage_chunk(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    chunks = list(
        client(stack, tenant.api_key).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )

    assert chunks
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_tools_are_called_and_the_call_is_returned(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    completion = client(stack, tenant.api_key).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
    )

    [call] = completion.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    assert completion.choices[0].finish_reason == "tool_calls"


def test_streamed_tool_call_arrives_in_pieces(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    chunks = list(
        client(stack, tenant.api_key).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Weather in Oslo?"}],
            tools=[WEATHER_TOOL],
            tool_choice="required",
            stream=True,
        )
    )

    calls = [t for c in chunks for t in (c.choices[0].delta.tool_calls or []) if c.choices]
    assert calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    arguments = "".join((t.function.arguments or "") for t in calls if t.function)
    assert isinstance(json.loads(arguments), dict)


def test_json_mode_multimodal_parts_n_stop_user_and_unknown_parameters_pass(
    stack, tenant_factory
) -> None:
    tenant = tenant_factory({"credit": "10"})
    raw = client(stack, tenant.api_key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe this picture as JSON."},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                ],
            }
        ],
        response_format={"type": "json_object"},
        n=2,
        stop=["\n\n"],
        user="end-user-42",
        extra_body={"tollway_unknown_knob": {"passed": True}},
    )
    completion = raw.parse()

    assert len(completion.choices) == 2
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)
    receipt = settled_receipt(stack, tenant.api_key, raw.headers["x-request-id"])
    assert receipt["user"] == "end-user-42"


def test_embeddings_are_served_and_billed(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    raw = client(stack, tenant.api_key).embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["first text", "second text"]
    )
    result = raw.parse()

    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) > 0 for d in result.data)
    assert result.model == "text-embedding-3-small"
    receipt = settled_receipt(stack, tenant.api_key, raw.headers["x-request-id"])
    assert receipt["endpoint"] == "embeddings"
    assert receipt["usage"]["input_tokens"] == result.usage.prompt_tokens > 0
    assert receipt["charged_micro"] > 0


def test_models_lists_only_what_the_key_may_call(stack, tenant_factory) -> None:
    everything = tenant_factory({})
    restricted = tenant_factory({}, allowed_models=["gpt-4o-mini"])

    names = {m.id for m in client(stack, everything.api_key).models.list()}
    narrow = {m.id for m in client(stack, restricted.api_key).models.list()}

    assert {"gpt-4o-mini", "claude-3-5-haiku", "text-embedding-3-small"} <= names
    assert narrow == {"gpt-4o-mini"}
    assert client(stack, restricted.api_key).models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        client(stack, restricted.api_key).models.retrieve("claude-3-5-haiku")


def test_openai_client_reaches_an_anthropic_channel(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    raw = client(stack, tenant.api_key).chat.completions.with_raw_response.create(
        model="claude-3-5-haiku",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello there"},
        ],
        max_tokens=50,
    )
    completion = raw.parse()

    assert completion.object == "chat.completion"
    assert completion.model == "claude-3-5-haiku"
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    receipt = settled_receipt(stack, tenant.api_key, raw.headers["x-request-id"])
    [attempt] = receipt["attempts"]
    assert attempt["channel"] == "anthropic-direct"
    assert attempt["upstream_request_id"].startswith("up-")
    assert attempt["usage"]["output_tokens"] == completion.usage.completion_tokens


def test_openai_client_streams_from_an_anthropic_channel_with_tools(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    chunks = list(
        client(stack, tenant.api_key).chat.completions.create(
            model="claude-3-5-haiku",
            messages=[{"role": "user", "content": "Weather in Rome?"}],
            tools=[WEATHER_TOOL],
            tool_choice="required",
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    arguments = "".join((t.function.arguments or "") for t in calls if t.function)
    assert isinstance(json.loads(arguments), dict)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert "tool_calls" in finishes
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_a_stream_answers_200_with_server_sent_events(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream(
        "POST",
        f"{stack.edge_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {tenant.api_key}"},
        json=body,
        timeout=30,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.status_code == 200  # what OpenAI answers; a 201 breaks strict clients
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[0].startswith("data: ")
    assert lines[-1] == "data: [DONE]"
