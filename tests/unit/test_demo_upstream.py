"""The demo upstream, driven in-process: both dialects, the control API and every fault kind."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest

from tollway.devstack.upstream import DEFAULT_CHANNELS, DemoUpstream, UpstreamCutError, create_app
from tollway.devstack.upstream.cli import channel_list, parse_args
from tollway.devstack.upstream.state import FaultSpec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

OPENAI_AUTH = {"Authorization": "Bearer test-key"}
ANTHROPIC_AUTH = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
CHAT = "/openai-direct/v1/chat/completions"
MESSAGES = "/anthropic-direct/v1/messages"
EMBEDDINGS = "/openai-direct/v1/embeddings"
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city"],
        },
    },
}
ANTHROPIC_WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}


@pytest.fixture
def app() -> DemoUpstream:
    return create_app(["openai-direct", "anthropic-direct"])


@pytest.fixture
async def client(app: DemoUpstream) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://upstream") as http:
        yield http


def chat_body(**overrides: Any) -> dict[str, Any]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]}
    return {**body, **overrides}


def messages_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello there"}],
    }
    return {**body, **overrides}


async def chat(client: httpx.AsyncClient, **overrides: Any) -> httpx.Response:
    return await client.post(CHAT, headers=OPENAI_AUTH, json=chat_body(**overrides))


async def message(client: httpx.AsyncClient, **overrides: Any) -> httpx.Response:
    return await client.post(MESSAGES, headers=ANTHROPIC_AUTH, json=messages_body(**overrides))


async def arm(client: httpx.AsyncClient, **spec: Any) -> dict[str, Any]:
    response = await client.post("/_control/faults", json=spec)
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


def sse_data(text: str) -> list[Any]:
    lines = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def anthropic_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in text.strip().split("\n\n"):
        name_line, data_line = frame.split("\n")
        events.append(
            (name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: ")))
        )
    return events


async def drive(
    app: DemoUpstream,
    path: str,
    payload: dict[str, Any],
    headers: dict[str, str],
    *,
    disconnect_after: float | None = None,
) -> tuple[list[dict[str, Any]], Exception | None]:
    """Call the ASGI app directly, recording every message it sends and how it ended."""
    body = orjson.dumps(payload)
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        if disconnect_after is None:
            await asyncio.Event().wait()
        await asyncio.sleep(disconnect_after or 0)
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    raw_headers = [(key.lower().encode(), value.encode()) for key, value in headers.items()]
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": raw_headers,
        "query_string": b"",
    }
    try:
        await app(scope, receive, send)
    except UpstreamCutError as exc:
        return sent, exc
    return sent, None


def body_of(sent: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


# --- OpenAI chat completions ---------------------------------------------------------------


async def test_chat_completion_echoes_model_and_counts_usage(client: httpx.AsyncClient) -> None:
    response = await chat(client, model="my-model")

    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("up-")
    payload = response.json()
    assert payload["id"].startswith("chatcmpl-")
    assert payload["object"] == "chat.completion"
    assert payload["model"] == "my-model"
    choice = payload["choices"][0]
    assert choice["finish_reason"] == "stop"
    words = choice["message"]["content"].split(" ")
    assert 20 <= len(words) <= 60
    # 4 per message + ceil(len("Hello there") / 4); one token per emitted word.
    expected = {"prompt_tokens": 4 + math.ceil(11 / 4), "completion_tokens": len(words)}
    assert {key: payload["usage"][key] for key in expected} == expected
    assert payload["usage"]["total_tokens"] == sum(expected.values())


async def test_same_request_gives_same_content_and_usage(client: httpx.AsyncClient) -> None:
    first, second = (await chat(client)).json(), (await chat(client)).json()
    other = (await chat(client, messages=[{"role": "user", "content": "Bye"}])).json()

    assert first["choices"] == second["choices"]
    assert first["usage"] == second["usage"]
    assert first["id"] != second["id"]
    assert other["choices"][0]["message"] != first["choices"][0]["message"]


async def test_image_parts_count_a_fixed_85_tokens(client: httpx.AsyncClient) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    content = [{"type": "text", "text": "What is this?"}, image]
    response = await chat(client, messages=[{"role": "user", "content": content}])

    assert response.json()["usage"]["prompt_tokens"] == 4 + math.ceil(13 / 4) + 85


async def test_stream_concatenates_to_the_non_stream_content(client: httpx.AsyncClient) -> None:
    plain = (await chat(client)).json()
    streamed = await chat(client, stream=True, stream_options={"include_usage": True})

    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.text.endswith("data: [DONE]\n\n")
    chunks = sse_data(streamed.text)
    assert chunks[-1] == "[DONE]"
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks[:-1])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-2])
    assert content == plain["choices"][0]["message"]["content"]
    assert chunks[-3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["choices"] == []
    assert chunks[-2]["usage"] == plain["usage"]


async def test_stream_without_include_usage_sends_no_usage(client: httpx.AsyncClient) -> None:
    chunks = sse_data((await chat(client, stream=True)).text)

    assert chunks[-1] == "[DONE]"
    assert all(chunk.get("usage") is None for chunk in chunks[:-1])
    assert all(chunk["choices"] for chunk in chunks[:-1])


async def test_max_tokens_truncates_with_finish_reason_length(client: httpx.AsyncClient) -> None:
    full = (await chat(client)).json()["choices"][0]["message"]["content"]
    for limit in ({"max_tokens": 5}, {"max_completion_tokens": 5}):
        payload = (await chat(client, **limit)).json()

        choice = payload["choices"][0]
        assert choice["finish_reason"] == "length"
        assert choice["message"]["content"] == " ".join(full.split(" ")[:5])
        assert payload["usage"]["completion_tokens"] == 5


async def test_stop_sequence_ends_the_content_before_it(client: httpx.AsyncClient) -> None:
    full = (await chat(client)).json()["choices"][0]["message"]["content"]
    stop = " " + full.split(" ")[3]

    choice = (await chat(client, stop=[stop])).json()["choices"][0]

    assert choice["message"]["content"] == full[: full.index(stop)]
    assert choice["finish_reason"] == "stop"


async def test_n_returns_distinct_choices_and_sums_usage(client: httpx.AsyncClient) -> None:
    payload = (await chat(client, n=3)).json()

    contents = [choice["message"]["content"] for choice in payload["choices"]]
    assert [choice["index"] for choice in payload["choices"]] == [0, 1, 2]
    assert len(set(contents)) == 3
    words = sum(len(content.split(" ")) for content in contents)
    assert payload["usage"]["completion_tokens"] == words


async def test_weather_question_with_tools_gets_a_tool_call(client: httpx.AsyncClient) -> None:
    question = [{"role": "user", "content": "What's the Weather in Paris?"}]
    payload = (await chat(client, messages=question, tools=[WEATHER_TOOL])).json()

    choice = payload["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert set(arguments) == {"city", "days", "unit"}
    assert arguments["unit"] == "celsius"
    assert isinstance(arguments["days"], int)
    again = (await chat(client, messages=question, tools=[WEATHER_TOOL])).json()
    assert again["choices"] == payload["choices"]


async def test_tool_choice_forces_a_call_and_none_forbids_it(client: httpx.AsyncClient) -> None:
    forced = {"type": "function", "function": {"name": "get_weather"}}
    called = (await chat(client, tools=[WEATHER_TOOL], tool_choice=forced)).json()
    plain = (await chat(client, tools=[WEATHER_TOOL])).json()
    weather = [{"role": "user", "content": "weather?"}]
    refused = (
        await chat(client, messages=weather, tools=[WEATHER_TOOL], tool_choice="none")
    ).json()
    unknown = await chat(client, tools=[WEATHER_TOOL], tool_choice={"function": {"name": "nope"}})

    assert called["choices"][0]["finish_reason"] == "tool_calls"
    assert plain["choices"][0]["finish_reason"] == "stop"
    assert refused["choices"][0]["finish_reason"] == "stop"
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "tool_choice"


async def test_tool_result_gets_a_text_answer(client: httpx.AsyncClient) -> None:
    history = [
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21C and sunny"},
    ]
    choice = (await chat(client, messages=history, tools=[WEATHER_TOOL])).json()["choices"][0]

    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"]


async def test_tool_call_streams_its_arguments_in_pieces(client: httpx.AsyncClient) -> None:
    weather = [{"role": "user", "content": "weather in Oslo"}]
    plain = (await chat(client, messages=weather, tools=[WEATHER_TOOL])).json()
    streamed = await chat(client, messages=weather, tools=[WEATHER_TOOL], stream=True)

    chunks = sse_data(streamed.text)[:-1]
    opening = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    pieces = [
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-1]
    ]
    expected = plain["choices"][0]["message"]["tool_calls"][0]
    assert opening["id"] == expected["id"]
    assert opening["function"]["name"] == "get_weather"
    assert len(pieces) > 1
    assert "".join(pieces) == expected["function"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_json_modes_return_a_json_object(client: httpx.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    }
    json_object = {"type": "json_object"}
    json_schema = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}

    free = (await chat(client, response_format=json_object)).json()
    shaped = (await chat(client, response_format=json_schema)).json()

    assert isinstance(json.loads(free["choices"][0]["message"]["content"]), dict)
    person = json.loads(shaped["choices"][0]["message"]["content"])
    assert set(person) == {"name", "age"}
    assert isinstance(person["age"], int)


async def test_invalid_chat_request_is_a_400_in_openai_shape(client: httpx.AsyncClient) -> None:
    missing = await client.post(CHAT, headers=OPENAI_AUTH, json={"model": "m"})
    broken = await client.post(CHAT, headers=OPENAI_AUTH, content=b"{not json")

    assert missing.status_code == 400
    error = missing.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"
    assert broken.status_code == 400


# --- OpenAI embeddings and models ---------------------------------------------------------


async def test_embeddings_are_deterministic_unit_vectors(client: httpx.AsyncClient) -> None:
    single = await client.post(
        EMBEDDINGS, headers=OPENAI_AUTH, json={"model": "e", "input": "hello"}
    )
    batch = await client.post(
        EMBEDDINGS,
        headers=OPENAI_AUTH,
        json={"model": "e", "input": ["hello", "world"], "dimensions": 16},
    )

    data = single.json()["data"]
    assert single.json()["model"] == "e"
    assert len(data[0]["embedding"]) == 8
    assert math.isclose(sum(x * x for x in data[0]["embedding"]), 1.0)
    vectors = [item["embedding"] for item in batch.json()["data"]]
    assert [len(vector) for vector in vectors] == [16, 16]
    assert vectors[0] != vectors[1]
    assert batch.json()["usage"] == {"prompt_tokens": 2 + 2, "total_tokens": 4}
    again = await client.post(
        EMBEDDINGS, headers=OPENAI_AUTH, json={"model": "e", "input": "hello"}
    )
    assert again.json()["data"] == data


async def test_models_lists_model_objects(client: httpx.AsyncClient) -> None:
    response = await client.get("/openai-direct/v1/models", headers=OPENAI_AUTH)

    assert response.status_code == 200
    assert response.json()["object"] == "list"
    assert {"id", "object", "created", "owned_by"} <= set(response.json()["data"][0])


# --- Anthropic messages --------------------------------------------------------------------


async def test_message_counts_system_and_echoes_model(client: httpx.AsyncClient) -> None:
    response = await message(client, system="Be brief.")

    assert response.status_code == 200
    assert response.headers["request-id"] == response.headers["x-request-id"]
    payload = response.json()
    assert payload["id"].startswith("msg_")
    assert payload["type"] == "message"
    assert payload["model"] == "claude-3-5-haiku-latest"
    assert payload["stop_reason"] == "end_turn"
    (block,) = payload["content"]
    assert block["type"] == "text"
    assert payload["usage"]["input_tokens"] == 4 + math.ceil(11 / 4) + math.ceil(9 / 4)
    assert payload["usage"]["output_tokens"] == len(block["text"].split(" "))


async def test_system_blocks_are_accepted_like_a_string(client: httpx.AsyncClient) -> None:
    blocks = [{"type": "text", "text": "Be brief."}]
    as_string = (await message(client, system="Be brief.")).json()
    as_blocks = (await message(client, system=blocks)).json()

    assert as_blocks["usage"]["input_tokens"] == as_string["usage"]["input_tokens"]


async def test_message_stream_follows_the_anthropic_event_sequence(
    client: httpx.AsyncClient,
) -> None:
    plain = (await message(client)).json()
    events = anthropic_events((await message(client, stream=True)).text)

    names = [name for name, _ in events]
    deltas = len(names) - 6
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    start = events[0][1]["message"]
    assert start["usage"]["input_tokens"] == plain["usage"]["input_tokens"]
    assert start["model"] == plain["model"]
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == plain["content"][0]["text"]
    closing = events[-2][1]
    assert closing["delta"]["stop_reason"] == "end_turn"
    assert closing["usage"]["output_tokens"] == plain["usage"]["output_tokens"] == deltas


async def test_message_max_tokens_truncates(client: httpx.AsyncClient) -> None:
    payload = (await message(client, max_tokens=4)).json()

    assert payload["stop_reason"] == "max_tokens"
    assert len(payload["content"][0]["text"].split(" ")) == 4
    assert payload["usage"]["output_tokens"] == 4


async def test_message_stop_sequence_is_reported(client: httpx.AsyncClient) -> None:
    full = (await message(client)).json()["content"][0]["text"]
    stop = full.split(" ")[2]

    payload = (await message(client, stop_sequences=[stop])).json()

    assert payload["stop_reason"] == "stop_sequence"
    assert payload["stop_sequence"] == stop
    assert payload["content"][0]["text"] == full[: full.index(stop)]


async def test_missing_max_tokens_is_a_400_in_anthropic_shape(client: httpx.AsyncClient) -> None:
    body = messages_body()
    del body["max_tokens"]

    response = await client.post(MESSAGES, headers=ANTHROPIC_AUTH, json=body)

    assert response.status_code == 400
    payload = response.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in payload["error"]["message"]


async def test_weather_message_with_tools_gets_a_tool_use_block(client: httpx.AsyncClient) -> None:
    weather = [{"role": "user", "content": [{"type": "text", "text": "weather in Rome?"}]}]
    plain = (await message(client, messages=weather, tools=[ANTHROPIC_WEATHER_TOOL])).json()
    streamed = await message(client, messages=weather, tools=[ANTHROPIC_WEATHER_TOOL], stream=True)

    assert plain["stop_reason"] == "tool_use"
    (block,) = plain["content"]
    assert block["type"] == "tool_use"
    assert block["id"].startswith("toolu_")
    assert block["input"]["unit"] == "celsius"
    events = anthropic_events(streamed.text)
    assert events[1][1]["content_block"] == {**block, "input": {}}
    partial = [d["delta"]["partial_json"] for n, d in events if n == "content_block_delta"]
    assert json.loads("".join(partial)) == block["input"]


async def test_anthropic_tool_choice_any_forces_a_tool(client: httpx.AsyncClient) -> None:
    payload = (
        await message(client, tools=[ANTHROPIC_WEATHER_TOOL], tool_choice={"type": "any"})
    ).json()
    result = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [payload["content"][0]]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t", "content": "sunny"}],
        },
    ]
    answer = (await message(client, messages=result, tools=[ANTHROPIC_WEATHER_TOOL])).json()

    assert payload["stop_reason"] == "tool_use"
    assert answer["stop_reason"] == "end_turn"


# --- auth and routing ----------------------------------------------------------------------


async def test_missing_credentials_are_401_in_each_dialect(client: httpx.AsyncClient) -> None:
    no_key = await client.post(CHAT, json=chat_body())
    empty_bearer = await client.post(CHAT, headers={"Authorization": "Bearer "}, json=chat_body())
    api_key_on_openai = await client.post(CHAT, headers={"x-api-key": "k"}, json=chat_body())
    no_key_on_anthropic = await client.post(MESSAGES, json=messages_body())

    assert no_key.status_code == empty_bearer.status_code == api_key_on_openai.status_code == 401
    assert no_key.json()["error"]["code"] == "invalid_api_key"
    assert no_key_on_anthropic.status_code == 401
    assert no_key_on_anthropic.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "x-api-key header is required"},
    }


async def test_anthropic_accepts_x_api_key_or_bearer(client: httpx.AsyncClient) -> None:
    with_key = await client.post(MESSAGES, headers={"x-api-key": "k"}, json=messages_body())
    with_bearer = await client.post(MESSAGES, headers=OPENAI_AUTH, json=messages_body())

    assert with_key.status_code == with_bearer.status_code == 200


async def test_unknown_channel_is_404_in_the_endpoint_dialect(client: httpx.AsyncClient) -> None:
    openai_404 = await client.post("/nowhere/v1/chat/completions", headers=OPENAI_AUTH, json={})
    anthropic_404 = await client.post("/nowhere/v1/messages", headers=ANTHROPIC_AUTH, json={})
    no_endpoint = await client.post("/openai-direct/v1/completions", headers=OPENAI_AUTH, json={})

    assert openai_404.status_code == anthropic_404.status_code == no_endpoint.status_code == 404
    assert "nowhere" in openai_404.json()["error"]["message"]
    assert anthropic_404.json()["error"]["type"] == "not_found_error"


# --- control API and faults ----------------------------------------------------------------


async def test_control_lists_channels(client: httpx.AsyncClient) -> None:
    response = await client.get("/_control/channels")

    assert response.json() == {"channels": ["openai-direct", "anthropic-direct"]}


async def test_status_fault_hits_the_next_count_requests(client: httpx.AsyncClient) -> None:
    await arm(client, channel="openai-direct", kind="status", status=503, count=2)

    statuses = [(await chat(client)).status_code for _ in range(3)]
    failed = await chat(client)  # the queue is empty again
    await arm(client, channel="anthropic-direct", kind="status")
    anthropic_500 = await message(client)

    assert statuses == [503, 503, 200]
    assert failed.status_code == 200
    assert anthropic_500.status_code == 500
    assert anthropic_500.json()["error"]["type"] == "api_error"


async def test_rate_limit_fault_is_a_429_with_retry_after(client: httpx.AsyncClient) -> None:
    await arm(client, channel="openai-direct", kind="rate_limit", retry_after=7)

    response = await chat(client)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["type"] == "rate_limit_error"


async def test_faults_for_a_channel_queue_in_order(client: httpx.AsyncClient) -> None:
    await arm(client, channel="openai-direct", kind="status", status=502)
    queued = await arm(client, channel="openai-direct", kind="rate_limit")
    listed = (await client.get("/_control/faults")).json()["faults"]

    statuses = [(await chat(client)).status_code for _ in range(3)]

    assert queued["queued"] == 2
    assert [fault["kind"] for fault in listed["openai-direct"]] == ["status", "rate_limit"]
    assert statuses == [502, 429, 200]


async def test_fault_on_unknown_channel_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/_control/faults", json={"channel": "nope", "kind": "hang"})
    invalid = await client.post("/_control/faults", json={"channel": "openai-direct", "kind": "x"})

    assert response.status_code == 404
    assert invalid.status_code == 400


async def test_clearing_faults_per_channel_or_all(client: httpx.AsyncClient) -> None:
    await arm(client, channel="openai-direct", kind="status", count=5)
    await arm(client, channel="anthropic-direct", kind="status", count=5)

    one = await client.delete("/_control/faults", params={"channel": "openai-direct"})
    chat_status, message_status = (
        (await chat(client)).status_code,
        (await message(client)).status_code,
    )
    rest = await client.delete("/_control/faults")

    assert one.json() == {"cleared": 1}
    assert (chat_status, message_status) == (200, 500)
    assert rest.json() == {"cleared": 1}
    assert (await message(client)).status_code == 200


async def test_hang_sends_nothing_until_the_client_leaves(
    app: DemoUpstream, client: httpx.AsyncClient
) -> None:
    await arm(client, channel="openai-direct", kind="hang")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(chat(client), timeout=0.2)
    await arm(client, channel="openai-direct", kind="hang")

    started = time.monotonic()
    sent, error = await drive(app, CHAT, chat_body(), OPENAI_AUTH, disconnect_after=0.05)

    assert time.monotonic() - started < 1
    assert sent == []
    assert error is None


async def test_hang_with_short_seconds_ends_in_504(client: httpx.AsyncClient) -> None:
    await arm(client, channel="openai-direct", kind="hang", hang_seconds=0.05)

    response = await chat(client)

    assert response.status_code == 504


async def test_cut_stream_drops_the_openai_stream_after_n_chunks(
    app: DemoUpstream, client: httpx.AsyncClient
) -> None:
    full = (await chat(client)).json()["choices"][0]["message"]["content"]
    await arm(client, channel="openai-direct", kind="cut_stream", after_chunks=2)
    with pytest.raises(httpx.RemoteProtocolError):
        await chat(client, stream=True)
    await arm(client, channel="openai-direct", kind="cut_stream", after_chunks=2)

    sent, error = await drive(app, CHAT, chat_body(stream=True), OPENAI_AUTH)

    assert isinstance(error, UpstreamCutError)
    assert sent[0]["status"] == 200
    assert all(m.get("more_body") for m in sent[1:])
    deltas = [c["choices"][0]["delta"]["content"] for c in sse_data(body_of(sent).decode())]
    assert deltas == ["", *full.split(" ")[:1], " " + full.split(" ")[1]]
    assert (await chat(client, stream=True)).text.endswith("data: [DONE]\n\n")


async def test_cut_stream_drops_the_anthropic_stream_before_message_stop(app: DemoUpstream) -> None:
    app.state.arm(_fault("anthropic-direct", "cut_stream", after_chunks=1))

    sent, error = await drive(app, MESSAGES, messages_body(stream=True), ANTHROPIC_AUTH)

    assert isinstance(error, UpstreamCutError)
    names = [name for name, _ in anthropic_events(body_of(sent).decode())]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta"]


async def test_cut_stream_truncates_a_non_stream_body(app: DemoUpstream) -> None:
    app.state.arm(_fault("openai-direct", "cut_stream"))

    sent, error = await drive(app, CHAT, chat_body(), OPENAI_AUTH)

    assert isinstance(error, UpstreamCutError)
    length = int(dict(sent[0]["headers"])[b"content-length"])
    assert 0 < len(body_of(sent)) < length


def _fault(channel: str, kind: str, **extra: Any) -> FaultSpec:
    return FaultSpec.model_validate({"channel": channel, "kind": kind, **extra})


async def test_no_usage_fault_omits_usage_everywhere(client: httpx.AsyncClient) -> None:
    await arm(client, channel="openai-direct", kind="no_usage", count=3)
    await arm(client, channel="anthropic-direct", kind="no_usage", count=2)

    plain = (await chat(client)).json()
    streamed = sse_data(
        (await chat(client, stream=True, stream_options={"include_usage": True})).text
    )
    embedded = await client.post(EMBEDDINGS, headers=OPENAI_AUTH, json={"model": "e", "input": "x"})
    anthropic_plain = (await message(client)).json()
    events = anthropic_events((await message(client, stream=True)).text)

    assert "usage" not in plain
    assert plain["choices"][0]["message"]["content"]
    assert all(chunk.get("usage") is None for chunk in streamed[:-1])
    assert streamed[-1] == "[DONE]"
    assert "usage" not in embedded.json()
    assert "usage" not in anthropic_plain
    assert "usage" not in events[0][1]["message"]
    assert "usage" not in events[-2][1]
    assert events[-1][0] == "message_stop"


async def test_models_endpoint_never_consumes_a_fault(client: httpx.AsyncClient) -> None:
    await arm(client, channel="openai-direct", kind="status")

    models = await client.get("/openai-direct/v1/models", headers=OPENAI_AUTH)

    assert models.status_code == 200
    assert (await chat(client)).status_code == 500


async def test_stats_count_requests_per_channel_and_endpoint(client: httpx.AsyncClient) -> None:
    await chat(client)
    await client.post(CHAT, json=chat_body())  # refused, still received
    await message(client)
    await arm(client, channel="anthropic-direct", kind="status")
    await message(client)

    stats = (await client.get("/_control/stats")).json()["channels"]
    reset = await client.delete("/_control/stats")

    assert stats["openai-direct"] == {
        "chat_completions": 2,
        "responses": 0,
        "embeddings": 0,
        "messages": 0,
        "models": 0,
        "total": 2,
        "faults_fired": 0,
    }
    assert stats["anthropic-direct"]["messages"] == 2
    assert stats["anthropic-direct"]["faults_fired"] == 1
    assert all(channel["total"] == 0 for channel in reset.json()["channels"].values())


async def test_latency_control_delays_responses_and_chunks(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/_control/latency",
        json={"channel": "openai-direct", "latency_ms": 60, "chunk_delay_ms": 2},
    )
    started = time.monotonic()
    await chat(client, stream=True)
    elapsed = time.monotonic() - started
    await client.post(
        "/_control/latency", json={"channel": None, "latency_ms": 0, "chunk_delay_ms": 0}
    )

    assert response.json()["channels"]["openai-direct"] == {"latency_ms": 60, "chunk_delay_ms": 2}
    assert response.json()["channels"]["anthropic-direct"] == {"latency_ms": 0, "chunk_delay_ms": 0}
    assert elapsed >= 0.06 + 20 * 0.002


async def test_unknown_control_route_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/_control/nothing")

    assert response.status_code == 404
    assert "error" in response.json()


# --- official SDKs -------------------------------------------------------------------------


async def test_openai_sdk_talks_to_the_demo_upstream(app: DemoUpstream) -> None:
    # The installed SDKs are built on httpx2, which has its own (same-shaped) ASGITransport.
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
    sdk = openai.AsyncOpenAI(
        base_url="http://upstream/openai-direct/v1", api_key="k", http_client=http, max_retries=0
    )
    messages: Any = [{"role": "user", "content": "Hello there"}]

    completion = await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    vectors = await sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    app.state.arm(_fault("openai-direct", "rate_limit"))
    with pytest.raises(openai.RateLimitError):
        await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
    await http.aclose()

    assert completion.model == "gpt-4o-mini"
    assert completion.usage is not None
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == completion.choices[0].message.content
    assert chunks[-1].usage == completion.usage
    assert [len(item.embedding) for item in vectors.data] == [8, 8]


async def test_anthropic_sdk_talks_to_the_demo_upstream(app: DemoUpstream) -> None:
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
    sdk = anthropic.AsyncAnthropic(
        base_url="http://upstream/anthropic-direct", api_key="k", http_client=http, max_retries=0
    )
    messages: Any = [{"role": "user", "content": "Hello there"}]

    created = await sdk.messages.create(model="claude-x", max_tokens=256, messages=messages)
    async with sdk.messages.stream(model="claude-x", max_tokens=256, messages=messages) as stream:
        streamed = await stream.get_final_message()
    app.state.arm(_fault("anthropic-direct", "status", status=529))
    with pytest.raises(anthropic.APIStatusError) as failure:
        await sdk.messages.create(model="claude-x", max_tokens=256, messages=messages)
    await http.aclose()

    assert created.model == "claude-x"
    assert [block.model_dump()["text"] for block in streamed.content] == [
        block.model_dump()["text"] for block in created.content
    ]
    assert created.usage.input_tokens == streamed.usage.input_tokens
    assert created.usage.output_tokens == streamed.usage.output_tokens
    assert streamed.stop_reason == "end_turn"
    assert failure.value.status_code == 529


# --- construction and command line ---------------------------------------------------------


def test_create_app_defaults_and_rejects_bad_channel_names() -> None:
    assert list(create_app().state.channels) == list(DEFAULT_CHANNELS)
    for bad in (["_control"], ["a/b"], []):
        with pytest.raises(ValueError, match="channel names"):
            create_app(bad)


def test_command_line_reads_flags_over_environment() -> None:
    environ = {"TOLLWAY_DEMO_CHANNELS": "a,b", "TOLLWAY_DEMO_LATENCY_MS": "5"}

    from_env = parse_args([], environ)
    from_flags = parse_args(["--channels", "c", "--port", "9000"], environ)

    assert channel_list(from_env.channels) == ["a", "b"]
    assert from_env.latency_ms == 5
    assert from_env.chunk_delay_ms == 0
    assert channel_list(from_flags.channels) == ["c"]
    assert from_flags.port == 9000
    assert channel_list(" , ") == list(DEFAULT_CHANNELS)
