"""Operators' side of the money (bearer admin token): margin reports and the costed receipt.

``GET /admin/v1/margins?group_by=channel&from=…&to=…[&format=csv]``: revenue (what the ledger
charged, net of reversals) against upstream cost (booked per attempt at the channel's cost
price) per group (``channel``, ``route_type``, ``brand``, ``model``, ``account``, ``key``,
``project``, ``day``; up to three, comma-separated). The margin is computed only where revenue
and cost are in one unit; otherwise both sides are shown and the row says "not comparable".
Negative margins are flagged. ``GET /admin/v1/receipts/{request_id}``: a receipt of any account
with each attempt's upstream cost and margin. Neither is reachable with a tenant's key, and no
tenant view carries a cost. Amounts are integer micro-units, with decimals beside them.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import Provide
from litestar.params import Parameter

from tollway.edge import errors
from tollway.edge.admin_auth import require_admin
from tollway.edge.ledger_admin import instant
from tollway.edge.listing import refuse_nul
from tollway.events.pricing import format_micro
from tollway.ledger import margins

DEFAULT_DAYS = 30
MAX_GROUPS = 3
CSV_COLUMNS = (
    "unit",
    "revenue_micro",
    "cost_micro",
    "margin_micro",
    "comparable",
    "negative",
    "note",
    "attempts",
    "failed_attempts",
    "charges",
)


def _amounts(values: dict[str, int], key: str) -> list[dict[str, Any]]:
    return [
        {key: unit, "amount_micro": v, "amount": format_micro(v)}
        for unit, v in sorted(values.items())
        if v
    ]


def row_view(row: margins.MarginRow) -> dict[str, Any]:
    """A margin row as the API shows it: both sides, the margin when comparable, the flag."""
    margin = row.margin_micro
    return {
        **row.group,
        "revenue": _amounts(row.revenue, "unit"),
        "cost": _amounts(row.cost, "currency"),
        "comparable": row.comparable,
        "unit": row.unit,
        "margin_micro": margin,
        "margin": None if margin is None else format_micro(margin),
        "negative": margin is not None and margin < 0,
        "note": row.note,
        "attempts": row.attempts,
        "failed_attempts": row.failed_attempts,
        "failed_cost": _amounts(row.failed_cost, "currency"),
        "charges": row.charges,
    }


def as_csv(group_by: tuple[str, ...], rows: list[margins.MarginRow]) -> str:
    """One line per group and unit; the margin only on a comparable group's line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*group_by, *CSV_COLUMNS])
    for r in rows:
        margin = r.margin_micro
        for unit in sorted(set(r.revenue) | set(r.cost)):
            writer.writerow(
                [
                    *("" if r.group[g] is None else str(r.group[g]) for g in group_by),
                    unit,
                    r.revenue.get(unit, 0),
                    r.cost.get(unit, 0),
                    "" if margin is None else margin,
                    str(r.comparable).lower(),
                    str(margin is not None and margin < 0).lower(),
                    r.note or "",
                    r.attempts,
                    r.failed_attempts,
                    r.charges,
                ]
            )
    return out.getvalue()


def parse_groups(group_by: str) -> tuple[str, ...]:
    """``channel,day`` as a tuple of known group keys; 400 naming ``group_by`` otherwise."""
    groups = tuple(g.strip() for g in group_by.split(",") if g.strip())
    try:
        margins.group_columns(groups)
    except margins.UnknownGroupError:
        groups = ()
    if not groups or len(groups) > MAX_GROUPS:
        known = ", ".join(margins.GROUPS)
        raise errors.InvalidRequestError(
            f"'group_by' must be up to {MAX_GROUPS} distinct comma-separated keys of: {known}.",
            param="group_by",
        )
    return groups


def window(from_: str | None, to: str | None) -> tuple[datetime, datetime]:
    """[from, to) in event time; the last 30 days by default."""
    end = instant(to, "to", datetime.now(UTC))
    start = instant(from_, "from", end - timedelta(days=DEFAULT_DAYS))
    if start >= end:
        raise errors.InvalidRequestError("'from' must be before 'to'.", param="from")
    return start, end


