"""Relaying a streamed answer from the reply topic to the client as server-sent events.

Chunks are written in ``seq`` order as they arrive (a duplicate is dropped, an early one waits
for its turn) until the router's ``ReplyStreamEnd``. If the deadline passes first, the stream
ends with an error event in the client's dialect, never a clean end. If the client goes away
before the end, ``on_abandon`` tells the routers to stop the upstream call.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import orjson

from tollway.events.gateway import ReplyChunk, ReplyStreamEnd, SseFrame

if TYPE_CHECKING:
    import contextlib
    from collections.abc import AsyncIterator, Callable

    from tollway.events.envelope import Envelope, Payload
    from tollway.events.gateway import Protocol


def encode_frames(frames: list[SseFrame]) -> bytes:
    """Frames on the wire: ``event:`` when named, then ``data:``, then a blank line."""
    out = bytearray()
    for frame in frames:
        if frame.event is not None:
            out += b"event: " + frame.event.encode() + b"\n"
        out += b"data: " + frame.data.encode() + b"\n\n"
    return bytes(out)


def deadline_frames(protocol: Protocol) -> list[SseFrame]:
    """The error event that ends a stream whose deadline passed, in the client's dialect."""
    message = "The request's deadline passed before the stream ended."
    if protocol == "anthropic":
        error = {"type": "error", "error": {"type": "timeout_error", "message": message}}
        return [SseFrame(event="error", data=orjson.dumps(error).decode())]
    body = {"message": message, "type": "timeout", "param": None, "code": "deadline_exceeded"}
    return [SseFrame(data=orjson.dumps({"error": body}).decode())]


async def relay_stream(  # noqa: PLR0913, PLR0917 - the stream's whole context, handed over once
    stack: contextlib.ExitStack,
    inbox: asyncio.Queue[Envelope[Payload]],
    first: Envelope[Payload],
    protocol: Protocol,
    deadline: float,
    on_abandon: Callable[[], None],
) -> AsyncIterator[bytes]:
    """Yield the stream's bytes; ``stack`` (the inbox registration) closes when it ends."""
    ended = False
    try:
        with stack:
            ordered = _InOrder()
            ordered.add(first.payload)
            while not ended:
                for payload in ordered.ready():
                    ended = ended or isinstance(payload, ReplyStreamEnd)
                    yield encode_frames(payload.frames)
                if ended:
                    return
                remaining = deadline - asyncio.get_running_loop().time()
                try:
                    env = await asyncio.wait_for(inbox.get(), max(remaining, 0))
                except TimeoutError:
                    ended = True  # the router may still be streaming: it settles what it sent
                    on_abandon()
                    yield encode_frames(deadline_frames(protocol))
                    return
                ordered.add(env.payload)
    finally:
        if not ended:
            on_abandon()


class _InOrder:
    """Reorders chunks by ``seq``; drops what was already written."""

    def __init__(self) -> None:
        self._next = 0
        self._waiting: dict[int, ReplyChunk | ReplyStreamEnd] = {}

    def add(self, payload: Payload) -> None:
        if isinstance(payload, (ReplyChunk, ReplyStreamEnd)) and payload.seq >= self._next:
            self._waiting[payload.seq] = payload

    def ready(self) -> list[ReplyChunk | ReplyStreamEnd]:
        out = []
        while self._next in self._waiting:
            out.append(self._waiting.pop(self._next))
            self._next += 1
        return out
