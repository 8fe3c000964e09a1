"""Every log line the edge writes while serving a request names the request and its task."""

from __future__ import annotations

from typing import Any

import structlog

from tollway.edge.api import TASK_HEADER
from tollway.edge.app import RequestIdMiddleware


async def _serve(headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, Any], list[Any]]:
    seen: dict[str, Any] = {}
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(structlog.contextvars.get_contextvars())
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "headers": headers}
    await RequestIdMiddleware().handle(scope, None, send, app)  # type: ignore[arg-type]
    return seen, sent


async def test_logs_while_serving_are_bound_to_the_request_and_task_ids() -> None:
    seen, sent = await _serve([(TASK_HEADER.encode(), b"task-42")])
    request_id = dict(sent[0]["headers"])[b"x-request-id"].decode()
    assert seen["request_id"] == request_id
    assert seen["task_id"] == "task-42"
    # The binding ends with the request: nothing leaks into the next one's logs.
    assert "request_id" not in structlog.contextvars.get_contextvars()


async def test_requests_without_a_task_bind_no_task_id() -> None:
    seen, _ = await _serve([])
    assert "task_id" not in seen
