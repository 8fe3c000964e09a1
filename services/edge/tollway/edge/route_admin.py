"""Admin endpoints of the route tree (``/admin/v1``): channels, catalog models, routes.

Each handler builds one change (a function of the connection returning before/after views) and
hands it to :class:`RouteTreeStore.mutate`, which applies it with its audit row atomically (the
trail itself is served by ``tollway.edge.audit``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, get, patch, post, put
from litestar.di import Provide

from tollway.edge import errors
from tollway.edge.admin_auth import require_admin
from tollway.edge.audit import actor_of
from tollway.edge.route_tree import (
    LOCK_CHANNEL,
    SELECT_CHANNEL,
    SELECT_MODEL,
    ChannelPatch,
    ModelPatch,
    NewChannel,
    NewModel,
    RoutePlan,
    RouteTreeStore,
    channel_columns,
    channel_view,
)

if TYPE_CHECKING:
    import asyncpg

Views = tuple[dict[str, Any] | None, dict[str, Any] | None]
DEFAULT_BUCKET = {"direct": "credit", "pool": "wallet"}


async def _upsert(
    conn: asyncpg.Connection, table: str, key: str, key_value: str, columns: dict[str, Any]
) -> None:
    # Column names come from pydantic field names, never from client input.
    names = list(columns)
    if await conn.fetchval(f"SELECT 1 FROM {table} WHERE {key} = $1", key_value):  # noqa: S608
        sets = ", ".join(f"{n} = ${i + 2}" for i, n in enumerate(names))
        if sets:
            await conn.execute(
                f"UPDATE {table} SET {sets} WHERE {key} = $1",  # noqa: S608
                key_value,
                *columns.values(),
            )
        return
    cols = ", ".join([key, *names])
    marks = ", ".join(f"${i + 1}" for i in range(len(names) + 1))
    await conn.execute(
        f"INSERT INTO {table} ({cols}) VALUES ({marks})",  # noqa: S608
        key_value,
        *columns.values(),
    )


def create_channel(data: NewChannel) -> Any:
    """A change that adds a channel (409 when the id is taken)."""

    async def change(conn: asyncpg.Connection) -> Views:
        if await conn.fetchrow(SELECT_CHANNEL, data.id):
            raise errors.ConflictError(
                f"Channel '{data.id}' already exists; PATCH it instead.",
                param="id",
                code="channel_exists",
            )
        columns = channel_columns(data)
        columns.pop("id")
        columns.setdefault("name", data.id)
        columns.setdefault("bucket", DEFAULT_BUCKET[data.route_type])
        await _upsert(conn, "router.channels", "id", data.id, columns)
        return None, channel_view(await conn.fetchrow(SELECT_CHANNEL, data.id))

    return change


def patch_channel(channel_id: str, data: ChannelPatch) -> Any:
    """A change to an existing channel's fields."""

    async def change(conn: asyncpg.Connection) -> Views:
        row = await conn.fetchrow(LOCK_CHANNEL, channel_id)
        if row is None:
            raise errors.NotFoundError(f"No channel '{channel_id}'.", param="channel_id")
        await _upsert(conn, "router.channels", "id", channel_id, channel_columns(data))
        after = channel_view(await conn.fetchrow(SELECT_CHANNEL, channel_id))
        if data.secret is not None:
            after = {**after, "secret_rotated": True}
        return channel_view(row), after

    return change


def put_model(name: str, data: ModelPatch, *, create: bool) -> Any:
    """A change that creates or updates a catalog model."""

    async def change(conn: asyncpg.Connection) -> Views:
        row = await conn.fetchrow(SELECT_MODEL, name)
        if create and row is not None:
            raise errors.ConflictError(
                f"Model '{name}' already exists; PATCH it instead.",
                param="name",
                code="model_exists",
            )
        if not create and row is None:
            raise errors.NotFoundError(f"No catalog model '{name}'.", param="name")
        columns = data.model_dump(exclude_none=True, exclude={"name"})
        await _upsert(conn, "router.catalog_models", "name", name, columns)
        after = await conn.fetchrow(SELECT_MODEL, name)
        low, high = after["default_max_output_tokens"], after["max_output_tokens"]
        if low > high:
            raise errors.InvalidRequestError(
                f"default_max_output_tokens ({low}) exceeds max_output_tokens ({high}).",
                param="default_max_output_tokens",
            )
        return (None if row is None else dict(row)), dict(after)

    return change


