"""The client API: OpenAI chat and embeddings, Anthropic messages, the key's receipt and balance.

Handlers are thin: authenticate, parse, validate into a ``ClientCall``, hand it to the call
service; a stream becomes server-sent events, anything else one JSON answer.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from litestar import Request, Response, get, post
from litestar.response import Stream

from tollway.edge import errors, surfaces
from tollway.edge.auth import authenticate
from tollway.edge.calls import check_access, cost_headers
from tollway.edge.chat import ClientCall, chat_call, embeddings_call, messages_call, parse_json
from tollway.events.ids import new_id
from tollway.events.pricing import format_micro

if TYPE_CHECKING:
    from collections.abc import Callable

    from litestar.datastructures import State

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


SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def _serve(
    request: Request[Any, Any, State], validate: Callable[[dict[str, Any]], ClientCall]
) -> Response[Any]:
    key = await authenticate(request)
    raw = await request.body()
    if len(raw) > request.app.state.settings.max_body_bytes:
        raise errors.PayloadTooLargeError("The request body is too large.")
    call = validate(parse_json(raw))
    calls = request.app.state.calls
    task_id = task_header(request.headers.get(TASK_HEADER))
    request_id = request.state.request_id
    if call.stream:
        frames = await calls.stream(key, call, task_id, request_id)
        return Stream(frames, status_code=200, media_type="text/event-stream", headers=SSE_HEADERS)
    answer = await calls.complete(key, call, task_id, request_id)
    body = with_usage_cost(call.body, answer.body, answer.cost_micro)
    return Response(
        body, status_code=answer.status, headers=cost_headers(answer.cost_micro, answer.bucket)
    )


def with_usage_cost(asked: dict[str, Any], body: dict[str, Any], cost: int) -> dict[str, Any]:
    """``usage.cost`` (a number in the bucket's unit) when the client sent ``usage.include``.

    OpenRouter's convention; the exact figure is also in ``x-tollway-cost`` and the receipt.
    """
    option = asked.get("usage")
    usage = body.get("usage")
    if not (isinstance(option, dict) and option.get("include") is True):
        return body
    if not isinstance(usage, dict):
        return body
    return {**body, "usage": {**usage, "cost": float(format_micro(cost))}}


@post("/v1/chat/completions")
async def chat_completions(request: Request[Any, Any, State]) -> Response[Any]:
    """Create a chat completion (OpenAI), streamed when ``stream`` is true."""
    return await _serve(request, chat_call)


@post("/v1/embeddings")
async def embeddings(request: Request[Any, Any, State]) -> Response[Any]:
    """Create embeddings (OpenAI)."""
    return await _serve(request, embeddings_call)


@post("/v1/messages")
async def messages(request: Request[Any, Any, State]) -> Response[Any]:
    """Create a message (Anthropic), streamed when ``stream`` is true."""
    return await _serve(request, messages_call)


@post("/v1/responses")
async def responses(request: Request[Any, Any, State]) -> Response[Any]:
    """Create a response (OpenAI Responses API), streamed when ``stream`` is true."""
    return await _serve(request, surfaces.responses_call)


@get("/v1/responses/{response_id:str}")
async def stored_response(request: Request[Any, Any, State], response_id: str) -> None:
    """Stored responses: Tollway keeps none, so this is always a 404 that says so."""
    await authenticate(request)
    raise errors.NotFoundError(
        f"Response '{response_id}' is not stored: "
        + surfaces.NOT_STORED.format(field="GET /v1/responses/{id}"),
        code="response_not_stored",
    )


@post("/v1/messages/count_tokens", status_code=200)
async def count_tokens(request: Request[Any, Any, State]) -> dict[str, int]:
    """Count a Messages request's input tokens (Anthropic), as the worst-case hold counts them."""
    key = await authenticate(request)
    raw = await request.body()
    if len(raw) > request.app.state.settings.max_body_bytes:
        raise errors.PayloadTooLargeError("The request body is too large.")
    name, tokens = surfaces.count_tokens(parse_json(raw))
    check_access(key, await request.app.state.store.model(name), name)
    return {"input_tokens": tokens}


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
    """Each bucket's posted, held and available amounts (micro-units); the key's route types."""
    key = await authenticate(request)
    buckets = await request.app.state.store.balances(key.account_id)
    return {
        "account_id": key.account_id,
        "buckets": buckets,
        "key": {"route_types": list(key.route_types)},
    }


def new_request_id() -> str:
    """The id a request carries everywhere (header, events, receipt)."""
    return "req_" + new_id()
