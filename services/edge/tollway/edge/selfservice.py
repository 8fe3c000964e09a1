"""Self-service reads for the key's own account: models, receipts, usage.

Everything is scoped to the authenticated key's account. Another account's project or key id is
"not found", exactly like an id that does not exist, so nothing about other tenants leaks.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from litestar import Request, get

from tollway.edge import errors
from tollway.edge.auth import authenticate
from tollway.edge.listing import decode_cursor, encode_cursor, refuse_nul
from tollway.edge.store import USAGE_GROUPS, ReceiptQuery

if TYPE_CHECKING:
    from litestar.datastructures import State

    from tollway.edge.store import KeyInfo

MAX_PAGE = 200
OWNER = "tollway"


def _visible(key: KeyInfo, name: str, route_types: tuple[str, ...]) -> bool:
    allowed = key.allowed_models is None or name in key.allowed_models
    return allowed and any(t in key.route_types for t in route_types)


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": OWNER}


@get("/v1/models")
async def list_models(request: Request[Any, Any, State]) -> dict[str, Any]:
    """The catalog, filtered by what the key may call."""
    key = await authenticate(request)
    catalog = await request.app.state.store.catalog()
    data = [_model(name) for name, types in catalog if _visible(key, name, types)]
    return {"object": "list", "data": data}


@get("/v1/models/{model:path}")
async def retrieve_model(request: Request[Any, Any, State], model: str) -> dict[str, Any]:
    """One catalog model, if the key may call it."""
    key = await authenticate(request)
    name = model.lstrip("/")
    catalog = dict(await request.app.state.store.catalog())
    if name not in catalog or not _visible(key, name, catalog[name]):
        raise errors.NotFoundError(
            f"The model '{name}' does not exist.", code="model_not_found", param="model"
        )
    return _model(name)


def _time(value: str | None, param: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise errors.InvalidRequestError(
            f"Invalid value for '{param}': expected an ISO 8601 time.", param=param
        ) from None


@get("/v1/receipts")
async def list_receipts(  # noqa: PLR0913 - one parameter per documented filter
    request: Request[Any, Any, State],
    *,
    project: str | None = None,
    key: str | None = None,
    task: str | None = None,
    model: str | None = None,
    since: str | None = None,
    until: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """The account's receipts, newest first, ``limit`` at a time (keyset pagination)."""
    caller = await authenticate(request)
    refuse_nul(project=project, key=key, task=task, model=model)
    store = request.app.state.store
    if not await store.owns(caller.account_id, project_id=project, key_id=key):
        raise errors.NotFoundError("No such project or key for this account.")
    query = ReceiptQuery(
        project=project,
        key=key,
        task=task,
        model=model,
        since=_time(since, "since"),
        until=_time(until, "until"),
        after=decode_cursor(cursor),
        limit=max(1, min(limit, MAX_PAGE)),
    )
    rows = await store.receipts(caller.account_id, query)
    more = len(rows) == query.limit
    return {
        "object": "list",
        "data": [body for _, _, body in rows],
        "next_cursor": encode_cursor(rows[-1][0], rows[-1][1]) if rows and more else None,
    }


@get("/v1/usage")
async def usage(
    request: Request[Any, Any, State],
    group_by: Literal["key", "project", "model", "route", "bucket", "day"] = "model",
    since: str | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    """Requests, tokens and charges (micro-units, per unit) of the account, grouped."""
    caller = await authenticate(request)
    assert group_by in USAGE_GROUPS
    rows = await request.app.state.store.usage(
        caller.account_id, group_by, _time(since, "since"), _time(until, "until")
    )
    return {"object": "list", "group_by": group_by, "data": rows}
