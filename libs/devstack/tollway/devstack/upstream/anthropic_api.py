"""Anthropic Messages as the demo upstream speaks it.

Pure rendering: a request body in, a ``JsonReply`` or ``StreamReply`` out. A stream is the exact
event sequence of the public API: ``message_start`` (with input usage), ``content_block_start``,
``ping``, one ``content_block_delta`` per output token, ``content_block_stop``,
``message_delta`` (stop reason and output usage), ``message_stop``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from tollway.devstack.upstream.content import (
    MESSAGE_OVERHEAD_TOKENS,
    Finish,
    ToolChoice,
    ToolSpec,
    Turn,
    cache_key,
    choose_tool,
    content_tokens,
    last_user_text,
    prompt_tokens,
    prose,
    seed_of,
    shape,
    tool_turn,
)
from tollway.devstack.upstream.cost import with_cost
from tollway.devstack.upstream.protocol import (
    JsonReply,
    RenderContext,
    Reply,
    StreamReply,
    UpstreamError,
    parse_body,
    sse_event,
)

STOP_REASONS = {
    Finish.END: "end_turn",
    Finish.STOP_SEQUENCE: "stop_sequence",
    Finish.LENGTH: "max_tokens",
    Finish.TOOL: "tool_use",
}
TOOL_CHOICE_MODES = {"auto": "auto", "any": "required", "none": "none", "tool": "named"}


class ToolDef(BaseModel):
    """An offered tool; server tools without a schema are accepted as schema-less."""

    model_config = ConfigDict(extra="allow")

    name: str
    input_schema: dict[str, Any] = Field(default_factory=dict)


class MessagesRequest(BaseModel):
    """The fields of a Messages request the demo model honours; others are ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int = Field(ge=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool = False
    stop_sequences: list[str] = Field(default_factory=list)
    tools: list[ToolDef] = Field(default_factory=list)
    tool_choice: dict[str, Any] | None = None


def messages(body: bytes, ctx: RenderContext) -> Reply:
    """Render ``POST /v1/messages``."""
    request = parse_body(MessagesRequest, body)
    turn = _turn(request)
    tools = [tool.model_dump() for tool in request.tools]
    usage = _usage(
        prompt_tokens(request.messages, [request.system, tools]),
        turn.output.tokens,
        _cache(request, tools, ctx),
    )
    billed_input = usage["input_tokens"] + usage["cache_creation_input_tokens"]
    billed_input += usage["cache_read_input_tokens"]
    with_cost(usage, request.model, billed_input, usage["output_tokens"])
    message: dict[str, Any] = {
        "id": f"msg_{ctx.request_id}",
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": [_block(turn, complete=True)],
        "stop_reason": STOP_REASONS[turn.output.finish],
        "stop_sequence": turn.output.stop_sequence,
    }
    if request.stream:
        return _stream(message, turn, usage if ctx.include_usage else None)
    if ctx.include_usage:
        message["usage"] = usage
    return JsonReply(orjson.dumps(message))


@dataclass(frozen=True, slots=True)
class _Cache:
    """What the prompt cache did for one request: tokens written (by ttl) and read."""

    write_5m: int = 0
    write_1h: int = 0
    read: int = 0


def _usage(prompt: int, output: int, cache: _Cache) -> dict[str, Any]:
    """Anthropic usage: ``input_tokens`` are the tokens after the last cache breakpoint."""
    cached = min(prompt, cache.read + cache.write_5m + cache.write_1h)
    return {
        "input_tokens": prompt - cached,
        "output_tokens": output,
        "cache_creation_input_tokens": cache.write_5m + cache.write_1h,
        "cache_read_input_tokens": cache.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache.write_5m,
            "ephemeral_1h_input_tokens": cache.write_1h,
        },
    }


def _cache(request: MessagesRequest, tools: list[dict[str, Any]], ctx: RenderContext) -> _Cache:
    """Prompt caching: the prefix up to the last ``cache_control`` block is cached.

    The prefix runs over tools, then system, then messages; its first request writes it (at the
    block's ttl), the ones after read it.
    """
    parts: list[Any] = []
    marked, ttl = 0, "5m"
    system = request.system if isinstance(request.system, list) else [request.system]
    contents = [m.get("content") for m in request.messages]
    blocks = [b for c in contents for b in (c if isinstance(c, list) else [c])]
    for part in [*tools, *system, *blocks]:
        parts.append(part)
        control = part.get("cache_control") if isinstance(part, dict) else None
        if isinstance(control, dict):
            marked, ttl = len(parts), str(control.get("ttl") or "5m")
    if not marked:
        return _Cache()
    prefix = parts[:marked]
    tokens = sum(content_tokens([p]) for p in prefix) + MESSAGE_OVERHEAD_TOKENS
    if ctx.cached(cache_key("anthropic", request.model, prefix)):
        return _Cache(read=tokens)
    return _Cache(write_1h=tokens) if ttl == "1h" else _Cache(write_5m=tokens)


def _turn(request: MessagesRequest) -> Turn:
    seed = seed_of(request.model, request.system, request.messages)
    specs = [ToolSpec(tool.name, tool.input_schema) for tool in request.tools]
    try:
        tool = choose_tool(
            specs, _tool_choice(request.tool_choice), last_user_text(request.messages)
        )
    except LookupError:
        raise UpstreamError(400, "tool_choice.name: no such tool", param="tool_choice") from None
    if tool is not None:
        return tool_turn(tool, seed)
    return Turn(shape(prose(seed), request.stop_sequences, request.max_tokens))


def _tool_choice(raw: dict[str, Any] | None) -> ToolChoice:
    if raw is None:
        return ToolChoice()
    mode = TOOL_CHOICE_MODES.get(str(raw.get("type")), "auto")
    name = raw.get("name") if mode == "named" else None
    return ToolChoice(mode, name if isinstance(name, str) else None)


def _block(turn: Turn, *, complete: bool) -> dict[str, Any]:
    if turn.tool is None:
        return {"type": "text", "text": turn.output.text if complete else ""}
    arguments = turn.tool.arguments if complete else {}
    return {
        "type": "tool_use",
        "id": f"toolu_{turn.tool.call_id}",
        "name": turn.tool.name,
        "input": arguments,
    }


def _stream(message: dict[str, Any], turn: Turn, usage: dict[str, Any] | None) -> StreamReply:
    opening = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    if usage is not None:
        # The real API reports input usage up front and a token of output so far.
        opening["usage"] = {**usage, "output_tokens": 1}
    head = (
        sse_event({"type": "message_start", "message": opening}),
        sse_event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": _block(turn, complete=False),
            }
        ),
        sse_event({"type": "ping"}),
    )
    chunks = tuple(
        sse_event({"type": "content_block_delta", "index": 0, "delta": _delta(turn, piece)})
        for piece in turn.output.pieces
    )
    closing: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
    }
    if usage is not None:
        closing["usage"] = {"output_tokens": usage["output_tokens"]}
        if "cost" in usage:  # OpenRouter-style: the final usage says what the call cost
            closing["usage"]["cost"] = usage["cost"]
    tail = (
        sse_event({"type": "content_block_stop", "index": 0}),
        sse_event(closing),
        sse_event({"type": "message_stop"}),
    )
    return StreamReply(head, chunks, tail)


def _delta(turn: Turn, piece: str) -> dict[str, Any]:
    if turn.tool is None:
        return {"type": "text_delta", "text": piece}
    return {"type": "input_json_delta", "partial_json": piece}