def set_routes(name: str, plan: RoutePlan) -> Any:
    """A change that replaces a model's routed channels and their order."""

    async def change(conn: asyncpg.Connection) -> Views:
        if await conn.fetchrow(SELECT_MODEL, name) is None:
            raise errors.NotFoundError(f"No catalog model '{name}'.", param="name")
        ids = [r.channel_id for r in plan.routes]
        if len(set(ids)) != len(ids):
            raise errors.InvalidRequestError("A channel may appear once per model.", param="routes")
        known = {r["id"] for r in await conn.fetch("SELECT id FROM router.channels")}
        for i, channel_id in enumerate(ids):
            if channel_id not in known:
                raise errors.InvalidRequestError(
                    f"Unknown channel '{channel_id}'.", param=f"routes[{i}].channel_id"
                )
        select = (
            "SELECT channel_id, upstream_model, tier, weight FROM router.routes"
            " WHERE catalog_model = $1 ORDER BY tier, weight DESC, channel_id"
        )
        before = [dict(r) for r in await conn.fetch(select, name)]
        await conn.execute("DELETE FROM router.routes WHERE catalog_model = $1", name)
        await conn.executemany(
            "INSERT INTO router.routes (catalog_model, channel_id, upstream_model, tier, weight)"
            " VALUES ($1, $2, $3, $4, $5)",
            [(name, r.channel_id, r.upstream_model, r.tier, r.weight) for r in plan.routes],
        )
        after = [dict(r) for r in await conn.fetch(select, name)]
        return {"routes": before}, {"model": name, "routes": after}

    return change


def _store(request: Request[Any, Any, Any]) -> RouteTreeStore:
    store: RouteTreeStore = request.app.state.route_tree
    return store


class RouteTreeController(Controller):
    """Operators manage where each catalog model is served; every change is audited."""

    path = "/admin/v1"
    tags = ["route tree"]  # noqa: RUF012
    dependencies = {"_admin": Provide(require_admin, sync_to_thread=False)}  # noqa: RUF012

    @get("/route-tree")
    async def tree(self, request: Request[Any, Any, Any], _admin: None) -> dict[str, Any]:
        """Channel type → brand → channel → routed models, with live circuit state."""
        return await _store(request).tree()

    @post("/channels", status_code=201)
    async def new_channel(
        self, request: Request[Any, Any, Any], data: NewChannel, _admin: None
    ) -> dict[str, Any]:
        """Add a channel (its secret is stored sealed for upstream calls, never shown again)."""
        change = create_channel(_store(request).sealed(data, data.id))
        return await _store(request).mutate(actor_of(request), "channel.create", data.id, change)

    @patch("/channels/{channel_id:str}")
    async def edit_channel(
        self, request: Request[Any, Any, Any], channel_id: str, data: ChannelPatch, _admin: None
    ) -> dict[str, Any]:
        """Change prices, URL, secret, bucket, limits or enable/disable a channel."""
        change = patch_channel(channel_id, _store(request).sealed(data, channel_id))
        return await _store(request).mutate(actor_of(request), "channel.update", channel_id, change)

    @get("/channels/{channel_id:str}/health")
    async def channel_health(
        self, request: Request[Any, Any, Any], channel_id: str, _admin: None
    ) -> dict[str, Any]:
        """The channel's circuit transitions, newest first."""
        history = await _store(request).health_history(channel_id)
        return {"channel_id": channel_id, "transitions": history}

    @post("/models", status_code=201)
    async def new_model(
        self, request: Request[Any, Any, Any], data: NewModel, _admin: None
    ) -> dict[str, Any]:
        """Add a catalog model (routes come next, with PUT …/routes)."""
        change = put_model(data.name, data, create=True)
        return await _store(request).mutate(actor_of(request), "model.create", data.name, change)

    @patch("/models/{name:str}")
    async def edit_model(
        self, request: Request[Any, Any, Any], name: str, data: ModelPatch, _admin: None
    ) -> dict[str, Any]:
        """Change a catalog model's limits or enable/disable it."""
        change = put_model(name, data, create=False)
        return await _store(request).mutate(actor_of(request), "model.update", name, change)

    @put("/models/{name:str}/routes")
    async def routes(
        self, request: Request[Any, Any, Any], name: str, data: RoutePlan, _admin: None
    ) -> dict[str, Any]:
        """Replace the model's routed channels: tier 0 primary, 1 backup 1, …; weights."""
        change = set_routes(name, data)
        return await _store(request).mutate(actor_of(request), "routes.set", name, change)
