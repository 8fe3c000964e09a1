"""OpenAI Chat Completions, Embeddings and Models as the demo upstream speaks them.

Pure rendering: a request body in, a ``JsonReply`` or ``StreamReply`` out. Streams follow the
public wire format: a role chunk per choice, one content chunk per output token, a finish chunk
per choice, the usage chunk (empty ``choices``) when ``stream_options.include_usage`` is set, and
``data: [DONE]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from tollway.devstack.upstream.content import (
    Finish,
    ToolChoice,
    ToolSpec,
    Turn,
    approx_tokens,
    cache_key,
    choose_tool,
    embedding,
    json_text,
    last_user_text,
    pack_base64,
    prompt_tokens,
    prose,
    reasoning_tokens,
    seed_of,
    shape,
    tool_turn,
)
from tollway.devstack.upstream.cost import with_cost
from tollway.devstack.upstream.protocol import (
    SSE_DONE,
    JsonReply,
    RenderContext,
    Reply,
    StreamReply,
    UpstreamError,
    parse_body,
    sse_data,
)

FINISH_REASONS = {
    Finish.END: "stop",
    Finish.STOP_SEQUENCE: "stop",
    Finish.LENGTH: "length",
    Finish.TOOL: "tool_calls",
}
DEFAULT_DIMENSIONS = 8
FINGERPRINT = "fp_tollway_demo"
MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "text-embedding-3-small",
    "claude-3-5-haiku-latest",
    "claude-sonnet-4-5",
)
MODELS_CREATED = 1_700_000_000


class FunctionDef(BaseModel):
    """The ``function`` of an offered tool."""

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class ToolDef(BaseModel):
    """An offered tool (only function tools exist in Chat Completions)."""

    type: Literal["function"] = "function"
    function: FunctionDef


class ChatRequest(BaseModel):
    """The fields of a chat completion request the demo model honours; others are ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[ToolDef] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


