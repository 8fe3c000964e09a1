"""The operator's tenancy API under ``/admin/v1`` (bearer admin token).

    POST /accounts              GET /accounts[?cursor=&limit=]     GET /accounts/{id}
    POST /projects              GET /projects?account_id=          GET /projects/{id}
    POST /keys                  GET /keys[?account_id=&project_id=&status=&cursor=&limit=]
    GET  /keys/{id}             POST /keys/{id}/revoke  (or DELETE /keys/{id})

Every mutation is audited (``tollway.edge.audit``) with the actor of ``x-tollway-actor``. A key's
secret appears once, in the answer to its creation, and nowhere else: not in lists, not in the
audit. A revocation is seen by this instance's next call at once and by every other instance
within a second (their key caches live that long at most).

Top-ups are not written here (``tollway.edge.topups``, ``POST /admin/v1/topups``): the ledger,
the only writer of money, applies them. Balances are the ledger's, served under
``/admin/v1/ledger/accounts/{id}``; an account here links to them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from litestar import Controller, Request, delete, get, post
from litestar.di import Provide
from pydantic import BaseModel, Field, field_validator

from tollway.edge import audit, errors, tenants
from tollway.edge.admin_auth import require_admin
from tollway.edge.keys import display_prefix, hash_key, new_key
from tollway.edge.listing import decode_cursor, encode_cursor, refuse_nul
from tollway.events.envelope import utcnow
from tollway.events.ids import new_id

if TYPE_CHECKING:
    import asyncpg

    from tollway.edge.store import EdgeStore

MAX_PAGE = 200
TEXT = r"^[^\x00]*$"  # Postgres text cannot hold NUL
Ref = Annotated[str, Field(min_length=1, max_length=200, pattern=TEXT)]


class NewAccount(BaseModel):
    """Open an account with a default project."""

    name: str = Field(min_length=1, max_length=200, pattern=TEXT)
    id: str | None = Field(default=None, pattern=r"^[a-z0-9_-]{3,64}$")


class NewProject(BaseModel):
    """Add a project to an account; names are unique per account."""

    account_id: Ref
    name: str = Field(min_length=1, max_length=100, pattern=TEXT)


class NewKey(BaseModel):
    """Issue a key for an account's project (its first project when ``project_id`` is absent).

    ``allowed_models`` limits the catalog models it may call (absent: all); ``route_types`` the
    routes that may serve it; ``expires_at`` ends it; ``metadata`` is the operator's own labels.
    """

    account_id: Ref
    project_id: Ref | None = None
    name: str = Field(default="", max_length=200, pattern=TEXT)
    allowed_models: list[Ref] | None = Field(default=None, min_length=1, max_length=500)
    route_types: list[Literal["direct", "pool"]] = Field(
        default=["direct", "pool"], min_length=1, max_length=2
    )
    expires_at: datetime | None = None
    metadata: dict[
        Annotated[str, Field(min_length=1, max_length=40, pattern=TEXT)],
        Annotated[str, Field(max_length=500, pattern=TEXT)],
    ] = Field(default_factory=dict, max_length=50)

    @field_validator("allowed_models", "route_types")
    @classmethod
    def _once_each(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(value))


def _pool(request: Request[Any, Any, Any]) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _page(rows: list[tuple[datetime, str, dict[str, Any]]], limit: int) -> dict[str, Any]:
    more = len(rows) == limit
    return {
        "object": "list",
        "data": [view for _, _, view in rows],
        "next_cursor": encode_cursor(rows[-1][0], rows[-1][1]) if rows and more else None,
    }


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise errors.InvalidRequestError(
            f"'limit' must be between 1 and {MAX_PAGE}.", param="limit"
        )
    return limit


def _expiry(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    if aware <= utcnow():
        raise errors.InvalidRequestError(
            "'expires_at' must be in the future.", param="expires_at", code="invalid_expiry"
        )
    return aware


async def create_account(
    request: Request[Any, Any, Any], data: NewAccount, actor: str | None = None
) -> dict[str, Any]:
    """Insert an account and its default project, audited together.

    Audited as ``actor`` when given (the dashboard's session), else the ``x-tollway-actor`` header.
    """
    account_id = data.id or f"acct_{new_id()[-12:]}"
    project_id = f"proj_{new_id()[-12:]}"

    async def apply(conn: asyncpg.Connection) -> audit.Views:
        view = await tenants.insert_account(conn, account_id, data.name)
        await tenants.insert_project(conn, project_id, account_id, "default")
        return None, {**view, "default_project_id": project_id}

    change = audit.Change("account.create", account_id, account_id)
    who = actor or audit.actor_of(request)
    after, audit_id = await audit.mutate(_pool(request), who, change, apply)
    return {**(after or {}), "audit_id": audit_id}


async def create_project(request: Request[Any, Any, Any], data: NewProject) -> dict[str, Any]:
    """Add a project to an account."""
    project_id = f"proj_{new_id()[-12:]}"

    async def apply(conn: asyncpg.Connection) -> audit.Views:
        return None, await tenants.insert_project(conn, project_id, data.account_id, data.name)

    change = audit.Change("project.create", project_id, data.account_id)
    after, audit_id = await audit.mutate(_pool(request), audit.actor_of(request), change, apply)
    return {**(after or {}), "audit_id": audit_id}


async def create_key(
    request: Request[Any, Any, Any], data: NewKey, actor: str | None = None
) -> dict[str, Any]:
    """Issue a key; the secret is returned here once and stored only as a digest."""
    expires_at = _expiry(data.expires_at)
    secret = new_key()
    key_id = f"key_{new_id()[-12:]}"

    async def apply(conn: asyncpg.Connection) -> audit.Views:
        project_id = await tenants.key_project(conn, data.account_id, data.project_id)
        await tenants.require_models(conn, data.allowed_models)
        values = data.model_dump(include={"account_id", "name", "allowed_models", "metadata"})
        await tenants.insert_key(
            conn,
            key_id,
            values
            | {
                "key_hash": hash_key(secret),
                "prefix": display_prefix(secret),
                "project_id": project_id,
                "route_types": list(data.route_types),
                "expires_at": expires_at,
            },
        )
        return None, await tenants.key(conn, key_id)

    change = audit.Change("key.create", key_id, data.account_id)
    who = actor or audit.actor_of(request)
    after, audit_id = await audit.mutate(_pool(request), who, change, apply)
    return {**(after or {}), "key": secret, "audit_id": audit_id}


async def revoke_key(
    request: Request[Any, Any, Any], key_id: str, actor: str | None = None
) -> dict[str, Any]:
    """Revoke a key (revoking it again changes and records nothing)."""
    refuse_nul(key_id=key_id)
    digest: list[bytes] = []

    async def apply(conn: asyncpg.Connection) -> audit.Views:
        before = await tenants.key(conn, key_id)
        revoked = await tenants.revoke(conn, key_id)
        if revoked is not None:
            digest.append(revoked)
        return before, await tenants.key(conn, key_id)

    current = await tenants.key(_pool(request), key_id)
    change = audit.Change("key.revoke", key_id, current["account_id"])
    who = actor or audit.actor_of(request)
    after, audit_id = await audit.mutate(_pool(request), who, change, apply)
    # Only after commit: a read between forgetting and committing would cache the live key.
    store: EdgeStore = request.app.state.store
    for revoked in digest:
        store.forget_key(revoked)
    return {**(after or {}), "audit_id": audit_id}


class AdminController(Controller):
    """Accounts, projects and keys; every endpoint needs the admin token."""

    path = "/admin/v1"
    tags = ["tenancy"]  # noqa: RUF012
    dependencies = {"_admin": Provide(require_admin, sync_to_thread=False)}  # noqa: RUF012

    @post("/accounts", status_code=201)
    async def new_account(
        self, request: Request[Any, Any, Any], data: NewAccount, _admin: None
    ) -> dict[str, Any]:
        """Open an account with a project named ``default``."""
        return await create_account(request, data)

    @get("/accounts")
    async def list_accounts(
        self,
        request: Request[Any, Any, Any],
        _admin: None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        """Accounts, newest first, with their project and key counts."""
        rows = await tenants.accounts(_pool(request), decode_cursor(cursor), _limit(limit))
        return _page(rows, limit)

    @get("/accounts/{account_id:str}")
    async def get_account(
        self, request: Request[Any, Any, Any], account_id: str, _admin: None
    ) -> dict[str, Any]:
        """An account with its projects and key counts; balances are behind ``links.ledger``."""
        refuse_nul(account_id=account_id)
        found = await tenants.account(_pool(request), account_id)
        return found | {"links": {"ledger": f"/admin/v1/ledger/accounts/{account_id}"}}

    @post("/projects", status_code=201)
    async def new_project(
        self, request: Request[Any, Any, Any], data: NewProject, _admin: None
    ) -> dict[str, Any]:
        """Add a project to an account."""
        return await create_project(request, data)

    @get("/projects")
    async def list_projects(
        self, request: Request[Any, Any, Any], account_id: str, _admin: None
    ) -> dict[str, Any]:
        """An account's projects, oldest first, with their keys counted by status."""
        refuse_nul(account_id=account_id)
        await tenants.require_account(_pool(request), account_id)
        return {"object": "list", "data": await tenants.projects(_pool(request), account_id)}

    @get("/projects/{project_id:str}")
    async def get_project(
        self, request: Request[Any, Any, Any], project_id: str, _admin: None
    ) -> dict[str, Any]:
        """One project with its keys counted by status."""
        refuse_nul(project_id=project_id)
        return await tenants.project(_pool(request), project_id)

    @post("/keys", status_code=201)
    async def new_key(
        self, request: Request[Any, Any, Any], data: NewKey, _admin: None
    ) -> dict[str, Any]:
        """Issue an API key; ``key`` (the secret) is in this answer and never again."""
        return await create_key(request, data)

    @get("/keys")
    async def list_keys(  # noqa: PLR0913 - one parameter per documented filter
        self,
        request: Request[Any, Any, Any],
        *,
        _admin: None,
        account_id: str | None = None,
        project_id: str | None = None,
        status: Literal["active", "revoked", "expired"] | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        """Keys, newest first, with their status; never a secret or its digest."""
        refuse_nul(account_id=account_id, project_id=project_id)
        pool = _pool(request)
        if account_id is not None:
            await tenants.require_account(pool, account_id)
        if project_id is not None:
            await tenants.project(pool, project_id)
        rows = await tenants.keys(
            pool,
            account_id=account_id,
            project_id=project_id,
            status=status,
            after=decode_cursor(cursor),
            limit=_limit(limit),
        )
        return _page(rows, limit)

    @get("/keys/{key_id:str}")
    async def get_key(
        self, request: Request[Any, Any, Any], key_id: str, _admin: None
    ) -> dict[str, Any]:
        """One key and its status."""
        refuse_nul(key_id=key_id)
        return await tenants.key(_pool(request), key_id)

    @post("/keys/{key_id:str}/revoke", status_code=200)
    async def revoke(
        self, request: Request[Any, Any, Any], key_id: str, _admin: None
    ) -> dict[str, Any]:
        """Revoke a key: its next call gets 401 ``revoked_api_key``."""
        return await revoke_key(request, key_id)

    @delete("/keys/{key_id:str}", status_code=200)
    async def delete_key(
        self, request: Request[Any, Any, Any], key_id: str, _admin: None
    ) -> dict[str, Any]:
        """Same as ``POST /keys/{id}/revoke``: a key is revoked, never erased."""
        return await revoke_key(request, key_id)
