"""Operator endpoints of the limits feature under ``/admin/v1`` (bearer admin token).

    GET  /admin/v1/breakers              every breaker's latest record, as this edge sees it
    POST /admin/v1/breakers/reset        close an open breaker (a ``BreakerReset`` record)
    POST /admin/v1/velocity-limits       thresholds for an account, key, project or task
    POST /admin/v1/webhooks              subscribe a URL to alerts (the secret is shown once)
    GET  /admin/v1/webhooks              the subscriptions (never their secrets)
    DELETE /admin/v1/webhooks/{id}       stop delivering to a subscription

Velocity limits travel on gw.requests with the account's traffic, so the limits service applies
them in log order; resets go straight to ``limits.breakers``, where every edge sees them. Every
change is audited (``tollway.edge.audit``); a webhook's secret is never recorded.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, delete, get, post
from litestar.di import Provide
from pydantic import BaseModel, Field

from tollway.edge import audit, errors
from tollway.edge import limits_store as ls
from tollway.edge.admin_auth import require_admin
from tollway.edge.publish import CONFIRM_SECONDS, publish_request
from tollway.events import topics
from tollway.events.envelope import encode, make, utcnow
from tollway.events.ids import new_id
from tollway.events.limits import (
    BreakerReset,
    BreakerScope,
    BreakerTripped,
    VelocityLimitSet,
    breaker_key,
)
from tollway.events.webhooks import subscription_secret

if TYPE_CHECKING:
    import asyncpg

    from tollway.runtime.breakers import BreakerBoard

RESET_VISIBLE_SECONDS = 5.0
WEBHOOK_COLUMNS = "id, url, scopes, description, created_at, disabled_at"
SELECT_WEBHOOKS = f"SELECT {WEBHOOK_COLUMNS} FROM edge.webhooks ORDER BY created_at"  # noqa: S608
SELECT_WEBHOOK = f"SELECT {WEBHOOK_COLUMNS} FROM edge.webhooks WHERE id = $1"  # noqa: S608
DISABLE_WEBHOOK = (
    "UPDATE edge.webhooks SET disabled_at = COALESCE(disabled_at, now()) WHERE id = $1"
)


class ResetBreaker(BaseModel):
    """Which breaker to close."""

    scope: BreakerScope
    scope_id: str = Field(min_length=1, max_length=200)


class NewWebhook(BaseModel):
    """A URL that receives every alert (or only alerts of ``scopes``)."""

    url: str = Field(pattern=r"^https?://", max_length=2000)
    scopes: list[str] | None = None
    description: str = Field(default="", max_length=500)


def describe_breakers(board: BreakerBoard, now: Any) -> list[dict[str, Any]]:
    """Every breaker's latest record, newest first, with whether it is open at ``now``."""
    rows = []
    for env in board.records():
        p: Any = env.payload
        is_open = isinstance(p, BreakerTripped) and p.until > now
        rows.append(
            {"key": breaker_key(p.scope, p.scope_id), "open": is_open, "event_id": env.id}
            | {"type": env.type, "occurred_at": env.occurred_at.isoformat()}
            | p.model_dump(mode="json")
        )
    return rows


async def reset_breaker(
    request: Request[Any, Any, Any], data: ResetBreaker, actor: str | None = None
) -> dict[str, Any]:
    """Publish an operator reset and wait until this edge's view shows the breaker closed."""
    board: BreakerBoard = request.app.state.breakers.board
    key = breaker_key(data.scope, data.scope_id)
    current = board.latest.get(key)
    if current is None or not isinstance(current.payload, BreakerTripped):
        raise errors.NotFoundError(
            f"No open breaker on {data.scope} '{data.scope_id}'.", code="breaker_not_found"
        )
    tripped = current.payload
    actor = actor or audit.actor_of(request)
    reset = make(
        BreakerReset(
            account_id=tripped.account_id,
            scope=data.scope,
            scope_id=data.scope_id,
            name=tripped.name,
            reason="operator",
            trip_id=current.id,
            by=actor,
        )
    )

    async def send() -> None:
        producer = request.app.state.producer
        try:
            await asyncio.wait_for(
                producer.send_and_wait(topics.BREAKERS, value=encode(reset), key=key.encode()),
                CONFIRM_SECONDS,
            )
        except Exception as exc:
            raise errors.DependencyDownError(
                "The event log did not confirm the reset; retry it (a reset is idempotent)."
            ) from exc

    answer = {"reset": True, "event_id": reset.id, "breaker": tripped.name}
    change = audit.Change(
        "breaker.reset",
        key,
        tripped.account_id,
        before=tripped.model_dump(mode="json") | {"event_id": current.id},
        after=answer,
    )
    audit_id = await audit.published(request.app.state.pool, actor, change, send)
    async with asyncio.timeout(RESET_VISIBLE_SECONDS):
        while board.latest.get(key) is current:  # noqa: ASYNC110 - the view has no event to wait on
            await asyncio.sleep(0.02)
    return answer | {"audit_id": audit_id}


