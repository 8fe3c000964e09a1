"""Protocol adapters by channel: how a request is sent, how the answer and its usage are read.

A channel's ``adapter`` column names its dialect; the client's dialect is the request's
``protocol``. Each dialect lives in its own module (``openai_adapter``, ``anthropic_adapter``);
this module picks one and runs the non-streaming exchange.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import orjson

from tollway.events.tokens import input_tokens, kind_of_path
from tollway.router import anthropic_adapter, openai_adapter
from tollway.router.deltas import Meter
from tollway.router.openai_adapter import UnsupportedEndpointError
from tollway.router.upstream import (
    UpstreamCall,
    UpstreamResult,
    error_result,
    failure,
    ms_since,
    post_json,
    upstream_id,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from tollway.events.gateway import RequestReceived, SseFrame
    from tollway.events.pricing import Usage
    from tollway.router.channels import Channel
    from tollway.router.deltas import Delta


class StreamDecoder(Protocol):
    """Turns a channel's stream frames into deltas."""

    def decode(self, frame: SseFrame) -> list[Delta]:
        """Deltas of one frame."""
        ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """What the router needs from a channel's protocol adapter."""

    build_call: Callable[[RequestReceived, str, str], UpstreamCall]
    read_usage: Callable[[dict[str, Any]], Usage]
    client_body: Callable[[RequestReceived, dict[str, Any]], dict[str, Any]]
    decoder: Callable[[], StreamDecoder]


DIALECTS: dict[str, Dialect] = {
    "openai": Dialect(
        openai_adapter.build_call,
        openai_adapter.read_usage,
        openai_adapter.client_body,
        openai_adapter.Decoder,
    ),
    "anthropic": Dialect(
        anthropic_adapter.build_call,
        anthropic_adapter.read_usage,
        anthropic_adapter.client_body,
        anthropic_adapter.Decoder,
    ),
}


def unsupported(exc: Exception, started: float) -> UpstreamResult:
    """The channel cannot serve this endpoint: a client error, not worth a retry."""
    error = {
        "message": str(exc),
        "type": "invalid_request_error",
        "param": getattr(exc, "field", None),
        "code": "unsupported",
    }
    body = {"error": error}
    return failure("protocol_error", "unsupported_endpoint", started, status=400, body=body)


async def call_json(
    channel: Channel, req: RequestReceived, upstream_model: str, timeout_s: float
) -> UpstreamResult:
    """One non-streaming attempt on ``channel``, answered in the client's dialect."""
    dialect = DIALECTS[channel.adapter]
    started = time.perf_counter()
    try:
        call = dialect.build_call(req, upstream_model, channel.secret)
    except UnsupportedEndpointError as exc:
        return unsupported(exc, started)
    try:
        response = await post_json(channel, call, timeout_s)
    except httpx.TimeoutException as exc:
        return failure("timeout", type(exc).__name__, started)
    except httpx.HTTPError as exc:
        return failure("connect_error", type(exc).__name__, started)
    try:
        body = response.json()
    except ValueError:
        return failure(
            "protocol_error",
            "invalid_json",
            started,
            status=response.status_code,
            upstream_request_id=upstream_id(response),
        )
    if response.status_code >= 400 or not isinstance(body, dict):
        return error_result(response, body, started)
    return UpstreamResult(
        outcome="ok",
        status=response.status_code,
        body=dialect.client_body(req, body),
        usage=dialect.read_usage(body) if body.get("usage") else estimate_usage(req, body, call),
        latency_ms=ms_since(started),
        upstream_request_id=upstream_id(response),
        reported_cost_micro=channel.cost_reader.body(response.content),
    )


def estimate_usage(req: RequestReceived, body: dict[str, Any], call: UpstreamCall) -> Usage:
    """Usage of an answer that reported none, counted like a stream's (``estimated`` is set).

    Output is counted from the answer's text and tool calls, capped by the request's max output
    tokens; input is counted from the request actually sent (``sent_input_tokens``).
    """
    meter = Meter(sent_input_tokens(call), req.max_output_tokens)
    meter.chars = sum(_answer_chars(body.get(k)) for k in ("choices", "content", "output"))
    return meter.usage()


def sent_input_tokens(call: UpstreamCall) -> int:
    """The prompt of the request sent upstream, by the counter the worst-case hold uses."""
    return input_tokens(kind_of_path(call.path), call.payload)


def _answer_chars(part: Any) -> int:
    """Characters of generated text in an OpenAI ``choices`` or an Anthropic ``content`` list."""
    if isinstance(part, str):
        return len(part)
    if isinstance(part, list):
        return sum(_answer_chars(p) for p in part)
    if not isinstance(part, Mapping):
        return 0
    total = 0
    for key in ("message", "content", "text", "tool_calls", "function", "name", "arguments"):
        total += _answer_chars(part.get(key))
    if isinstance(part.get("input"), Mapping):  # an Anthropic tool_use block
        total += len(orjson.dumps(part["input"]))
    return total
