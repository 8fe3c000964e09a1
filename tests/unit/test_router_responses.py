"""The Responses API translated for Anthropic channels, and its streams decoded and encoded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tollway.events.gateway import SseFrame
from tollway.router import anthropic_adapter, responses_stream
from tollway.router.responses_translate import (
    UntranslatableError,
    from_anthropic_response,
    to_anthropic_request,
)


def test_input_items_become_alternating_messages_with_tool_blocks() -> None:
    body = {
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Use metric."},
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": '{"city":"P"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "21C"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
        ],
        "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "w"},
        "max_output_tokens": 99,
        "temperature": 0.2,
        "store": True,
    }
    out = to_anthropic_request(body, max_tokens=10)
    assert out["system"] == "Be brief.\n\nUse metric."
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "w", "input": {"city": "P"}}
    ]
    assert out["messages"][2]["content"][0]["type"] == "tool_result"
    assert out["tools"] == [{"name": "w", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "tool", "name": "w"}
    assert (out["max_tokens"], out["temperature"]) == (99, 0.2)
    assert "store" not in out


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": [{"type": "computer_call"}]}, "input[0].type"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format"),
        ({"input": "x", "tool_choice": {"type": "file_search"}}, "tool_choice.type"),
    ],
)
def test_what_has_no_anthropic_counterpart_names_its_field(
    body: dict[str, Any], field: str
) -> None:
    with pytest.raises(UntranslatableError) as caught:
        to_anthropic_request(body, max_tokens=10)
    assert caught.value.field == field
    assert field in str(caught.value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [
        "input",
        "tools",
        "tool_choice",
        "text",
        "instructions",
        "type",
        "role",
        "content",
        "call_id",
        "arguments",
        "output",
        "name",
        "format",
    ]
)


def _translated_or_field(body: dict[str, Any]) -> str | None:
    try:
        to_anthropic_request(body, max_tokens=10)
    except UntranslatableError as exc:
        return exc.field
    return None


# The machine may be busy (other suites run beside this one): generation speed is not the point.
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(KEYS, JSON, max_size=5))
def test_any_body_translates_or_names_a_field_and_never_crashes(body: dict[str, Any]) -> None:
    field = _translated_or_field(body)  # anything but UntranslatableError fails the test
    assert field is None or field


def test_an_anthropic_message_becomes_a_response_with_usage() -> None:
    message = {
        "content": [
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 5, "cache_read_input_tokens": 7, "output_tokens": 3},
    }
    response = from_anthropic_response(message, {"model": "m"}, "resp_1")
    assert [i["type"] for i in response["output"]] == ["message", "function_call"]
    assert response["output"][1]["call_id"] == "toolu_1"
    assert json.loads(response["output"][1]["arguments"]) == {"a": 1}
    assert response["usage"]["input_tokens"] == 12
    assert response["usage"]["input_tokens_details"]["cached_tokens"] == 7
    assert response["status"] == "completed"


def _anthropic_events(tool: bool) -> list[dict[str, Any]]:
    usage = {"input_tokens": 9, "output_tokens": 1}
    block = (
        {"type": "tool_use", "id": "toolu_9", "name": "w", "input": {}}
        if tool
        else {"type": "text", "text": ""}
    )
    delta = (
        {"type": "input_json_delta", "partial_json": '{"a":'}
        if tool
        else {"type": "text_delta", "text": "Hello"}
    )
    return [
        {"type": "message_start", "message": {"usage": usage}},
        {"type": "content_block_start", "index": 0, "content_block": block},
        {"type": "content_block_delta", "index": 0, "delta": delta},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 4},
        },
        {"type": "message_stop"},
    ]


@pytest.mark.parametrize("tool", [False, True])
def test_an_anthropic_stream_is_encoded_as_responses_events_in_order(tool: bool) -> None:
    decoder = anthropic_adapter.Decoder()
    encoder = responses_stream.Encoder("resp_1", {"model": "m"})
    frames = [
        f
        for e in _anthropic_events(tool)
        for d in sorted(
            decoder.decode(SseFrame(event=e["type"], data=json.dumps(e))),
            key=lambda d: type(d).__name__ != "UsageSeen",
        )
        for f in encoder.encode(d)
    ]
    events = [json.loads(f.data) for f in frames]
    kinds = [e["type"] for e in events]
    middle = (
        ["response.function_call_arguments.delta", "response.function_call_arguments.done"]
        if tool
        else [
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
        ]
    )
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *middle,
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert all(f.event == e["type"] for f, e in zip(frames, events, strict=True))
    final = events[-1]["response"]
    assert final["usage"]["input_tokens"] == 9
    assert final["usage"]["output_tokens"] == 4
    item = final["output"][0]
    assert item == events[-2]["item"]
    if tool:
        assert (item["type"], item["call_id"], item["arguments"]) == (
            "function_call",
            "toolu_9",
            '{"a":',
        )
    else:
        assert item["content"][0]["text"] == "Hello"


def test_a_native_responses_stream_decodes_to_deltas_with_usage() -> None:
    decoder = responses_stream.Decoder()
    completed = {
        "type": "response.completed",
        "response": {
            "usage": {
                "input_tokens": 10,
                "output_tokens": 6,
                "input_tokens_details": {"cached_tokens": 4},
                "output_tokens_details": {"reasoning_tokens": 2},
            }
        },
    }
    deltas = [
        d
        for e in (
            {"type": "response.created", "response": {}},
            {"type": "response.output_text.delta", "delta": "Hi"},
            completed,
        )
        for d in decoder.decode(SseFrame(event=e["type"], data=json.dumps(e)))
    ]
    names = [type(d).__name__ for d in deltas]
    assert names == ["Started", "Text", "Finished", "UsageSeen", "Done"]
    seen = deltas[3]
    assert (seen.input_tokens, seen.cached_input_tokens, seen.reasoning_tokens) == (10, 4, 2)  # type: ignore[union-attr]
