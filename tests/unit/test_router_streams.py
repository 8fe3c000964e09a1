"""Stream decoding, encoding and metering: what one dialect streams reaches a client of the other
dialect intact, and a stream without usage is counted from its text, capped, and marked.
"""

from __future__ import annotations

import json

from tollway.events.gateway import RequestReceived, SseFrame
from tollway.router import anthropic_adapter, openai_adapter
from tollway.router.client_stream import ClientStream
from tollway.router.deltas import Done, Meter, Text, ToolArgs, ToolStart, UsageSeen


def _openai_chunks() -> list[SseFrame]:
    def chunk(delta: dict, finish: str | None = None) -> SseFrame:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return SseFrame(data=json.dumps({"id": "c", "model": "up", "choices": [choice]}))

    usage = {"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {}}
    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        SseFrame(data=json.dumps({"id": "c", "choices": [], "usage": usage})),
        SseFrame(data="[DONE]"),
    ]


def test_an_openai_stream_reaches_an_anthropic_client_as_the_messages_event_sequence() -> None:
    decoder = openai_adapter.Decoder()
    encoder = anthropic_adapter.Encoder("msg_1", "catalog")

    frames = [f for c in _openai_chunks() for d in decoder.decode(c) for f in encoder.encode(d)]

    kinds = [f.event for f in frames]
    assert kinds == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = "".join(
        json.loads(f.data)["delta"]["text"] for f in frames if f.event == "content_block_delta"
    )
    assert text == "Hello"
    closing = json.loads(frames[-2].data)
    assert closing["delta"]["stop_reason"] == "end_turn"
    assert closing["usage"]["output_tokens"] == 2


def test_an_anthropic_tool_stream_reaches_an_openai_client_as_tool_call_chunks() -> None:
    events = [
        {"type": "message_start", "message": {"usage": {"input_tokens": 7}}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t1", "name": "look", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '{"x"'},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": ": 1}"},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 4},
        },
        {"type": "message_stop"},
    ]
    decoder = anthropic_adapter.Decoder()
    encoder = openai_adapter.Encoder("c1", "catalog", 0, include_usage=True)

    frames = [
        f
        for e in events
        for d in decoder.decode(SseFrame(event=e["type"], data=json.dumps(e)))
        for f in encoder.encode(d)
    ]

    assert frames[-1].data == "[DONE]"
    chunks = [json.loads(f.data) for f in frames[:-1]]
    calls = [t for c in chunks for ch in c["choices"] for t in ch["delta"].get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "look"
    assert "".join(t["function"]["arguments"] for t in calls) == '{"x": 1}'
    assert [ch["finish_reason"] for c in chunks for ch in c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 4,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_openai_relay_drops_the_usage_chunk_unless_asked_and_renames_the_model() -> None:
    frames = _openai_chunks()

    silent = [openai_adapter.relay(f, "catalog", include_usage=False) for f in frames]
    asked = [openai_adapter.relay(f, "catalog", include_usage=True) for f in frames]

    assert silent[4] is None
    assert asked[4] is not None
    assert json.loads(asked[1].data)["model"] == "catalog"  # type: ignore[union-attr]


def test_meter_prefers_reported_usage() -> None:
    meter = Meter(estimated_input_tokens=100, max_output_tokens=50)
    for delta in (Text(0, "x" * 40), UsageSeen(12, 3, 2), Done()):
        meter.see(delta)

    usage = meter.usage()

    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (12, 3, 2)
    assert not usage.estimated


def test_meter_counts_streamed_text_when_usage_never_came_capped_by_max_tokens() -> None:
    short = Meter(estimated_input_tokens=100, max_output_tokens=50)
    for delta in (Text(0, "x" * 10), ToolStart(0, 0, "id", "look"), ToolArgs(0, 0, "{}")):
        short.see(delta)
    long = Meter(estimated_input_tokens=100, max_output_tokens=5)
    long.see(Text(0, "x" * 400))

    assert short.usage().output_tokens == 4  # 16 characters, four a token, rounded up
    assert short.usage().input_tokens == 100
    assert short.usage().estimated
    assert long.usage().output_tokens == 5


def _request(protocol: str, endpoint: str, body: dict) -> RequestReceived:
    return RequestReceived.model_construct(
        request_id="req_1",
        protocol=protocol,
        endpoint=endpoint,
        catalog_model="catalog",
        body=body,
    )


def test_an_anthropic_client_of_an_openai_channel_gets_input_counts_at_start_and_at_end() -> None:
    client = ClientStream(_request("anthropic", "messages", {}), "openai", sent_tokens=41)
    decoder = openai_adapter.Decoder()
    frames = [f for c in _openai_chunks() for f in client.frames(c, decoder.decode(c))]
    start = json.loads(frames[0].data)
    assert start["message"]["usage"]["input_tokens"] == 41  # counted from the request sent
    closing = json.loads(next(f.data for f in frames if f.event == "message_delta"))
    # The channel's own report, once it comes: 9 prompt tokens, none cached or written.
    assert closing["usage"]["input_tokens"] == 9
    assert closing["usage"]["cache_read_input_tokens"] == 0


def test_a_chat_client_gets_its_charge_in_the_last_chunk_before_done() -> None:
    client = ClientStream(_request("openai", "chat", {}), "openai")
    decoder = openai_adapter.Decoder()
    relayed = [f for c in _openai_chunks() for f in client.frames(c, decoder.decode(c))]
    # The finish chunk is held back until [DONE]; the usage chunk the client did not ask for is
    # dropped; [DONE] stays last.
    assert [json.loads(f.data)["choices"][0]["delta"] for f in relayed[:3]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
    ]
    end = client.with_cost(relayed[3:], {"cost_micro": 7})
    assert end[-1].data == "[DONE]"
    last = json.loads(end[-2].data)
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["tollway"] == {"cost_micro": 7}