async def margin_report(
    request: Request[Any, Any, Any], groups: tuple[str, ...], start: datetime, end: datetime
) -> list[margins.MarginRow]:
    """The report's rows (shared by the API and the dashboard)."""
    async with request.app.state.pool.acquire() as conn:
        return await margins.report(conn, groups, start, end)


def _cost_rerates(cost: dict[str, Any] | None) -> list[dict[str, Any]]:
    """An attempt's cost re-rating entries as the operator receipt lists them."""
    return [
        {
            "event_id": r["event_id"],
            "correction_id": r["correction_id"],
            "currency": r["currency"],
            "at": r["at"].isoformat(),
            "booked_before_micro": r["booked_before"],
            "rerated_micro": r["rerated"],
            "amount_micro": r["amount"],
            "amount": format_micro(r["amount"]),
        }
        for r in (cost or {}).get("rerates") or []
    ]


def costed_receipt(receipt: dict[str, Any], costs: list[dict[str, Any]]) -> dict[str, Any]:
    """The receipt with each attempt's upstream cost (re-rated) and margin, and the request's.

    An attempt's ``upstream_cost`` is what it costs the operator now; a re-rated one also shows
    ``booked_micro`` (as first booked) and ``rerates`` (the compensating entries).
    """
    attempts, whole = margins.receipt_economics(receipt, costs)
    by_attempt = {a["attempt"]: a["row"] for a in attempts}
    cost_of = {c["attempt"]: c for c in costs}
    shown = []
    for a in receipt.get("attempts") or []:
        row = by_attempt.get(a.get("attempt"))
        economics = row_view(row) if row is not None and row.cost else None
        cost = cost_of.get(a.get("attempt"))
        if economics is not None and cost is not None and cost.get("rerates"):
            economics["booked_micro"] = cost["booked_micro"]
            economics["rerates"] = _cost_rerates(cost)
        shown.append({**a, "upstream_cost": economics})
    return {**receipt, "attempts": shown, "economics": row_view(whole)}


class MarginsController(Controller):
    """Margins and costed receipts; every endpoint needs the admin token."""

    path = "/admin/v1"
    tags = ["margins"]  # noqa: RUF012
    dependencies = {"_admin": Provide(require_admin, sync_to_thread=False)}  # noqa: RUF012

    @get("/margins")
    async def report(
        self,
        request: Request[Any, Any, Any],
        _admin: None,
        group_by: str = "channel",
        from_: str | None = Parameter(query="from", default=None),
        to: str | None = None,
        fmt: str = Parameter(query="format", default="json"),
    ) -> Response[Any]:
        """Revenue against upstream cost per group, JSON or CSV; negative margins flagged."""
        refuse_nul(group_by=group_by)
        groups = parse_groups(group_by)
        start, end = window(from_, to)
        if fmt not in {"json", "csv"}:
            raise errors.InvalidRequestError("'format' must be json or csv.", param="format")
        rows = await margin_report(request, groups, start, end)
        if fmt == "csv":
            name = f"margins-{'-'.join(groups)}-{start.date()}-{end.date()}.csv"
            return Response(
                as_csv(groups, rows),
                media_type="text/csv",
                headers={"content-disposition": f'attachment; filename="{name}"'},
            )
        return Response(
            {
                "group_by": list(groups),
                "from": start.isoformat(),
                "to": end.isoformat(),
                "rows": [row_view(r) for r in rows],
                "total": row_view(margins.total(rows)),
            }
        )

    @get("/receipts/{request_id:str}")
    async def receipt(
        self, request: Request[Any, Any, Any], request_id: str, _admin: None
    ) -> dict[str, Any]:
        """A receipt of any account, with each attempt's upstream cost and margin."""
        refuse_nul(request_id=request_id)
        async with request.app.state.pool.acquire() as conn:
            found = await margins.operator_receipt(conn, request_id)
        if found is None:
            raise errors.NotFoundError(f"No receipt '{request_id}' (yet).", param="request_id")
        return costed_receipt(*found)