async def set_velocity_limit(
    request: Request[Any, Any, Any], data: VelocityLimitSet
) -> dict[str, Any]:
    """Publish the thresholds with the account's traffic (for an account that exists)."""
    if data.scope == "account":
        raise errors.InvalidRequestError(
            "Velocity limits apply to a key, project or task; set them on each key or project.",
            param="scope",
            code="unsupported_scope",
        )
    if not await ls.account_exists(request.app.state.pool, data.account_id):
        raise errors.NotFoundError(
            f"No account '{data.account_id}'.", param="account_id", code="account_not_found"
        )
    env = make(data)
    answer = {"event_id": env.id, "status": "accepted"}

    async def send() -> None:
        await publish_request(
            request.app.state.producer,
            data.account_id,
            env,
            "Retry: setting the same limits twice leaves them as set.",
        )

    target = breaker_key(data.scope, data.scope_id)
    after = data.model_dump(mode="json") | answer
    change = audit.Change("velocity_limit.set", target, data.account_id, after=after)
    audit_id = await audit.published(request.app.state.pool, audit.actor_of(request), change, send)
    return answer | {"audit_id": audit_id}


async def create_webhook(request: Request[Any, Any, Any], data: NewWebhook) -> dict[str, Any]:
    """Store a subscription; answer with its secret, derived and shown this once."""
    signing_key: str = request.app.state.settings.webhook_signing_key
    if not signing_key:
        raise errors.DependencyDownError(
            "Webhooks are disabled: set TOLLWAY_WEBHOOK_SIGNING_KEY on the edge and limits"
            " services."
        )
    webhook_id = f"wh_{new_id()[-12:]}"

    async def apply(conn: asyncpg.Connection) -> audit.Views:
        await conn.execute(
            "INSERT INTO edge.webhooks (id, url, scopes, description) VALUES ($1, $2, $3, $4)",
            webhook_id,
            data.url,
            data.scopes,
            data.description,
        )
        return None, {"id": webhook_id, **data.model_dump()}

    change = audit.Change("webhook.create", webhook_id)
    pool = request.app.state.pool
    after, audit_id = await audit.mutate(pool, audit.actor_of(request), change, apply)
    secret = subscription_secret(signing_key, webhook_id)
    return {**(after or {}), "secret": secret, "audit_id": audit_id}


async def stop_webhook(request: Request[Any, Any, Any], webhook_id: str) -> dict[str, Any]:
    """Stop delivering to a subscription (disabling it again changes and records nothing)."""

    async def apply(conn: asyncpg.Connection) -> audit.Views:
        before = await conn.fetchrow(SELECT_WEBHOOK, webhook_id)
        if before is None:
            raise errors.NotFoundError(f"No webhook '{webhook_id}'.", code="webhook_not_found")
        await conn.execute(DISABLE_WEBHOOK, webhook_id)
        return _webhook(before), _webhook(await conn.fetchrow(SELECT_WEBHOOK, webhook_id))

    change = audit.Change("webhook.disable", webhook_id)
    pool = request.app.state.pool
    _, audit_id = await audit.mutate(pool, audit.actor_of(request), change, apply)
    return {"id": webhook_id, "disabled": True, "audit_id": audit_id}


def _webhook(row: Any) -> dict[str, Any]:
    return dict(row) | {
        "created_at": row["created_at"].isoformat(),
        "disabled_at": None if row["disabled_at"] is None else row["disabled_at"].isoformat(),
    }


class LimitsAdminController(Controller):
    """Breakers, velocity limits and alert webhooks; every endpoint needs the admin token."""

    path = "/admin/v1"
    dependencies = {"_admin": Provide(require_admin, sync_to_thread=False)}  # noqa: RUF012

    @get("/breakers")
    async def breakers(self, request: Request[Any, Any, Any], _admin: None) -> dict[str, Any]:
        """Every breaker's latest record."""
        return {"breakers": describe_breakers(request.app.state.breakers.board, utcnow())}

    @post("/breakers/reset", status_code=200)
    async def reset(
        self, request: Request[Any, Any, Any], data: ResetBreaker, _admin: None
    ) -> dict[str, Any]:
        """Close an open breaker."""
        return await reset_breaker(request, data)

    @post("/velocity-limits", status_code=202)
    async def velocity_limits(
        self, request: Request[Any, Any, Any], data: VelocityLimitSet, _admin: None
    ) -> dict[str, Any]:
        """Set a scope's velocity thresholds."""
        return await set_velocity_limit(request, data)

    @post("/webhooks", status_code=201)
    async def webhooks(
        self, request: Request[Any, Any, Any], data: NewWebhook, _admin: None
    ) -> dict[str, Any]:
        """Subscribe a URL to alerts."""
        return await create_webhook(request, data)

    @get("/webhooks")
    async def list_webhooks(self, request: Request[Any, Any, Any], _admin: None) -> dict[str, Any]:
        """The subscriptions, without secrets."""
        rows = await request.app.state.pool.fetch(SELECT_WEBHOOKS)
        return {"webhooks": [_webhook(r) for r in rows]}

    @delete("/webhooks/{webhook_id:str}", status_code=200)
    async def disable_webhook(
        self, request: Request[Any, Any, Any], webhook_id: str, _admin: None
    ) -> dict[str, Any]:
        """Stop delivering to a subscription (pending deliveries are dropped with it)."""
        return await stop_webhook(request, webhook_id)
