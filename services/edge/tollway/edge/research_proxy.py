"""Research at the gateway's base URL: ``$BASE/v1/research…`` is forwarded to the researcher.

Clients reach research where they reach everything else; the researcher stays its own service
(it calls the gateway back with the caller's own key, like any client). The caller's key is
passed through untouched; status, body and the progress stream come back as the researcher
sent them. Without ``TOLLWAY_EDGE_RESEARCHER_URL`` the routes answer 503 saying so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request, Response, route
from litestar.response import Stream

from tollway.edge import errors

if TYPE_CHECKING:
    from litestar.datastructures import State

    from tollway.edge.ui.research import ResearchClient

PREFIX = "/v1/research"


def _key(request: Request[Any, Any, State]) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    key = value.strip() if scheme.lower() == "bearer" else ""
    key = key or request.headers.get("x-api-key", "").strip()
    if not key:
        raise errors.AuthenticationError(
            "Send your Tollway API key as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    return key


@route([PREFIX, PREFIX + "/{rest:path}"], http_method=["GET", "POST"])
async def forward_research(
    request: Request[Any, Any, State], rest: str | None = None
) -> Response[bytes] | Stream:
    """Forward one research call (the SSE progress stream chunk by chunk)."""
    client: ResearchClient = request.app.state.ui_research
    key = _key(request)
    path = PREFIX + (rest or "").rstrip("/")
    if request.method == "GET" and path.endswith("/events"):
        if not client.configured:
            raise errors.DependencyDownError("Research is not configured on this gateway.")
        return Stream(client.stream(path, key), media_type="text/event-stream")
    answer = await client.call(
        request.method,
        path,
        key,
        content=await request.body(),
        params=dict(request.query_params),
        headers={"content-type": request.headers.get("content-type", "application/json")},
    )
    return Response(
        content=answer.content,
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type", "application/json"),
    )
