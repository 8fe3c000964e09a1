"""The one audit trail of operator changes (``edge.audit``) and ``GET /admin/v1/audit``.

Each row says who (``x-tollway-actor``) did what (``action`` = ``<kind>.<verb>``, on ``target``,
for ``account_id`` when there is one), from what to what (``before`` / ``after``).

- Changes the edge writes itself (accounts, projects, keys, webhooks, the route tree) go through
  :func:`mutate`: the change and its row commit in one transaction, or neither does.
- Commands the edge publishes for another service (top-ups, budgets, velocity limits, breaker
  resets, ledger corrections) go through :func:`published`: the row is written once the event
  log confirmed the command, with the event id to follow; when the log did not answer, the
  row says ``unconfirmed`` (the command may or may not be in the log) and the 503 stands.

Rows are append-only (the database refuses UPDATE and DELETE) and never carry a secret: fields
named like one are dropped before writing, whatever a caller passed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson
from litestar import Controller, Request, get
from litestar.di import Provide

from tollway.edge import errors
from tollway.edge.admin_auth import require_admin
from tollway.edge.listing import refuse_nul

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import asyncpg

    Views = tuple[dict[str, Any] | None, dict[str, Any] | None]

SECRET_FIELDS = frozenset({"secret", "key", "key_hash", "api_key", "token", "password"})
ACTOR_HEADER = "x-tollway-actor"
MAX_PAGE = 1000
INSERT = """
INSERT INTO edge.audit (actor, action, target, account_id, before, after)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING id
"""
# Newest first; the cursor is the last row's id (ids only grow).
SELECT = """
SELECT id, at, actor, action, kind, target, account_id, before, after FROM edge.audit
WHERE ($1::text IS NULL OR kind = $1)
  AND ($2::text IS NULL OR target = $2)
  AND ($3::text IS NULL OR account_id = $3)
  AND ($4::text IS NULL OR actor = $4)
  AND ($5::bigint IS NULL OR id < $5)
ORDER BY id DESC LIMIT $6
"""


@dataclass(frozen=True, slots=True)
class Change:
    """One audited mutation: its action, what it touched, and the views around it."""

    action: str
    target: str
    account_id: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters and the cursor of an audit listing."""

    kind: str | None = None
    target: str | None = None
    account_id: str | None = None
    actor: str | None = None
    before: int | None = None
    limit: int = 100


def actor_of(request: Request[Any, Any, Any]) -> str:
    """Who is acting: the ``x-tollway-actor`` header, else ``admin``."""
    return request.headers.get(ACTOR_HEADER, "").strip()[:100] or "admin"


def scrub(value: Any) -> Any:
    """``value`` without any field named like a secret, at any depth."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in SECRET_FIELDS}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(scrub(value)).decode()


async def record(conn: asyncpg.Connection | asyncpg.Pool, actor: str, change: Change) -> int:
    """Append ``change``'s row (in the caller's transaction when given a connection)."""
    audit_id: int = await conn.fetchval(
        INSERT,
        actor,
        change.action,
        change.target,
        change.account_id,
        _json(change.before),
        _json(change.after),
    )
    return audit_id


async def mutate(
    pool: asyncpg.Pool,
    actor: str,
    change: Change,
    apply: Callable[[asyncpg.Connection], Awaitable[Views]],
) -> tuple[dict[str, Any] | None, int | None]:
    """Run ``apply`` and append its row in one transaction; the after view and the row's id.

    A change whose after view equals its before view changed nothing and is not recorded (the
    id is None): revoking a revoked key twice leaves one row.
    """
    async with pool.acquire() as conn, conn.transaction():
        before, after = await apply(conn)
        if before is not None and before == after:
            return after, None
        audit_id = await record(conn, actor, replace(change, before=before, after=after))
    return after, audit_id


async def published(
    pool: asyncpg.Pool, actor: str, change: Change, send: Callable[[], Awaitable[None]]
) -> int:
    """Publish with ``send``, then append the row; an unanswered publish is recorded as such."""
    try:
        await send()
    except errors.DependencyDownError:
        unconfirmed = {**(change.after or {}), "status": "unconfirmed"}
        await record(pool, actor, replace(change, after=unconfirmed))
        raise
    return await record(pool, actor, change)


async def page(pool: asyncpg.Pool, query: AuditQuery) -> list[dict[str, Any]]:
    """The newest rows matching ``query``."""
    rows = await pool.fetch(
        SELECT, query.kind, query.target, query.account_id, query.actor, query.before, query.limit
    )
    return [
        {
            "id": r["id"],
            "at": r["at"].isoformat(),
            "actor": r["actor"],
            "action": r["action"],
            "kind": r["kind"],
            "target": r["target"],
            "account_id": r["account_id"],
            "before": None if r["before"] is None else orjson.loads(r["before"]),
            "after": None if r["after"] is None else orjson.loads(r["after"]),
        }
        for r in rows
    ]


class AuditController(Controller):
    """Read the audit trail; needs the admin token."""

    path = "/admin/v1"
    tags = ["audit"]  # noqa: RUF012
    dependencies = {"_admin": Provide(require_admin, sync_to_thread=False)}  # noqa: RUF012

    @get("/audit")
    async def audit(  # noqa: PLR0913 - one parameter per documented filter
        self,
        request: Request[Any, Any, Any],
        *,
        _admin: None,
        kind: str | None = None,
        target: str | None = None,
        subject: str | None = None,
        account_id: str | None = None,
        actor: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Who changed what, newest first; page with ``before=next_before``.

        ``kind`` is the action's first part (``account``, ``project``, ``key``, ``topup``,
        ``budget``, ``breaker``, ``velocity_limit``, ``webhook``, ``ledger``, ``channel``,
        ``model``, ``routes``); ``subject`` is the older name of ``target``.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise errors.InvalidRequestError(
                f"'limit' must be between 1 and {MAX_PAGE}.", param="limit"
            )
        refuse_nul(kind=kind, target=target, subject=subject, account_id=account_id, actor=actor)
        query = AuditQuery(kind, target or subject, account_id, actor, before, limit)
        rows = await page(request.app.state.pool, query)
        next_before = rows[-1]["id"] if len(rows) == limit else None
        return {"object": "list", "data": rows, "next_before": next_before}
