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
