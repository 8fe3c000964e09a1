"""The operator's API under ``/admin/v1`` (bearer admin token): accounts, keys, top-ups.

Top-ups are not written here: the edge publishes ``TopUpRequested`` and the ledger, the only
writer of money, applies it once per idempotency key.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any, Literal

from litestar import Controller, Request, post
from litestar.di import Provide
from pydantic import BaseModel, Field

from tollway.edge import errors
from tollway.edge.keys import display_prefix, hash_key, new_key
from tollway.edge.publish import publish_request
from tollway.events.envelope import make
from tollway.events.gateway import TopUpRequested
from tollway.events.ids import new_id
from tollway.events.pricing import to_micro

if TYPE_CHECKING:
    import asyncpg
    from aiokafka import AIOKafkaProducer


class NewAccount(BaseModel):
    """Open an account with a default project."""

    name: str = Field(min_length=1, max_length=200)
    id: str | None = Field(default=None, pattern=r"^[a-z0-9_-]{3,64}$")


class NewKey(BaseModel):
    """Issue a key for an account's project."""

    account_id: str
    project_id: str | None = None
    name: str = ""
    allowed_models: list[str] | None = None
    route_types: list[Literal["direct", "pool"]] = ["direct", "pool"]


class NewTopUp(BaseModel):
    """Credit a bucket; ``amount`` is a decimal string of units (``"25.50"``)."""

    account_id: str
    bucket: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    unit: str = Field(min_length=1, max_length=16)
    amount: str
    idempotency_key: str = Field(min_length=1, max_length=200)
    reason: str = ""


def require_admin(request: Request[Any, Any, Any]) -> None:
    """401 unless the bearer token equals the configured admin token."""
    expected: str = request.app.state.admin_token
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise errors.AuthenticationError(
            "A valid admin token is required.", code="invalid_admin_token"
        )


async def create_account(pool: asyncpg.Pool, data: NewAccount) -> dict[str, Any]:
    """Insert an account and its default project."""
    account_id = data.id or f"acct_{new_id()[-12:]}"
    project_id = f"proj_{new_id()[-12:]}"
    async with pool.acquire() as conn, conn.transaction():
        exists = await conn.fetchval("SELECT 1 FROM edge.accounts WHERE id = $1", account_id)
        if exists:
            raise errors.InvalidRequestError(
                f"Account '{account_id}' already exists.", param="id", code="account_exists"
            )
        await conn.execute(
            "INSERT INTO edge.accounts (id, name) VALUES ($1, $2)", account_id, data.name
        )
        await conn.execute(
            "INSERT INTO edge.projects (id, account_id, name) VALUES ($1, $2, 'default')",
            project_id,
            account_id,
        )
    return {"id": account_id, "name": data.name, "default_project_id": project_id}


async def create_key(pool: asyncpg.Pool, data: NewKey) -> dict[str, Any]:
    """Issue a key; the secret is returned here once and stored only as a digest."""
    project_id = data.project_id or await pool.fetchval(
        "SELECT id FROM edge.projects WHERE account_id = $1 ORDER BY created_at LIMIT 1",
        data.account_id,
    )
    owner = await pool.fetchval("SELECT account_id FROM edge.projects WHERE id = $1", project_id)
    if owner is None or owner != data.account_id:
        raise errors.NotFoundError("No such account or project.", param="account_id")
    secret = new_key()
    key_id = f"key_{new_id()[-12:]}"
    await pool.execute(
        "INSERT INTO edge.api_keys (id, key_hash, prefix, account_id, project_id, name,"
        " allowed_models, route_types) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        key_id,
        hash_key(secret),
        display_prefix(secret),
        data.account_id,
        project_id,
        data.name,
        data.allowed_models,
        list(data.route_types),
    )
    return {"id": key_id, "key": secret, "account_id": data.account_id, "project_id": project_id}


async def request_topup(producer: AIOKafkaProducer, data: NewTopUp) -> dict[str, Any]:
    """Publish the top-up for the ledger; answer with the event id to follow."""
    try:
        micro = to_micro(data.amount)
    except ValueError as exc:
        raise errors.InvalidRequestError(str(exc), param="amount") from None
    if micro <= 0:
        raise errors.InvalidRequestError("'amount' must be positive.", param="amount")
    env = make(
        TopUpRequested(
            account_id=data.account_id,
            bucket=data.bucket,
            unit=data.unit,
            amount_micro=micro,
            idempotency_key=data.idempotency_key,
            reason=data.reason,
        )
    )
    await publish_request(
        producer,
        data.account_id,
        env,
        "Retry with the same idempotency key: it is applied at most once.",
    )
    return {"event_id": env.id, "amount_micro": micro, "status": "accepted"}


class AdminController(Controller):
    """Operator endpoints; every one needs the admin token."""

    path = "/admin/v1"
    dependencies = {"_admin": Provide(require_admin, sync_to_thread=False)}  # noqa: RUF012

    @post("/accounts", status_code=201)
    async def accounts(
        self, request: Request[Any, Any, Any], data: NewAccount, _admin: None
    ) -> dict[str, Any]:
        """Open an account."""
        return await create_account(request.app.state.pool, data)

    @post("/keys", status_code=201)
    async def keys(
        self, request: Request[Any, Any, Any], data: NewKey, _admin: None
    ) -> dict[str, Any]:
        """Issue an API key (the secret is shown once)."""
        return await create_key(request.app.state.pool, data)

    @post("/topups", status_code=202)
    async def topups(
        self, request: Request[Any, Any, Any], data: NewTopUp, _admin: None
    ) -> dict[str, Any]:
        """Request a top-up; the ledger applies it once per idempotency key."""
        return await request_topup(request.app.state.producer, data)