class EmbeddingsRequest(BaseModel):
    """An embeddings request: one text, a list of texts, or token arrays."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = Field(default=None, ge=1, le=4096)
    encoding_format: Literal["float", "base64"] = "float"


def chat_completions(body: bytes, ctx: RenderContext) -> Reply:
    """Render ``POST /v1/chat/completions``."""
    request = parse_body(ChatRequest, body)
    turns = [_turn(request, index) for index in range(request.n)]
    tools = [tool.model_dump() for tool in request.tools or ()]
    prompt = prompt_tokens(request.messages, [tools])
    visible = sum(turn.output.tokens for turn in turns)
    limit = request.max_completion_tokens or request.max_tokens
    usage = _usage(
        prompt,
        visible,
        cached=_cached_prefix(request, tools, ctx),
        reasoning=reasoning_tokens(request.model, visible, limit),
    )
    with_cost(usage, request.model, usage["prompt_tokens"], usage["completion_tokens"])
    frames = _Frames(f"chatcmpl-{ctx.request_id}", ctx.created, request.model)
    if request.stream:
        wants_usage = bool((request.stream_options or {}).get("include_usage"))
        return _stream(frames, turns, usage if wants_usage and ctx.include_usage else None)
    payload: dict[str, Any] = {
        **frames.envelope("chat.completion"),
        "choices": [_choice(index, turn) for index, turn in enumerate(turns)],
    }
    if ctx.include_usage:
        payload["usage"] = usage
    return JsonReply(orjson.dumps(payload))


def _turn(request: ChatRequest, index: int) -> Turn:
    seed = seed_of(request.model, request.messages, index)
    specs = [ToolSpec(tool.function.name, tool.function.parameters) for tool in request.tools or ()]
    try:
        tool = choose_tool(
            specs, _tool_choice(request.tool_choice), last_user_text(request.messages)
        )
    except LookupError:
        raise UpstreamError(
            400, "tool_choice names a tool not in tools", param="tool_choice"
        ) from None
    if tool is not None:
        return tool_turn(tool, seed)
    stops = [request.stop] if isinstance(request.stop, str) else request.stop or []
    limit = request.max_completion_tokens or request.max_tokens
    return Turn(shape(_text(request.response_format, seed), stops, limit))


def _tool_choice(raw: str | dict[str, Any] | None) -> ToolChoice:
    if isinstance(raw, dict):
        name = (raw.get("function") or {}).get("name")
        return ToolChoice("named", name) if isinstance(name, str) else ToolChoice()
    return ToolChoice(raw or "auto")


def _text(response_format: dict[str, Any] | None, seed: int) -> str:
    kind = (response_format or {}).get("type", "text")
    if kind == "json_object":
        return json_text(seed, None)
    if kind == "json_schema":
        return json_text(seed, (response_format or {}).get("json_schema", {}).get("schema"))
    return prose(seed)


def _usage(prompt: int, visible: int, *, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    completion = visible + reasoning
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": min(cached, prompt)},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _cached_prefix(request: ChatRequest, tools: list[Any], ctx: RenderContext) -> int:
    """Cached prompt tokens: the demo caches only for requests with ``prompt_cache_key``.

    (OpenAI caches on its own; opting in keeps every other test's numbers fixed.) Every message
    but the last, and the tools, are read from the cache when the same key sent them before.
    """
    key = (request.model_extra or {}).get("prompt_cache_key")
    if not isinstance(key, str) or len(request.messages) < 2:
        return 0
    prefix = request.messages[:-1]
    if not ctx.cached(cache_key("openai", request.model, key, prefix, tools)):
        return 0
    return prompt_tokens(prefix, [tools])


def _choice(index: int, turn: Turn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.output.text, "refusal": None}
    if turn.tool is not None:
        message["content"] = None
        message["tool_calls"] = [_tool_call(turn)]
    finish = FINISH_REASONS[turn.output.finish]
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}


def _tool_call(turn: Turn) -> dict[str, Any]:
    assert turn.tool is not None
    function = {"name": turn.tool.name, "arguments": turn.tool.arguments_json}
    return {"id": f"call_{turn.tool.call_id}", "type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class _Frames:
    """Builds the envelope every completion object and chunk of one response shares."""

    completion_id: str
    created: int
    model: str

    def envelope(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
        }

    def chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse_data({**self.envelope("chat.completion.chunk"), "choices": [choice]})


def _stream(frames: _Frames, turns: list[Turn], usage: dict[str, Any] | None) -> StreamReply:
    head = tuple(frames.chunk(index, _opening(turn)) for index, turn in enumerate(turns))
    chunks = tuple(
        frames.chunk(index, _delta(turn, piece))
        for index, turn in enumerate(turns)
        for piece in turn.output.pieces
    )
    finishes = [
        frames.chunk(index, {}, FINISH_REASONS[turn.output.finish])
        for index, turn in enumerate(turns)
    ]
    if usage is not None:
        finishes.append(
            sse_data({**frames.envelope("chat.completion.chunk"), "choices": [], "usage": usage})
        )
    return StreamReply(head, chunks, (*finishes, SSE_DONE))


def _opening(turn: Turn) -> dict[str, Any]:
    if turn.tool is None:
        return {"role": "assistant", "content": "", "refusal": None}
    call = _tool_call(turn)
    call["function"]["arguments"] = ""
    return {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call}]}


def _delta(turn: Turn, piece: str) -> dict[str, Any]:
    if turn.tool is None:
        return {"content": piece}
    return {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}


def embeddings(body: bytes, ctx: RenderContext) -> Reply:
    """Render ``POST /v1/embeddings``."""
    request = parse_body(EmbeddingsRequest, body)
    texts = _texts(request.input)
    if not texts:
        raise UpstreamError(400, "input must not be empty", param="input")
    dimensions = request.dimensions or DEFAULT_DIMENSIONS
    data = []
    for index, text in enumerate(texts):
        vector = embedding(request.model, text, dimensions)
        encoded = pack_base64(vector) if request.encoding_format == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    payload: dict[str, Any] = {"object": "list", "data": data, "model": request.model}
    if ctx.include_usage:
        tokens = sum(max(1, approx_tokens(text)) for text in texts)
        payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return JsonReply(orjson.dumps(payload))


def _texts(raw: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if raw and all(isinstance(item, int) for item in raw):
        return [" ".join(map(str, raw))]  # one input given as token ids
    return [_input_text(item) for item in raw]


def _input_text(item: object) -> str:
    return " ".join(map(str, item)) if isinstance(item, list) else str(item)


def models(_body: bytes, _ctx: RenderContext) -> Reply:
    """Render ``GET /v1/models``: a fixed list (any model name is accepted anyway)."""
    data = [
        {"id": name, "object": "model", "created": MODELS_CREATED, "owned_by": "tollway-demo"}
        for name in MODELS
    ]
    return JsonReply(orjson.dumps({"object": "list", "data": data}))
