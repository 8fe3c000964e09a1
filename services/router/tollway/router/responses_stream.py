"""Streams of the OpenAI Responses API: decoded into deltas, encoded from them, relayed.

A native stream (an OpenAI channel serving a Responses client) is relayed as it is, the model
renamed in the response objects, and decoded into deltas only to be counted. A stream from
another dialect (an Anthropic channel) is encoded from deltas into the public event sequence:
``response.created``, ``response.in_progress``, then per output item ``output_item.added``,
(``content_part.added``, ``output_text.delta``..., ``output_text.done``,
``content_part.done``) or (``function_call_arguments.delta``..., ``.done``),
``output_item.done``, and last ``response.completed`` (``response.incomplete`` when cut at
``max_output_tokens``), every event with its ``sequence_number``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tollway.events.gateway import SseFrame
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
from tollway.router.openai_adapter import usage_of
from tollway.router.responses_translate import (
    function_call_item,
    message_item,
    response_object,
)

TERMINAL = frozenset({"response.completed", "response.incomplete"})


@dataclass(slots=True)
class Decoder:
    """A Responses event stream as deltas."""

    tools: dict[int, int] = field(default_factory=dict)  # output index -> tool number

    def decode(self, frame: SseFrame) -> list[Delta]:  # noqa: PLR0911 - one per event type
        """Deltas of one event."""
        event = orjson.loads(frame.data)
        if not isinstance(event, dict):
            return []
        kind = event.get("type") or frame.event
        if kind == "response.created":
            return [Started()]
        if kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") != "function_call":
                return []
            tool = self.tools.setdefault(int(event.get("output_index") or 0), len(self.tools))
            return [ToolStart(0, tool, str(item.get("call_id", "")), str(item.get("name", "")))]
        if kind == "response.output_text.delta":
            return [Text(0, str(event.get("delta", "")))]
        if kind == "response.function_call_arguments.delta":
            tool = self.tools.get(int(event.get("output_index") or 0), 0)
            return [ToolArgs(0, tool, str(event.get("delta", "")))]
        if kind in TERMINAL:
            return self._terminal(kind, event.get("response") or {})
        if kind in {"response.failed", "error"}:
            error = (event.get("response") or {}).get("error") or event.get("error") or event
            return [Failed(str(error.get("message", "upstream error")))]
        return []

    def _terminal(self, kind: str, response: dict[str, Any]) -> list[Delta]:
        reason = "tool_calls" if self.tools else "stop"
        out: list[Delta] = [Finished(0, "length" if kind == "response.incomplete" else reason)]
        if response.get("usage"):
            out.append(UsageSeen.of(usage_of(response["usage"])))
        return [*out, Done()]


def relay(frame: SseFrame, catalog_model: str) -> SseFrame:
    """Pass a Responses event through to a Responses client, the model renamed."""
    event = orjson.loads(frame.data)
    if not isinstance(event, dict) or not isinstance(event.get("response"), dict):
        return frame
    event["response"]["model"] = catalog_model
    return SseFrame(event=frame.event, data=orjson.dumps(event).decode())


@dataclass(slots=True)
class Encoder:
    """Deltas as a Responses event stream, for a Responses client served by another dialect."""

    response_id: str
    request: dict[str, Any]
    seq: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)
    open_item: dict[str, Any] | None = None
    reason: str = "stop"
    usage: dict[str, Any] = field(default_factory=dict)

    def encode(self, delta: Delta) -> list[SseFrame]:  # noqa: PLR0911 - one per delta kind
        """Frames for one delta (choice 0 only: a Response has one output list)."""
        if isinstance(delta, Started):
            opening = self._response([], None, "in_progress")
            return [
                self._event("response.created", response=opening),
                self._event("response.in_progress", response=opening),
            ]
        if getattr(delta, "index", 0) != 0:
            return []
        if isinstance(delta, Text):
            return self._text(delta.text)
        if isinstance(delta, ToolStart):
            return self._tool_start(delta)
        if isinstance(delta, ToolArgs) and self.open_item is not None:
            self.open_item["arguments"] += delta.json
            where = self._where()
            return [
                self._event("response.function_call_arguments.delta", **where, delta=delta.json)
            ]
        if isinstance(delta, Finished):
            self.reason = delta.reason
        elif isinstance(delta, UsageSeen):
            self._remember(delta)
        elif isinstance(delta, Done):
            return self._closing()
        return []

    def _text(self, text: str) -> list[SseFrame]:
        head: list[SseFrame] = []
        if self.open_item is None or self.open_item["type"] != "message":
            head = self._close()
            item = message_item(f"msg_{self.response_id}_{len(self.items)}", "", "in_progress")
            head += self._open({**item, "text": ""})
            part = {"type": "output_text", "text": "", "annotations": []}
            head.append(self._event("response.content_part.added", **self._part(), part=part))
        assert self.open_item is not None  # opened just above
        self.open_item["text"] += text
        return [*head, self._event("response.output_text.delta", **self._part(), delta=text)]

    def _tool_start(self, delta: ToolStart) -> list[SseFrame]:
        block = {"id": delta.call_id, "name": delta.name}
        item = function_call_item(f"fc_{delta.call_id}", block, "", "in_progress")
        return [*self._close(), *self._open(item)]

    def _open(self, item: dict[str, Any]) -> list[SseFrame]:
        self.open_item = item
        shown = {k: v for k, v in item.items() if k != "text"}
        return [self._event("response.output_item.added", output_index=len(self.items), item=shown)]

    def _close(self) -> list[SseFrame]:
        item, self.open_item = self.open_item, None
        if item is None:
            return []
        where = {"item_id": item["id"], "output_index": len(self.items)}
        frames = []
        if item["type"] == "message":
            text = item.pop("text")
            done = message_item(item["id"], text)
            part = {"content_index": 0, **where}
            frames += [
                self._event("response.output_text.done", **part, text=text),
                self._event("response.content_part.done", **part, part=done["content"][0]),
            ]
        else:
            done = {**item, "status": "completed"}
            frames.append(
                self._event(
                    "response.function_call_arguments.done", **where, arguments=item["arguments"]
                )
            )
        frames.append(
            self._event("response.output_item.done", output_index=where["output_index"], item=done)
        )
        self.items.append(done)
        return frames

    def _closing(self) -> list[SseFrame]:
        frames = self._close()
        status = "incomplete" if self.reason == "length" else "completed"
        final = self._response(self.items, self._usage(), status)
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return [*frames, self._event(kind, response=final)]

    def _remember(self, seen: UsageSeen) -> None:
        if seen.input_tokens is not None:
            self.usage["input_tokens"] = seen.input_tokens
            self.usage["input_tokens_details"] = {"cached_tokens": seen.cached_input_tokens or 0}
        if seen.output_tokens is not None:
            self.usage["output_tokens"] = seen.output_tokens
            reasoning = seen.reasoning_tokens or 0
            self.usage["output_tokens_details"] = {"reasoning_tokens": reasoning}

    def _usage(self) -> dict[str, Any]:
        usage = {
            "input_tokens": 0,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            **self.usage,
        }
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        return usage

    def _where(self) -> dict[str, Any]:
        item = self.open_item or {}
        return {"item_id": item.get("id"), "output_index": len(self.items)}

    def _part(self) -> dict[str, Any]:
        return {**self._where(), "content_index": 0}

    def _response(
        self, output: list[dict[str, Any]], usage: dict[str, Any] | None, status: str
    ) -> dict[str, Any]:
        return response_object(self.response_id, self.request, list(output), usage, status)

    def _event(self, kind: str, **fields: Any) -> SseFrame:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return SseFrame(event=kind, data=orjson.dumps(event).decode())
