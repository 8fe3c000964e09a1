"""The OpenAI Responses API (``POST /v1/responses``) as the demo upstream speaks it.

Pure rendering, like the other dialects. Input (a string, or a list of messages, function calls
and function call outputs), ``instructions``, function tools, ``tool_choice``,
``max_output_tokens``, reasoning tokens for reasoning models and cached tokens for
``prompt_cache_key`` requests. A stream is the public event sequence: ``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``, one
``response.output_text.delta`` per output token (or ``response.function_call_arguments.delta``),
the matching ``.done`` events, then ``response.completed`` (``response.incomplete`` when
``max_output_tokens`` cut it); every event carries its ``sequence_number``. Nothing is stored:
``previous_response_id`` is refused.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from tollway.devstack.upstream.content import (
    Finish,
    ToolChoice,
    ToolSpec,
    Turn,
    cache_key,
    choose_tool,
    last_user_text,
    prompt_tokens,
    prose,
    reasoning_tokens,
    seed_of,
    shape,
    text_of,
    tool_turn,
)
from tollway.devstack.upstream.protocol import (
    JsonReply,
    RenderContext,
    Reply,
    StreamReply,
    UpstreamError,
    parse_body,
    sse_event,
)


class ResponsesRequest(BaseModel):
    """The fields of a Responses request the demo model honours; others are ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    stream: bool = False
    max_output_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    previous_response_id: str | None = None
    prompt_cache_key: str | None = None


def responses(body: bytes, ctx: RenderContext) -> Reply:
    """Render ``POST /v1/responses``."""
    request = parse_body(ResponsesRequest, body)
    if request.previous_response_id is not None:
        raise UpstreamError(
            400,
            "previous_response_id: this server stores no responses",
            param="previous_response_id",
        )
    messages = as_messages(request)
    if not messages:
        raise UpstreamError(400, "input: must not be empty", param="input")
    turn = _turn(request, messages)
    usage = _usage(request, messages, turn, ctx)
    response = _response(request, ctx, turn, usage if ctx.include_usage else None)
    if request.stream:
        return _stream(response, turn)
    return JsonReply(orjson.dumps(response))


def as_messages(request: ResponsesRequest) -> list[dict[str, Any]]:
    """Input items as chat-shaped messages (for seeding and counting only)."""
    out: list[dict[str, Any]] = []
    if request.instructions:
        out.append({"role": "system", "content": request.instructions})
    if isinstance(request.input, str):
        return [*out, {"role": "user", "content": request.input}]
    for item in request.input:
        kind = item.get("type", "message")
        if kind == "message":
            out.append({"role": item.get("role", "user"), "content": item.get("content")})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "function": {"arguments": item.get("arguments")}}
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "content": item.get("output")})
    return out


def _turn(request: ResponsesRequest, messages: list[dict[str, Any]]) -> Turn:
    seed = seed_of(request.model, messages)
    specs = [
        ToolSpec(str(t.get("name")), t.get("parameters") or {})
        for t in request.tools
        if t.get("type") == "function"
    ]
    try:
        tool = choose_tool(specs, _tool_choice(request.tool_choice), _user_text(messages))
    except LookupError:
        raise UpstreamError(400, "tool_choice: no such tool", param="tool_choice") from None
    if tool is not None:
        return tool_turn(tool, seed)
    return Turn(shape(prose(seed), [], request.max_output_tokens))


def _user_text(messages: list[dict[str, Any]]) -> str | None:
    last = messages[-1]
    if last.get("role") != "user":
        return None
    return last_user_text([{"role": "user", "content": text_of(last.get("content"))}])


def _tool_choice(raw: str | dict[str, Any] | None) -> ToolChoice:
    if isinstance(raw, dict):
        name = raw.get("name")
        return ToolChoice("named", name) if isinstance(name, str) else ToolChoice()
    return ToolChoice(raw or "auto")


def _usage(
    request: ResponsesRequest, messages: list[dict[str, Any]], turn: Turn, ctx: RenderContext
) -> dict[str, Any]:
    prompt = prompt_tokens(messages, [request.tools])
    visible = turn.output.tokens
    reasoning = reasoning_tokens(request.model, visible, request.max_output_tokens)
    cached = 0
    key = request.prompt_cache_key
    if key and len(messages) > 1 and ctx.cached(cache_key("responses", key, messages[:-1])):
        cached = min(prompt, prompt_tokens(messages[:-1], [request.tools]))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": visible + reasoning,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + visible + reasoning,
    }


def _item(turn: Turn, item_id: str, *, complete: bool) -> dict[str, Any]:
    status = "completed" if complete else "in_progress"
    if turn.tool is not None:
        return {
            "type": "function_call",
            "id": item_id,
            "call_id": f"call_{turn.tool.call_id}",
            "name": turn.tool.name,
            "arguments": turn.tool.arguments_json if complete else "",
            "status": status,
        }
    content = [_text_part(turn.output.text)] if complete else []
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def _response(
    request: ResponsesRequest, ctx: RenderContext, turn: Turn, usage: dict[str, Any] | None
) -> dict[str, Any]:
    cut = turn.output.finish is Finish.LENGTH
    return {
        "id": f"resp_{ctx.request_id}",
        "object": "response",
        "created_at": ctx.created,
        "status": "incomplete" if cut else "completed",
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": request.model,
        "output": [_item(turn, f"item_{ctx.request_id}", complete=True)],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "store": False,
        "tool_choice": request.tool_choice or "auto",
        "tools": request.tools,
        "usage": usage,
    }


def _stream(response: dict[str, Any], turn: Turn) -> StreamReply:
    events = _Sequence()
    item_id = response["output"][0]["id"]
    opening = {**response, "status": "in_progress", "output": [], "usage": None}
    opening["incomplete_details"] = None
    head = [
        events.next("response.created", response=opening),
        events.next("response.in_progress", response=opening),
        events.next(
            "response.output_item.added",
            output_index=0,
            item=_item(turn, item_id, complete=False),
        ),
    ]
    where = {"item_id": item_id, "output_index": 0}
    if turn.tool is None:
        part = {"content_index": 0, **where}
        head.append(events.next("response.content_part.added", **part, part=_text_part("")))
        chunks = [
            events.next("response.output_text.delta", **part, delta=piece)
            for piece in turn.output.pieces
        ]
        tail = [
            events.next("response.output_text.done", **part, text=turn.output.text),
            events.next("response.content_part.done", **part, part=_text_part(turn.output.text)),
        ]
    else:
        chunks = [
            events.next("response.function_call_arguments.delta", **where, delta=piece)
            for piece in turn.output.pieces
        ]
        arguments = turn.tool.arguments_json
        tail = [events.next("response.function_call_arguments.done", **where, arguments=arguments)]
    tail.append(
        events.next("response.output_item.done", output_index=0, item=response["output"][0])
    )
    final = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
    tail.append(events.next(final, response=response))
    return StreamReply(tuple(head), tuple(chunks), tuple(tail))


class _Sequence:
    """Numbers the events of one stream from 0."""

    def __init__(self) -> None:
        self.number = 0

    def next(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self.number, **fields}
        self.number += 1
        return sse_event(event)
