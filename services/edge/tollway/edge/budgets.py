"""The operator's budgets under ``/admin/v1/budgets``: create, list (with usage), delete.

Definitions are not written here: the edge publishes ``BudgetSet`` / ``BudgetRemoved`` on
gw.requests keyed by account, and the ledger applies them in order with the holds they limit.
Both are audited once the event log confirmed them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from litestar import Controller, Request, delete, get, post
from litestar.di import Provide
from pydantic import BaseModel, Field

from tollway.edge import amounts, audit, errors, tenants
from tollway.edge import limits_store as ls
from tollway.edge.admin_auth import require_admin
from tollway.edge.publish import publish_request
from tollway.events.envelope import make
from tollway.events.ids import new_id
from tollway.events.limits import TOKENS, BudgetRemoved, BudgetSet

if TYPE_CHECKING:
    import asyncpg

NAME = r"^[A-Za-z0-9_.:-]{1,64}$"


class NewBudget(BaseModel):
    """A budget: ``amount`` is decimal units of ``unit``, or a whole number of tokens."""

    account_id: str
    name: str = Field(pattern=NAME)
    scope: Literal["account", "key", "project", "route_type", "channel", "model", "task"]
    scope_id: str | None = Field(default=None, min_length=1, max_length=200)
    window: Literal["minute", "hour", "day", "month", "lifetime"] = "lifetime"
    timezone: str = "UTC"
    unit: str = Field(min_length=1, max_length=16)
    bucket: str | None = Field(default=None, pattern=r"^[a-z0-9_-]{1,32}$")
    amount: str
    mode: Literal["hard", "soft"] = "hard"


def _amount(data: NewBudget) -> int:
    if data.unit == TOKENS:
        return amounts.count(data.amount, field="amount")
    return amounts.amount(data.amount, field="amount")


def _scope_id(data: NewBudget) -> str:
    if data.scope == "account":
        return data.scope_id or data.account_id
    if data.scope_id is None:
        raise errors.InvalidRequestError(
            f"A '{data.scope}' budget needs 'scope_id' (the {data.scope} it limits).",
            param="scope_id",
        )
    if data.scope == "route_type" and data.scope_id not in {"direct", "pool"}:
        raise errors.InvalidRequestError(
            "A route_type budget's 'scope_id' is 'direct' or 'pool'.", param="scope_id"
        )
    return data.scope_id


async def _check_unit(pool: asyncpg.Pool, data: NewBudget) -> None:
    try:
        ZoneInfo(data.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise errors.InvalidRequestError(
            f"Unknown time zone '{data.timezone}' (use an IANA name like 'Europe/Paris').",
            param="timezone",
        ) from None
    if not await ls.account_exists(pool, data.account_id):
        raise errors.NotFoundError(f"No account '{data.account_id}'.", param="account_id")
    units = await ls.bucket_units(pool, data.account_id)
    if data.unit == TOKENS and data.bucket is not None:
        raise errors.InvalidRequestError(
            "A token budget counts every bucket: leave 'bucket' out.", param="bucket"
        )
    if data.bucket in units and units[data.bucket] != data.unit:
        raise errors.InvalidRequestError(
            f"Bucket '{data.bucket}' is in {units[data.bucket]}, not {data.unit}.", param="unit"
        )
    await _check_scope(pool, data)


async def _check_scope(pool: asyncpg.Pool, data: NewBudget) -> None:
    """A key or project budget names one of the account's own: else 404, nothing published."""
    if data.scope not in {"key", "project"} or data.scope_id is None:
        return
    found = await (tenants.key if data.scope == "key" else tenants.project)(pool, data.scope_id)
    if found["account_id"] != data.account_id:
        raise errors.NotFoundError(
            f"Account '{data.account_id}' has no {data.scope} '{data.scope_id}'.",
            param="scope_id",
            code=f"{data.scope}_not_found",
        )


class BudgetController(Controller):
    """Budgets of any account; every endpoint needs the admin token."""

    path = "/admin/v1/budgets"
    dependencies = {"_admin": Provide(require_admin, sync_to_thread=False)}  # noqa: RUF012

    @post("/", status_code=202)
    async def create(
        self, request: Request[Any, Any, Any], data: NewBudget, _admin: None
    ) -> dict[str, Any]:
        """Create a budget; the ledger enforces it from the next request on."""
        await _check_unit(request.app.state.pool, data)
        budget = BudgetSet(
            budget_id="bud_" + new_id(),
            account_id=data.account_id,
            name=data.name,
            scope=data.scope,
            scope_id=_scope_id(data),
            window=data.window,
            timezone=data.timezone,
            unit=data.unit,
            bucket=data.bucket,
            amount=_amount(data),
            mode=data.mode,
        )
        env = make(budget)
        answer = {"id": budget.budget_id, "event_id": env.id, "status": "accepted", **_view(budget)}

        async def send() -> None:
            await publish_request(
                request.app.state.producer,
                data.account_id,
                env,
                "List the account's budgets before creating it again.",
            )

        change = audit.Change("budget.create", budget.budget_id, data.account_id, after=answer)
        pool = request.app.state.pool
        audit_id = await audit.published(pool, audit.actor_of(request), change, send)
        return answer | {"audit_id": audit_id}

    @get("/")
    async def list_budgets(
        self, request: Request[Any, Any, Any], account_id: str, _admin: None
    ) -> dict[str, Any]:
        """An account's budgets with what is held and spent in the current window."""
        rows = await ls.budgets(request.app.state.pool, account_id)
        return {"account_id": account_id, "budgets": [row_view(r) for r in rows]}

    @delete("/{budget_id:str}", status_code=202)
    async def remove(
        self, request: Request[Any, Any, Any], budget_id: str, _admin: None
    ) -> dict[str, Any]:
        """Delete a budget; holds already placed under it settle normally."""
        account_id = await ls.budget_account(request.app.state.pool, budget_id)
        if account_id is None:
            raise errors.NotFoundError(f"No budget '{budget_id}'.", code="budget_not_found")
        env = make(BudgetRemoved(budget_id=budget_id, account_id=account_id))
        answer = {"id": budget_id, "event_id": env.id, "status": "accepted"}

        async def send() -> None:
            await publish_request(
                request.app.state.producer,
                account_id,
                env,
                "Deleting is idempotent: send it again.",
            )

        change = audit.Change("budget.delete", budget_id, account_id, after=answer)
        pool = request.app.state.pool
        audit_id = await audit.published(pool, audit.actor_of(request), change, send)
        return answer | {"audit_id": audit_id}


def _view(b: BudgetSet) -> dict[str, Any]:
    return b.model_dump(exclude={"budget_id"})


def row_view(r: dict[str, Any]) -> dict[str, Any]:
    """A budget with what is held, spent and left in its current window."""
    return {
        "id": r["budget_id"],
        "name": r["name"],
        "scope": r["scope"],
        "scope_id": r["scope_id"],
        "window": r["time_window"],
        "timezone": r["timezone"],
        "unit": r["unit"],
        "bucket": r["bucket"],
        "amount": r["amount"],
        "mode": r["mode"],
        "held": r["held"],
        "spent": r["spent"],
        "remaining": max(r["amount"] - r["held"] - r["spent"], 0),
    }
