"""The OpenAI dialect: calling an OpenAI-compatible channel, and speaking to an OpenAI client.

Channel side: chat completions (an Anthropic-format client's body translated), embeddings, usage
with cached input, the stream decoded into deltas. Client side: a stream encoded from deltas
when the channel spoke Anthropic, the error event that ends a failed stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from tollway.events.gateway import SseFrame
from tollway.events.pricing import Usage
from tollway.router import translate
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
from tollway.router.upstream import UpstreamCall

if TYPE_CHECKING:
    from tollway.events.gateway import RequestReceived

DONE = "[DONE]"


class UnsupportedEndpointError(ValueError):
    """The channel's dialect cannot serve this endpoint (not retryable)."""


def build_call(req: RequestReceived, upstream_model: str, secret: str) -> UpstreamCall:
    """The upstream request for ``req`` on an OpenAI-compatible channel."""
    headers = {"authorization": f"Bearer {secret}"}
    if req.endpoint == "embeddings":
        return UpstreamCall("/embeddings", {**req.body, "model": upstream_model}, headers)
    if req.endpoint == "responses":
        # Served natively; a Responses stream always ends with its usage (no option to ask).
        native: dict[str, Any] = {**req.body, "model": upstream_model, "stream": req.stream}
        native.pop("usage", None)
        return UpstreamCall("/responses", native, headers)
    body = req.body if req.protocol == "openai" else translate.anthropic_to_openai_request(req.body)
    payload: dict[str, Any] = {**body, "model": upstream_model, "stream": req.stream}
    payload.pop("usage", None)  # OpenRouter's ``usage: {include}`` is the gateway's, not OpenAI's
    if req.stream:
        # Always ask for usage: it settles the stream even when the client did not ask for it.
        payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    else:
        payload.pop("stream_options", None)
    return UpstreamCall("/chat/completions", payload, headers)


def read_usage(body: dict[str, Any]) -> Usage:
    """OpenAI ``usage`` (cached input and reasoning tokens included); zero when absent."""
    return usage_of(body.get("usage") or {})


