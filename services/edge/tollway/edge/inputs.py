"""What no endpoint accepts, refused once for all of them, before any handler runs.

- NUL in the path or the query string: no id or filter holds one, and Postgres text cannot.
- A JSON body nested deeper than :data:`MAX_DEPTH`: the event log's encoder stops at 254 levels,
  so a deeper body could be accepted and then fail to publish (a 503 that looks like an outage).
- An integer in a JSON body outside the signed 64-bit range: nothing stores or encodes it.
- NUL in any string or key of a JSON body, except on the model endpoints, whose prompts go to
  the upstream untouched and are never stored (their bodies are checked by ``chat.parse_json``).

The answer is the edge's usual 400 in the route's dialect (``errors.body_for``), with the
request id, so a half-written change can never start from such an input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from litestar.middleware import ASGIMiddleware

from tollway.edge import errors

if TYPE_CHECKING:
    from litestar.types import (
        ASGIApp,
        HTTPResponseBodyEvent,
        HTTPResponseStartEvent,
        Receive,
        ReceiveMessage,
        Scope,
        Send,
    )

MAX_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MODEL_ROUTES = ("/v1/chat/completions", "/v1/messages", "/v1/embeddings")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def check_json(value: Any, *, nul_ok: bool = False) -> None:
    """Raise a 400 for a value too deep, an integer out of range, or (unless ``nul_ok``) NUL.

    The error's ``param`` is where the value sits (``budgets.0.name``).
    """
    pending: list[tuple[Any, int, str]] = [(value, 1, "")]
    while pending:
        item, depth, where = pending.pop()
        if depth > MAX_DEPTH:
            raise errors.InvalidRequestError(
                f"The JSON body is nested deeper than {MAX_DEPTH} levels.", code="invalid_json"
            )
        if isinstance(item, dict):
            for key, inner in item.items():
                _text(str(key), nul_ok, where)
                pending.append((inner, depth + 1, _join(where, key)))
        elif isinstance(item, list):
            pending.extend((inner, depth + 1, _join(where, i)) for i, inner in enumerate(item))
        elif isinstance(item, str):
            _text(item, nul_ok, where)
        elif isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
            raise errors.InvalidRequestError(
                "A number in the request body is out of the 64-bit integer range.",
                param=where or None,
                code="invalid_json",
            )


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _text(value: str, nul_ok: bool, where: str) -> None:
    if not nul_ok and "\x00" in value:
        raise errors.InvalidRequestError(
            "NUL characters are not allowed in the request body.",
            param=where or None,
            code="invalid_request",
        )


class InputGuardMiddleware(ASGIMiddleware):
    """Refuse NUL in the path or query, and unacceptable JSON bodies, for every endpoint."""

    def __init__(self, max_body_bytes: int) -> None:
        """Bodies above ``max_body_bytes`` are left to the framework's own 413."""
        self.max_body_bytes = max_body_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Check, then hand the request on (its body replayed as it was read)."""
        path: str = scope.get("path", "")
        query: bytes = scope.get("query_string", b"")
        if "\x00" in path or b"%00" in query or b"\x00" in query:
            error = errors.InvalidRequestError(
                "NUL characters are not allowed in the path or the query.", code="invalid_request"
            )
            await _refuse(send, path, error)
            return
        if scope.get("method") not in BODY_METHODS or path.startswith(MODEL_ROUTES):
            await next_app(scope, receive, send)
            return
        read, body = await _read(receive, self.max_body_bytes)
        try:
            _check_body(body)
        except errors.GatewayError as exc:
            await _refuse(send, path, exc)
            return

        async def replay() -> ReceiveMessage:
            return read.pop(0) if read else await receive()

        await next_app(scope, replay, send)


def _check_body(body: bytes | None) -> None:
    if not body:
        return
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise errors.InvalidRequestError(
                f"The JSON body is nested deeper than {MAX_DEPTH} levels.", code="invalid_json"
            ) from None
        return  # not JSON (a form, or malformed): the framework answers it
    check_json(data)


async def _read(receive: Receive, limit: int) -> tuple[list[ReceiveMessage], bytes | None]:
    """The messages read, and the whole body (None when it was longer than ``limit``)."""
    read: list[ReceiveMessage] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            return read, None
        chunks.append(message.get("body", b""))
        if sum(map(len, chunks)) > limit:
            return read, None
        if not message.get("more_body", False):
            return read, b"".join(chunks)


async def _refuse(send: Send, path: str, error: errors.GatewayError) -> None:
    body = orjson.dumps(errors.body_for(error, path))
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": error.status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(start)
    await send(end)
