"""Raw ASGI IO for the demo upstream: read a body, send a reply, stream, hang, cut.

The app is plain ASGI rather than a framework so that faults act on the wire itself: a hang
sends nothing at all until the client goes away, and a cut drops the connection mid-body. A cut
raises ``UpstreamCutError``; under uvicorn that closes the connection without finishing the
chunked body, and under ``httpx.ASGITransport`` the caller sees the same
``httpx.RemoteProtocolError`` family it would see from a real peer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NoReturn

import httpx

from tollway.devstack.upstream.protocol import JsonReply, Reply, StreamReply

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = tuple[tuple[bytes, bytes], ...]

JSON_HEADERS: Headers = ((b"content-type", b"application/json"),)
SSE_HEADERS: Headers = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
)


class ClientDisconnectedError(Exception):
    """The client went away before the request body was read."""


class UpstreamCutError(httpx.RemoteProtocolError):
    """Raised to drop the connection mid-response (the ``cut_stream`` fault)."""


async def read_body(receive: Receive) -> bytes:
    """Read the whole request body."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_json(send: Send, status: int, body: bytes, headers: Headers = ()) -> None:
    """Send a complete JSON response."""
    length = (b"content-length", str(len(body)).encode())
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, *JSON_HEADERS, length],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_reply(
    send: Send, reply: Reply, headers: Headers, *, delay_s: float, cut_after: int | None
) -> None:
    """Send ``reply``; with ``cut_after`` set, drop the connection part way instead of finishing."""
    if isinstance(reply, StreamReply):
        await _send_stream(send, reply, headers, delay_s, cut_after)
    elif cut_after is not None:
        await _send_truncated(send, reply, headers)
    else:
        await send_json(send, reply.status, reply.body, headers)


async def _send_stream(
    send: Send, reply: StreamReply, headers: Headers, delay_s: float, cut_after: int | None
) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [*headers, *SSE_HEADERS]})
    chunks = reply.chunks if cut_after is None else reply.chunks[:cut_after]
    if delay_s:
        await _send_paced(send, reply.head, chunks, delay_s)
    else:
        # Nothing to pace: one write keeps the upstream cheap and off a benchmark's critical path.
        await _more(send, b"".join((*reply.head, *chunks)))
    if cut_after is not None:
        # Also when the stream is shorter than ``after_chunks``: never send its terminal events.
        _cut(len(chunks))
    await send({"type": "http.response.body", "body": b"".join(reply.tail), "more_body": False})


async def _send_paced(
    send: Send, head: tuple[bytes, ...], chunks: tuple[bytes, ...], delay_s: float
) -> None:
    await _more(send, b"".join(head))
    for frame in chunks:
        await asyncio.sleep(delay_s)
        await _more(send, frame)


async def _send_truncated(send: Send, reply: JsonReply, headers: Headers) -> NoReturn:
    # Announce the full length, deliver half: the client sees an incomplete body.
    length = (b"content-length", str(len(reply.body)).encode())
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": [*headers, *JSON_HEADERS, length],
        }
    )
    await _more(send, reply.body[: len(reply.body) // 2])
    _cut(0)


async def _more(send: Send, body: bytes) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": True})


def _cut(chunks_sent: int) -> NoReturn:
    message = f"demo upstream cut the connection after {chunks_sent} chunks"
    raise UpstreamCutError(message)


async def wait_for_disconnect(receive: Receive, seconds: float) -> bool:
    """Wait until the client disconnects (True) or ``seconds`` pass (False)."""
    try:
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return False
    return True
