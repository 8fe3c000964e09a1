"""asyncpg adapter of cost re-ratings: the bookings a correction matches, its rows.

The ledger reads an account's matched bookings in the consumer's transaction, at the command's
place in the tenant's partition; the edge's dry run reads the same rows through the same query,
and :mod:`tollway.ledger.cost_rerate` decides on both. Attempt time is the booking's
``occurred_at`` (event time, the attempt's), so a replay matches the same bookings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tollway.events.pricing import Usage
from tollway.ledger import cost_rerate, store

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

    from tollway.events.ledger import UpstreamCostRerated
    from tollway.events.pricing import CostPrice

# An account's booked attempt costs on one channel in [from, to), with the signed sum of their
# earlier cost re-ratings. The tokens come from each receipt through ``store.get_receipt`` (the
# batch's newest copy), never a join that could miss a copy not yet written.
SELECT_BOOKINGS = """
SELECT c.event_id, c.cause_id, c.request_id, c.attempt, c.occurred_at, c.currency, c.cost_micro,
       (SELECT coalesce(sum(x.amount), 0) FROM ledger.upstream_cost_rerates x
        WHERE x.cost_event_id = c.event_id)::bigint AS rerated
FROM ledger.upstream_costs c
WHERE c.account_id = $1 AND c.channel_id = $2 AND c.occurred_at >= $3 AND c.occurred_at < $4
ORDER BY c.occurred_at, c.event_id
"""
# Accounts with bookings a cost re-rating matches (the edge's enumeration), in id order.
SELECT_ACCOUNTS = """
SELECT DISTINCT account_id FROM ledger.upstream_costs
WHERE channel_id = $1 AND occurred_at >= $2 AND occurred_at < $3
ORDER BY account_id
"""
INSERT_RERATE = """
INSERT INTO ledger.upstream_cost_rerates
    (account_id, correction_id, cost_event_id, attempt_event_id, event_id, request_id, attempt,
     channel_id, currency, booked_before, rerated, amount, at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
"""

# Salts of the ids an account's outcome is journaled under (derived from its command's id):
# the sell side's, so the edge finds either side's outcome the same way.
APPLIED, REFUSED = "rerate_applied", "rerate_refused"


def entry_salt(cost_event_id: str) -> str:
    """The salt of a booking's cost re-rating entry id."""
    return f"upstream_cost_rerated:{cost_event_id}"


def _attempt_of(receipt: dict[str, Any] | None, attempt: int) -> dict[str, Any] | None:
    for a in (receipt or {}).get("attempts") or []:
        if a.get("attempt") == attempt:
            found: dict[str, Any] = a
            return found
    return None


def _booking(row: Any, receipt: dict[str, Any] | None) -> cost_rerate.Booking:
    attempt = _attempt_of(receipt, int(row["attempt"]))
    usage = (attempt or {}).get("usage")
    return cost_rerate.Booking(
        event_id=row["event_id"],
        attempt_event_id=row["cause_id"],
        request_id=row["request_id"],
        attempt=int(row["attempt"]),
        occurred_at=row["occurred_at"],
        currency=row["currency"],
        original=int(row["cost_micro"]),
        rerated_so_far=int(row["rerated"]),
        usage=Usage.model_validate(usage) if isinstance(usage, dict) else None,
        reached=(attempt or {}).get("outcome") != "connect_error",
    )


async def bookings(
    conn: asyncpg.Connection, account_id: str, sel: cost_rerate.Selection
) -> list[cost_rerate.Booking]:
    """The account's bookings ``sel`` matches, in attempt order."""
    rows = await conn.fetch(SELECT_BOOKINGS, account_id, sel.channel_id, sel.start, sel.end)
    return [_booking(r, await store.get_receipt(conn, r["request_id"])) for r in rows]


async def accounts(conn: asyncpg.Connection, sel: cost_rerate.Selection) -> list[str]:
    """Accounts with bookings ``sel`` matches, in id order (the edge's enumeration)."""
    rows = await conn.fetch(SELECT_ACCOUNTS, sel.channel_id, sel.start, sel.end)
    return [r["account_id"] for r in rows]


async def plan(
    conn: asyncpg.Connection, account_id: str, sel: cost_rerate.Selection, cost: CostPrice
) -> cost_rerate.AccountPlan:
    """What re-rating the account's bookings would book now (the ledger's, the dry run's)."""
    return cost_rerate.plan_account(account_id, sel, await bookings(conn, account_id, sel), cost)


async def record(
    conn: asyncpg.Connection, event_id: str, at: datetime, event: UpstreamCostRerated
) -> None:
    """Remember a booked cost re-rating entry (after its journal row, its reference)."""
    await conn.execute(
        INSERT_RERATE,
        event.account_id,
        event.correction_id,
        event.original_event_id,
        event.attempt_event_id,
        event_id,
        event.request_id,
        event.attempt,
        event.channel_id,
        event.currency,
        event.booked_before_micro,
        event.rerated_micro,
        event.amount_micro,
        at,
    )
