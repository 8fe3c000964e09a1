"""The client's side of a streamed answer: its dialect's frames, and the charge in the last one.

Frames are relayed as they are when the channel speaks the client's wire format (the model
renamed), else encoded from deltas. Three client formats: OpenAI chat chunks, Anthropic message
events, OpenAI Responses events. The stream's last event states the charge (``tollway``):
Anthropic's ``message_stop``, the Responses API's ``response.completed``, and for chat the last
chunk before ``[DONE]`` (chunks that end an answer, a finish or a usage chunk, are held back
until the end so that the last one can carry it; they come last anyway).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from tollway.events.gateway import SseFrame
from tollway.router import anthropic_adapter, openai_adapter, responses_stream
from tollway.router.deltas import Delta, Done, Failed, Finished, UsageSeen

if TYPE_CHECKING:
    from tollway.events.gateway import RequestReceived

DONE = "[DONE]"


def client_format(req: RequestReceived) -> str:
    """The client's wire format: ``openai`` (chat), ``anthropic`` or ``responses``."""
    return "responses" if req.endpoint == "responses" else req.protocol


def channel_format(req: RequestReceived, channel_dialect: str) -> str:
    """The wire format a channel answers ``req`` in (OpenAI channels serve Responses natively)."""
    native = channel_dialect == "openai" and req.endpoint == "responses"
    return "responses" if native else channel_dialect


class ClientStream:
    """Frames for the client: relayed when the formats match, else encoded from deltas."""

    def __init__(self, req: RequestReceived, channel_dialect: str, sent_tokens: int = 0) -> None:
        """Serve ``req``'s client from a channel speaking ``channel_dialect``.

        ``sent_tokens`` (the prompt sent upstream, counted) opens an Anthropic ``message_start``
        when the channel reports its input only at the end; the real count is in the closing
        ``message_delta`` as soon as the channel reports it.
        """
        self._req = req
        self._format = client_format(req)
        self._same = channel_format(req, channel_dialect) == self._format
        options = req.body.get("stream_options") or {}
        self._include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        self._held: list[SseFrame] = []
        self._encoder: Any
        if self._format == "responses":
            request = {**req.body, "model": req.catalog_model}
            self._encoder = responses_stream.Encoder(f"resp_{req.request_id}", request)
        elif self._format == "openai":
            self._encoder = openai_adapter.Encoder(
                f"chatcmpl-{req.request_id}", req.catalog_model, 0, self._include_usage
            )
        else:
            self._encoder = anthropic_adapter.Encoder(f"msg_{req.request_id}", req.catalog_model)
            self._encoder.usage["input_tokens"] = sent_tokens

    def frames(self, frame: SseFrame, deltas: list[Delta]) -> list[SseFrame]:
        """What the client gets for one upstream frame."""
        if not self._same:
            # Usage first: a frame that opens the answer and reports usage opens it with them.
            ordered = sorted(deltas, key=lambda d: not isinstance(d, UsageSeen))
            out: list[SseFrame] = []
            for delta in ordered:
                out += self._hold(self._encoder.encode(delta), delta)
            return out
        if isinstance(next(iter(deltas), None), Failed):
            return []  # the upstream's own error event is replaced by ours
        if self._format == "anthropic":
            return [anthropic_adapter.relay(frame, self._req.catalog_model)]
        if self._format == "responses":
            return [responses_stream.relay(frame, self._req.catalog_model)]
        relayed = openai_adapter.relay(frame, self._req.catalog_model, self._include_usage)
        ends = next((d for d in deltas if isinstance(d, (Finished, UsageSeen, Done))), None)
        return [] if relayed is None else self._hold([relayed], ends)

    def _hold(self, frames: list[SseFrame], delta: Delta | None) -> list[SseFrame]:
        """Chat only: hold back the chunks that end the answer (a finish, the usage) till [DONE].

        Judged by the frame's deltas, so a relayed chunk is not parsed a second time.
        """
        if self._format != "openai" or delta is None:
            return frames
        if isinstance(delta, Done):
            return [*self.pending(), *frames]
        if isinstance(delta, (Finished, UsageSeen)):
            self._held += frames
            return []
        return frames

    def with_cost(self, frames: list[SseFrame], cost: dict[str, Any]) -> list[SseFrame]:
        """The stream's last frames (``frames`` and any held back), the last event tagged."""
        if self._format == "anthropic":
            return [_tagged(f, cost) if f.event == "message_stop" else f for f in frames]
        if self._format == "responses":
            ends = responses_stream.TERMINAL
            return [_tagged(f, cost) if _event_type(f) in ends else f for f in frames]
        tail = [f for f in frames if f.data.strip() != DONE]
        done = [f for f in frames if f.data.strip() == DONE]
        if tail:
            tail[-1] = _tagged(tail[-1], cost)
        return [*tail, *done]

    def pending(self) -> list[SseFrame]:
        """Frames held back and not yet sent (the client gets them before an error event)."""
        held, self._held = self._held, []
        return held

    def error(self, message: str, code: str) -> list[SseFrame]:
        """The event that ends a failed stream in the client's dialect."""
        if self._format == "anthropic":
            return anthropic_adapter.error_frames(message, code)
        return [*self.pending(), *openai_adapter.error_frames(message, code)]


def _event_type(frame: SseFrame) -> str | None:
    if frame.event is not None:
        return frame.event
    event = orjson.loads(frame.data)
    return event.get("type") if isinstance(event, dict) else None


def _tagged(frame: SseFrame, cost: dict[str, Any]) -> SseFrame:
    event = orjson.loads(frame.data)
    return SseFrame(event=frame.event, data=orjson.dumps({**event, "tollway": cost}).decode())
