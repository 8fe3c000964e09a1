"""The cost side of ``POST /admin/v1/rerates`` (``side: "cost"``): what it matches and shows.

An operator corrects a channel's upstream cost price for a past period ``[from, to)`` on the
attempts' time: every booked attempt cost of ``channel_id`` in the period
(``ledger.upstream_costs``) is re-rated at ``cost`` (a currency, decimal strings per 1M tokens
of each class and ``per_request``, as a channel's cost price). The booking lives on the tenant's
partition, so the edge enumerates the accounts whose requests are involved and sends one
``CostRerateRequested`` per account (keyed by it); the ledger chooses the account's bookings
itself at the command's place in the log (:mod:`tollway.ledger.cost_rerating`). The dry run and
the ledger decide with the same function (:mod:`tollway.ledger.cost_rerate`) on the same rows.

A re-rating corrects amounts, never the currency: a cost in another currency than the period's
bookings is refused with 400 ``currency_mismatch`` (split the period where the channel's cost
currency changed). Recording, idempotency and publishing are the sell side's
(:mod:`tollway.edge.rerates`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tollway.edge import errors
from tollway.events.envelope import Envelope, make
from tollway.events.gateway import CostRerateRequested
from tollway.events.pricing import CostPrice, format_micro
from tollway.ledger import cost_rerate, cost_rerate_store

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

    from tollway.edge.rerates import NewRerate
    from tollway.edge.route_tree import CostPrices

APPLIED_TYPE = "ledger.upstream_cost_rerate_applied"


def cost_price(cost: CostPrices) -> CostPrice:
    """The corrected cost price in micro-units (400 ``invalid_amount`` naming ``cost.<field>``)."""
    columns = cost.micro()
    return CostPrice(
        currency=cost.currency,
        per_request=columns.pop("cost_per_request") or 0,
        **{k.removeprefix("cost_"): v for k, v in columns.items() if k != "cost_currency"},
    )


def selection(channel_id: str, start: datetime, end: datetime) -> cost_rerate.Selection:
    """The bookings of ``channel_id`` with attempt time in ``[start, end)``."""
    return cost_rerate.Selection(channel_id, start, end)


def view(data: NewRerate, sel: cost_rerate.Selection, cost: CostPrice) -> dict[str, Any]:
    """The request as recorded and fingerprinted (``dry_run`` aside)."""
    return {
        "correction_id": data.correction_id,
        "side": "cost",
        "channel_id": sel.channel_id,
        "from": sel.start.isoformat(),
        "to": sel.end.isoformat(),
        "cost_per_1m_micro": cost.model_dump(),
        "reason": data.reason,
        "accounts": data.accounts,
    }


async def preview(
    pool: asyncpg.Pool, sel: cost_rerate.Selection, cost: CostPrice, only: list[str] | None
) -> list[cost_rerate.AccountPlan]:
    """Each matched account's plan (``only``: of these accounts), in one snapshot of the ledger."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        found = await cost_rerate_store.accounts(conn, sel)
        if only is not None:
            wanted = set(only)
            found = [a for a in found if a in wanted]
        return [await cost_rerate_store.plan(conn, a, sel, cost) for a in found]


def refuse_currency(plans: list[cost_rerate.AccountPlan], cost: CostPrice) -> None:
    """400 ``currency_mismatch`` when the period's bookings are in another currency."""
    other = sorted({c for p in plans for c in p.other_currencies})
    if other:
        raise errors.InvalidRequestError(
            "Re-rating corrects amounts, not the currency: the channel's cost in this period was"
            f" booked in {', '.join(other)}, not {cost.currency}. Give the booked currency (and"
            " split the period where the channel's cost currency changed).",
            param="cost.currency",
            code=cost_rerate.CURRENCY_MISMATCH,
        )


def _money(name: str, micro: int) -> dict[str, Any]:
    return {f"{name}_micro": micro, name: format_micro(micro)}


def account_view(plan: cost_rerate.AccountPlan) -> dict[str, Any]:
    """One account's figures: attempts, booked, re-rated and the difference."""
    return {
        "account_id": plan.account_id,
        "channel_id": plan.channel_id,
        "currency": plan.currency,
        "attempts": len(plan.lines),
        "changed": len(plan.changed),
        "skipped": [
            {"request_id": s.request_id, "attempt": s.attempt, "code": s.code} for s in plan.skipped
        ],
        **_money("booked", plan.booked),
        **_money("rerated", plan.rerated),
        **_money("difference", plan.difference),
    }


def totals(accounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per channel and currency: attempts, booked, re-rated and the difference."""
    groups: dict[tuple[str, str], dict[str, int]] = {}
    for a in accounts:
        t = groups.setdefault(
            (a["channel_id"], a["currency"]), {"accounts": 0, "attempts": 0, "b": 0, "r": 0}
        )
        t["accounts"] += 1
        t["attempts"] += a["attempts"]
        t["b"] += a["booked_micro"]
        t["r"] += a["rerated_micro"]
    return [
        {
            "channel_id": channel,
            "currency": currency,
            "accounts": t["accounts"],
            "attempts": t["attempts"],
            **_money("booked", t["b"]),
            **_money("rerated", t["r"]),
            **_money("difference", t["r"] - t["b"]),
        }
        for (channel, currency), t in sorted(groups.items())
    ]


def answer(view_: dict[str, Any], accounts: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The dry run's or the apply's answer."""
    return {**view_, "accounts": accounts, "totals": totals(accounts), **extra}


def command(
    data: NewRerate,
    plan: cost_rerate.AccountPlan,
    sel: cost_rerate.Selection,
    cost: CostPrice,
    actor: str,
) -> Envelope[CostRerateRequested]:
    """The ledger's command for one account."""
    return make(
        CostRerateRequested(
            account_id=plan.account_id,
            correction_id=data.correction_id,
            channel_id=sel.channel_id,
            period_from=sel.start,
            period_to=sel.end,
            cost=cost,
            reason=data.reason,
            actor=actor,
        )
    )


def outcome(payload: dict[str, Any]) -> dict[str, Any]:
    """An account's applied cost re-rating as the status shows it."""
    return {
        "status": "applied",
        "attempts": payload["attempts"],
        "changed": payload["changed"],
        "skipped": payload["skipped"],
        "currency": payload["currency"],
        **_money("booked", payload["booked_micro"]),
        **_money("rerated", payload["rerated_micro"]),
        **_money("difference", payload["difference_micro"]),
    }