def usage_of(raw: dict[str, Any]) -> Usage:
    """A Chat Completions or a Responses ``usage`` block as token classes."""
    if "input_tokens" in raw or "output_tokens" in raw:  # the Responses API's names
        prompt, completion = raw.get("input_tokens"), raw.get("output_tokens")
        prompt_details = raw.get("input_tokens_details") or {}
        completion_details = raw.get("output_tokens_details") or {}
    else:
        prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
        prompt_details = raw.get("prompt_tokens_details") or {}
        completion_details = raw.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(prompt or 0),
        output_tokens=int(completion or 0),
        cached_input_tokens=int(prompt_details.get("cached_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


def client_body(req: RequestReceived, body: dict[str, Any]) -> dict[str, Any]:
    """The upstream's answer as the client expects it, under the catalog model's name."""
    if req.protocol == "anthropic":
        return {**translate.openai_to_anthropic_response(body), "model": req.catalog_model}
    return {**body, "model": req.catalog_model}


@dataclass(slots=True)
class Decoder:
    """An OpenAI chunk stream as deltas."""

    started: bool = False

    def decode(self, frame: SseFrame) -> list[Delta]:
        """Deltas of one frame."""
        if frame.data.strip() == DONE:
            return [Done()]
        chunk = orjson.loads(frame.data)
        if not isinstance(chunk, dict):
            return []
        if chunk.get("error"):
            return [Failed(str((chunk["error"] or {}).get("message", "upstream error")))]
        out: list[Delta] = []
        if not self.started:
            self.started = True
            out.append(Started())
        for choice in chunk.get("choices") or []:
            out.extend(_choice_deltas(choice))
        usage = chunk.get("usage")
        if usage:
            out.append(_usage_seen(usage))
        return out


def _choice_deltas(choice: dict[str, Any]) -> list[Delta]:
    index = int(choice.get("index") or 0)
    delta = choice.get("delta") or {}
    out: list[Delta] = []
    if delta.get("content"):
        out.append(Text(index, str(delta["content"])))
    for call in delta.get("tool_calls") or []:
        tool = int(call.get("index") or 0)
        function = call.get("function") or {}
        if call.get("id") or function.get("name"):
            out.append(ToolStart(index, tool, str(call.get("id", "")), str(function.get("name"))))
        if function.get("arguments"):
            out.append(ToolArgs(index, tool, str(function["arguments"])))
    if choice.get("finish_reason"):
        out.append(Finished(index, str(choice["finish_reason"])))
    return out


def _usage_seen(usage: dict[str, Any]) -> UsageSeen:
    return UsageSeen.of(usage_of(usage))


def relay(frame: SseFrame, catalog_model: str, include_usage: bool) -> SseFrame | None:
    """Pass an OpenAI chunk through to an OpenAI client, renamed; usage only when asked for."""
    if frame.data.strip() == DONE:
        return frame
    chunk = orjson.loads(frame.data)
    if not isinstance(chunk, dict):
        return frame
    if not include_usage and chunk.get("usage") is not None:
        if not chunk.get("choices"):
            return None
        chunk["usage"] = None
    if "model" in chunk:
        chunk["model"] = catalog_model
    return SseFrame(data=orjson.dumps(chunk).decode())


@dataclass(slots=True)
class Encoder:
    """Deltas as an OpenAI chunk stream, for an OpenAI client served by another dialect."""

    completion_id: str
    model: str
    created: int
    include_usage: bool
    usage: dict[str, Any] = field(default_factory=dict)

    def encode(self, delta: Delta) -> list[SseFrame]:  # noqa: PLR0911 - one per delta kind
        """Frames for one delta."""
        if isinstance(delta, Started):
            return [self._chunk({"role": "assistant", "content": ""})]
        if isinstance(delta, Text):
            return [self._chunk({"content": delta.text}, delta.index)]
        if isinstance(delta, ToolStart):
            call = {"index": delta.tool, "id": delta.call_id, "type": "function"}
            call["function"] = {"name": delta.name, "arguments": ""}
            return [self._chunk({"tool_calls": [call]}, delta.index)]
        if isinstance(delta, ToolArgs):
            call = {"index": delta.tool, "function": {"arguments": delta.json}}
            return [self._chunk({"tool_calls": [call]}, delta.index)]
        if isinstance(delta, Finished):
            return [self._chunk({}, delta.index, delta.reason)]
        if isinstance(delta, UsageSeen):
            self._remember(delta)
            return []
        if isinstance(delta, Done):
            return self._closing()
        return []

    def _remember(self, seen: UsageSeen) -> None:
        if seen.input_tokens is not None:
            self.usage["prompt_tokens"] = seen.input_tokens
            self.usage["prompt_tokens_details"] = {"cached_tokens": seen.cached_input_tokens or 0}
        if seen.output_tokens is not None:
            self.usage["completion_tokens"] = seen.output_tokens
            reasoning = seen.reasoning_tokens or 0
            self.usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}

    def _closing(self) -> list[SseFrame]:
        frames = []
        if self.include_usage:
            usage = {"prompt_tokens": 0, "completion_tokens": 0, **self.usage}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            frames.append(self._frame({"choices": [], "usage": usage}))
        frames.append(SseFrame(data=DONE))
        return frames

    def _chunk(self, delta: dict[str, Any], index: int = 0, finish: str | None = None) -> SseFrame:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._frame({"choices": [choice]})

    def _frame(self, body: dict[str, Any]) -> SseFrame:
        head = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }
        return SseFrame(data=orjson.dumps({**head, **body}).decode())


def error_frames(message: str, code: str) -> list[SseFrame]:
    """The event that ends a failed stream: the OpenAI SDKs raise on a chunk with ``error``."""
    error = {"message": message, "type": "upstream_error", "param": None, "code": code}
    return [SseFrame(data=orjson.dumps({"error": error}).decode())]
