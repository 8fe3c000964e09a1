"""OpenAI <-> Anthropic body translation: what a client sends survives the trip to the other
dialect, and the answer comes back in the client's own shape with its usage.
"""

from __future__ import annotations

import json

from tollway.router import translate
from tollway.router.anthropic_adapter import read_usage as anthropic_usage
from tollway.router.openai_adapter import read_usage as openai_usage

OPENAI_CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "look", "arguments": '{"x": 1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
    ],
    "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
    "tool_choice": "required",
    "stop": "END",
    "temperature": 0.2,
    "user": "u-1",
    "logit_bias": {"1": 2},
}


def test_openai_chat_becomes_an_anthropic_messages_body() -> None:
    body = translate.openai_to_anthropic_request(OPENAI_CHAT, max_tokens=77)

    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 77
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    image = body["messages"][0]["content"][1]
    assert image == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "look", "input": {"x": 1}}
    ]
    assert body["messages"][2]["content"][0]["type"] == "tool_result"
    assert body["tools"] == [{"name": "look", "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "any"}
    assert body["stop_sequences"] == ["END"]
    assert body["temperature"] == 0.2
    assert body["metadata"] == {"user_id": "u-1"}
    assert "logit_bias" not in body  # Anthropic would refuse it


def test_anthropic_messages_become_an_openai_chat_body() -> None:
    body = translate.anthropic_to_openai_request(
        {
            "system": "Be brief.",
            "max_tokens": 50,
            "stop_sequences": ["END"],
            "tools": [{"name": "look", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "look"},
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "look", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
                },
            ],
        }
    )

    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][2]["tool_calls"][0]["function"]["name"] == "look"
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "ok"}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "look"}}
    assert body["stop"] == ["END"]
    assert body["max_tokens"] == 50


def test_anthropic_answer_reads_as_an_openai_completion_with_cached_usage() -> None:
    message = {
        "id": "msg_1",
        "content": [
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "t1", "name": "look", "input": {"x": 1}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 30, "output_tokens": 5},
    }

    completion = translate.anthropic_to_openai_response(message)

    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Calling."
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"x": 1}
    assert completion["usage"]["prompt_tokens"] == 40
    assert completion["usage"]["prompt_tokens_details"]["cached_tokens"] == 30
    assert openai_usage(completion) == anthropic_usage(message)


def test_openai_answer_reads_as_an_anthropic_message() -> None:
    completion = {
        "id": "c1",
        "choices": [{"message": {"content": "hello"}, "finish_reason": "length"}],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }

    message = translate.openai_to_anthropic_response(completion)

    assert message["content"] == [{"type": "text", "text": "hello"}]
    assert message["stop_reason"] == "max_tokens"
    assert message["usage"]["input_tokens"] == 8
    assert message["usage"]["cache_read_input_tokens"] == 4
    assert anthropic_usage(message) == openai_usage(completion)
