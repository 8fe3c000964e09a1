"""Finance's HTTP API under ``/admin/v1/ledger`` (bearer admin token): read-only over the ledger.

Accounts (every ledger account of a tenant with its balance), journal entries (newest first,
keyset-paginated), statements between two instants (JSON or CSV) and the balance as of a past
instant. The ledger stays the only writer of money; the same read model serves
``tollway ledger statement``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from litestar import Controller, Request, Response, get
from litestar.di import Provide
from litestar.params import Parameter

from tollway.edge import errors
from tollway.edge.admin_auth import require_admin
from tollway.events.pricing import format_micro
from tollway.ledger import finance_store, statements

MAX_ENTRIES = 500


def instant(value: str | None, param: str, default: datetime | None = None) -> datetime:
    """An ISO 8601 query instant (UTC when it names no zone); 400 naming ``param`` otherwise."""
    if value is None:
        if default is None:
            raise errors.InvalidRequestError(
                f"'{param}' is required (an ISO 8601 instant).", param=param
            )
        return default
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise errors.InvalidRequestError(
            f"'{param}' must be an ISO 8601 instant, like 2026-01-31T00:00:00Z.", param=param
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _money(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "account": r["account"],
            "unit": r["unit"],
            "amount_micro": r["amount"],
            "amount": format_micro(r["amount"]),
        }
        for r in rows
    ]


async def _known(request: Request[Any, Any, Any], account_id: str) -> None:
    async with request.app.state.pool.acquire() as conn:
        if not await finance_store.ledger_accounts(conn, account_id):
            raise errors.NotFoundError(
                f"The ledger has no movements for account '{account_id}'.", param="account_id"
            )


class LedgerAdminController(Controller):
    """Read the ledger; every endpoint needs the admin token."""

    path = "/admin/v1/ledger"
    dependencies = {"_admin": Provide(require_admin, sync_to_thread=False)}  # noqa: RUF012

    @get("/accounts/{account_id:str}")
    async def account(
        self, request: Request[Any, Any, Any], account_id: str, _admin: None
    ) -> dict[str, Any]:
        """Every ledger account of a tenant (buckets, holds) with its balance now."""
        await _known(request, account_id)
        async with request.app.state.pool.acquire() as conn:
            rows = await finance_store.current_balances(conn, account_id)
        return {"account_id": account_id, "balances": _money(rows)}

    @get("/accounts/{account_id:str}/entries")
    async def entries(
        self,
        request: Request[Any, Any, Any],
        account_id: str,
        _admin: None,
        limit: int = 100,
        before: int | None = None,
    ) -> dict[str, Any]:
        """Journal entries with their postings, newest first; page with ``before=next_before``."""
        if not 1 <= limit <= MAX_ENTRIES:
            raise errors.InvalidRequestError(
                f"'limit' must be between 1 and {MAX_ENTRIES}.", param="limit"
            )
        async with request.app.state.pool.acquire() as conn:
            rows = await finance_store.entries(conn, account_id, before or 2**62, limit)
        items = [
            {
                "seq": r["seq"],
                "event_id": r["event_id"],
                "type": r["type"],
                "occurred_at": r["occurred_at"].isoformat(),
                "cause_id": r["cause_id"],
                "payload": orjson.loads(r["payload"]),
            }
            for r in rows
        ]
        next_before = items[-1]["seq"] if len(items) == limit else None
        return {"account_id": account_id, "entries": items, "next_before": next_before}

    @get("/accounts/{account_id:str}/statement")
    async def statement(
        self,
        request: Request[Any, Any, Any],
        account_id: str,
        _admin: None,
        from_: str | None = Parameter(query="from", default=None),
        to: str | None = None,
        fmt: str = Parameter(query="format", default="json"),
    ) -> Response[Any]:
        """Postings between ``from`` and ``to`` with opening, running and closing balances."""
        start = instant(from_, "from")
        end = instant(to, "to", datetime.now(UTC))
        if fmt not in {"json", "csv"}:
            raise errors.InvalidRequestError("'format' must be json or csv.", param="format")
        await _known(request, account_id)
        async with request.app.state.pool.acquire() as conn:
            found = await statements.statement(conn, account_id, start, end)
        if fmt == "csv":
            name = f"statement-{account_id}-{start.date()}-{end.date()}.csv"
            return Response(
                found.as_csv(),
                media_type="text/csv",
                headers={"content-disposition": f'attachment; filename="{name}"'},
            )
        return Response(found.as_json())

    @get("/accounts/{account_id:str}/balance")
    async def balance(
        self, request: Request[Any, Any, Any], account_id: str, _admin: None, at: str | None = None
    ) -> dict[str, Any]:
        """Balances as of an instant in event time (default: now)."""
        when = instant(at, "at", datetime.now(UTC))
        await _known(request, account_id)
        async with request.app.state.pool.acquire() as conn:
            found = await statements.balance_at(conn, account_id, when)
        rows = [{"account": a, "unit": u, "amount": v} for (a, u), v in sorted(found.items())]
        return {"account_id": account_id, "at": when.isoformat(), "balances": _money(rows)}
