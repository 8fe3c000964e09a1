"""The Anthropic Messages dialect: calling an Anthropic channel, and speaking to its clients.

Channel side: messages (an OpenAI-format client's chat body translated), usage with cache reads
and writes, the event stream decoded into deltas. Client side: the event stream encoded from
deltas when the channel spoke OpenAI (message_start, content_block_start/delta/stop,
message_delta with usage, message_stop, ping), and the ``error`` event that ends a failed stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from tollway.events.gateway import SseFrame
from tollway.events.pricing import Usage
from tollway.router import responses_translate, translate
from tollway.router.deltas import (
    Delta,
    Done,
    Failed,
    Finished,
    Started,
    Text,
    ToolArgs,
    ToolStart,
    UsageSeen,
)
from tollway.router.openai_adapter import UnsupportedEndpointError
from tollway.router.upstream import UpstreamCall

if TYPE_CHECKING:
    from tollway.events.gateway import RequestReceived

API_VERSION = "2023-06-01"


def build_call(req: RequestReceived, upstream_model: str, secret: str) -> UpstreamCall:
    """The upstream request for ``req`` on an Anthropic Messages channel."""
    if req.endpoint == "embeddings":
        raise UnsupportedEndpointError("an Anthropic channel cannot serve embeddings")
    if req.endpoint == "responses":
        body = responses_translate.to_anthropic_request(req.body, req.max_output_tokens)
    elif req.protocol == "anthropic":
        body = req.body
    else:
        body = translate.openai_to_anthropic_request(req.body, req.max_output_tokens)
    headers = {"x-api-key": secret, "anthropic-version": API_VERSION}
    payload = {**body, "model": upstream_model, "stream": req.stream}
    payload.pop("usage", None)  # the gateway's own option (usage.include), never the upstream's
    return UpstreamCall("/messages", payload, headers)


def read_usage(body: dict[str, Any]) -> Usage:
    """Anthropic ``usage``: input counts cache reads and writes too, so prices apply once."""
    return usage_of(body.get("usage") or {})


def usage_of(raw: dict[str, Any]) -> Usage:
    """An Anthropic ``usage`` block as token classes.

    ``cache_creation`` splits the writes by time to live (5 minutes, 1 hour); without it every
    write is a 5-minute one, the default ``cache_control`` ttl.
    """
    cached = int(raw.get("cache_read_input_tokens") or 0)
    writes = int(raw.get("cache_creation_input_tokens") or 0)
    split = raw.get("cache_creation") or {}
    hour = min(writes, int(split.get("ephemeral_1h_input_tokens") or 0))
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0) + cached + writes,
        output_tokens=int(raw.get("output_tokens") or 0),
        cached_input_tokens=cached,
        cache_write_tokens=writes - hour,
        cache_write_1h_tokens=hour,
    )


def client_body(req: RequestReceived, body: dict[str, Any]) -> dict[str, Any]:
    """The upstream's answer as the client expects it, under the catalog model's name."""
    if req.endpoint == "responses":
        request = {**req.body, "model": req.catalog_model}
        response_id = f"resp_{req.request_id}"
        return responses_translate.from_anthropic_response(body, request, response_id)
    if req.protocol == "openai":
        return {**translate.anthropic_to_openai_response(body), "model": req.catalog_model}
    return {**body, "model": req.catalog_model}


@dataclass(slots=True)
class Decoder:
    """An Anthropic event stream as deltas."""

    tools: dict[int, int] = field(default_factory=dict)  # content block index -> tool number

    def decode(self, frame: SseFrame) -> list[Delta]:  # noqa: PLR0911 - one per event type
        """Deltas of one event."""
        event = orjson.loads(frame.data)
        if not isinstance(event, dict):
            return []
        kind = event.get("type") or frame.event
        if kind == "message_start":
            usage = read_usage(event.get("message") or {})
            return [Started(), UsageSeen.of(usage, output=False)]
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_delta":
            return _message_delta(event)
        if kind == "message_stop":
            return [Done()]
        if kind == "error":
            return [Failed(str((event.get("error") or {}).get("message", "upstream error")))]
        return []

    def _block_start(self, event: dict[str, Any]) -> list[Delta]:
        block = event.get("content_block") or {}
        if block.get("type") == "tool_use":
            tool = self.tools.setdefault(int(event.get("index") or 0), len(self.tools))
            return [ToolStart(0, tool, str(block.get("id", "")), str(block.get("name", "")))]
        return [Text(0, str(block["text"]))] if block.get("text") else []

    def _block_delta(self, event: dict[str, Any]) -> list[Delta]:
        delta = event.get("delta") or {}
        if delta.get("type") == "input_json_delta":
            tool = self.tools.get(int(event.get("index") or 0), 0)
            return [ToolArgs(0, tool, str(delta.get("partial_json", "")))]
        return [Text(0, str(delta["text"]))] if delta.get("text") else []


def _message_delta(event: dict[str, Any]) -> list[Delta]:
    reason = str((event.get("delta") or {}).get("stop_reason"))
    out: list[Delta] = [Finished(0, translate.TO_OPENAI_FINISH.get(reason, "stop"))]
    usage = event.get("usage") or {}
    if "output_tokens" in usage:
        out.append(UsageSeen(output_tokens=int(usage["output_tokens"] or 0)))
    return out


def relay(frame: SseFrame, catalog_model: str) -> SseFrame:
    """Pass an Anthropic event through to an Anthropic client, the model renamed."""
    if frame.event != "message_start":
        return frame
    event = orjson.loads(frame.data)
    event.get("message", {})["model"] = catalog_model
    return SseFrame(event=frame.event, data=orjson.dumps(event).decode())


@dataclass(slots=True)
class Encoder:
    """Deltas as an Anthropic event stream, for an Anthropic client served by another dialect."""

    message_id: str
    model: str
    open_block: int | None = None
    blocks: int = 0
    stop_reason: str = "end_turn"
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0})

    def encode(self, delta: Delta) -> list[SseFrame]:  # noqa: PLR0911 - one per delta kind
        """Frames for one delta (choice 0 only: Messages has no ``n``)."""
        if isinstance(delta, Started):
            return [_event("message_start", {"message": self._message()}), _event("ping", {})]
        if getattr(delta, "index", 0) != 0:
            return []
        if isinstance(delta, Text):
            head = [] if self.open_block is not None else self._open({"type": "text", "text": ""})
            text = {"type": "text_delta", "text": delta.text}
            return [*head, _event("content_block_delta", {"index": self.open_block, "delta": text})]
        if isinstance(delta, ToolStart):
            block = {"type": "tool_use", "id": delta.call_id, "name": delta.name, "input": {}}
            return [*self._close(), *self._open(block)]
        if isinstance(delta, ToolArgs):
            part = {"type": "input_json_delta", "partial_json": delta.json}
            return [_event("content_block_delta", {"index": self.open_block, "delta": part})]
        if isinstance(delta, Finished):
            self.stop_reason = translate.TO_ANTHROPIC_STOP.get(delta.reason, "end_turn")
        elif isinstance(delta, UsageSeen):
            self._remember(delta)
        elif isinstance(delta, Done):
            return self._closing()
        return []

    def _message(self) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": dict(self.usage),
        }

    def _open(self, block: dict[str, Any]) -> list[SseFrame]:
        self.open_block, self.blocks = self.blocks, self.blocks + 1
        return [_event("content_block_start", {"index": self.open_block, "content_block": block})]

    def _close(self) -> list[SseFrame]:
        if self.open_block is None:
            return []
        index, self.open_block = self.open_block, None
        return [_event("content_block_stop", {"index": index})]

    def _remember(self, seen: UsageSeen) -> None:
        if seen.input_tokens is not None:
            self.usage.update(anthropic_input_usage(seen))
        if seen.output_tokens is not None:
            self.usage["output_tokens"] = seen.output_tokens

    def _closing(self) -> list[SseFrame]:
        tail: dict[str, Any] = {
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
            "usage": dict(self.usage),
        }
        return [*self._close(), _event("message_delta", tail), _event("message_stop", {})]


def anthropic_input_usage(seen: UsageSeen) -> dict[str, int]:
    """Input token classes in Anthropic's terms: ``input_tokens`` excludes cache reads/writes."""
    cached = seen.cached_input_tokens or 0
    write_5m = seen.cache_write_tokens or 0
    write_1h = seen.cache_write_1h_tokens or 0
    return {
        "input_tokens": max(0, (seen.input_tokens or 0) - cached - write_5m - write_1h),
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_read_input_tokens": cached,
    }


def _event(kind: str, body: dict[str, Any]) -> SseFrame:
    return SseFrame(event=kind, data=orjson.dumps({"type": kind, **body}).decode())


def error_frames(message: str, code: str) -> list[SseFrame]:
    """The ``error`` event that ends a failed stream (the Anthropic SDKs raise on it)."""
    kind = "overloaded_error" if code == "overloaded" else "api_error"
    return [_event("error", {"error": {"type": kind, "message": message}})]
