"""The client API: OpenAI-compatible chat completions and the key's self-service reads."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from litestar import Request, Response, get, post

from tollway.edge import errors
from tollway.edge.chat import parse_json, validate_chat
from tollway.edge.keys import hash_key
from tollway.events.envelope import utcnow
from tollway.events.ids import new_id

if TYPE_CHECKING:
    from litestar.datastructures import State

    from tollway.edge.store import KeyInfo

TASK_HEADER = "x-tollway-task"
TASK_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def task_header(value: str | None) -> str | None:
    """Validate ``X-Tollway-Task``; a malformed id is a 400 naming the header."""
    if value is None:
        return None
    if not TASK_ID.match(value):
        raise errors.InvalidRequestError(
            "The X-Tollway-Task header must be a task id returned by POST /v1/tasks.",
            param="X-Tollway-Task",
            code="invalid_task_id",
        )
    return value


async def authenticate(request: Request[Any, Any, State]) -> KeyInfo:
    """The key behind ``Authorization: Bearer tw-…``, or 401."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not token:
        raise errors.AuthenticationError(
            "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    key: KeyInfo | None = await request.app.state.store.key_by_hash(hash_key(token))
    if key is None:
        raise errors.AuthenticationError("Incorrect API key provided.")
    if key.revoked_at is not None:
        raise errors.AuthenticationError("This API key has been revoked.", code="revoked_api_key")
    if key.expires_at is not None and key.expires_at <= utcnow():
        raise errors.AuthenticationError("This API key has expired.", code="expired_api_key")
    return key


@post("/v1/chat/completions")
async def chat_completions(request: Request[Any, Any, State]) -> Response[Any]:
    """Create a chat completion (non-streaming)."""
    request_id = request.state.request_id
    key = await authenticate(request)
    raw = await request.body()
    if len(raw) > request.app.state.settings.max_body_bytes:
        raise errors.PayloadTooLargeError("The request body is too large.")
    body = parse_json(raw)
    chat = validate_chat(body)
    if chat.stream:
        raise errors.InvalidRequestError(
            "Streaming is not supported yet on this gateway.",
            param="stream",
            code="unsupported_parameter",
        )
    task_id = task_header(request.headers.get(TASK_HEADER))
    status, answer = await request.app.state.chat.complete(key, chat, body, task_id, request_id)
    return Response(answer, status_code=status)


@get("/v1/receipts/{request_id:str}")
async def receipt(request: Request[Any, Any, State], request_id: str) -> dict[str, Any]:
    """One request's receipt, for the key's own account only."""
    key = await authenticate(request)
    body = await request.app.state.store.receipt(request_id, key.account_id)
    if body is None:
        raise errors.NotFoundError(
            f"No receipt '{request_id}' for this account (yet).", code="receipt_not_found"
        )
    return body  # type: ignore[no-any-return]


@get("/v1/balance")
async def balance(request: Request[Any, Any, State]) -> dict[str, Any]:
    """Each bucket's posted, held and available amounts, in micro-units."""
    key = await authenticate(request)
    buckets = await request.app.state.store.balances(key.account_id)
    return {"account_id": key.account_id, "buckets": buckets}


def new_request_id() -> str:
    """The id a request carries everywhere (header, events, receipt)."""
    return "req_" + new_id()
