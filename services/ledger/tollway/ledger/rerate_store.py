"""asyncpg adapter of re-ratings: the charges a correction matches, its rows, its outcomes.

The ledger reads an account's matched charges in the consumer's transaction, at the command's
place in the log; the edge's dry run reads the same rows through the same query (its preview),
and :mod:`tollway.ledger.rerate` decides on both. Settlement time is the journal's
``occurred_at`` (event time), so a replay matches the same charges.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from tollway.events.ids import derived_id
from tollway.events.pricing import Usage
from tollway.ledger import domain, rerate, store

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

    from tollway.events.ledger import Rerated
    from tollway.events.pricing import Price

# An account's charges in one bucket earned by one channel, settled in [from, to): found from
# the tenant's own ledger accounts (the postings index), never by scanning the journal. The
# earning channel is the charge's positive revenue posting; ``rerated`` sums earlier re-ratings
# and ``refunded`` the reversals of it. The tokens come from each receipt, read through
# ``store.get_receipt``: within a batch the ledger's newest copy of a receipt may not be written
# yet, and a decision on an older one would differ from a replay that batches otherwise.
SELECT_CHARGES = """
WITH mine AS (
    SELECT DISTINCT event_id FROM ledger.postings WHERE account = ANY($2::text[])
)
SELECT j.event_id, j.occurred_at,
       j.body -> 'payload' ->> 'request_id' AS request_id,
       j.body -> 'payload' ->> 'unit' AS unit,
       (j.body -> 'payload' ->> 'charged_micro')::bigint AS charged,
       (SELECT coalesce(sum(x.amount), 0) FROM ledger.rerates x
        WHERE x.original_event_id = j.event_id)::bigint AS rerated,
       (SELECT coalesce(sum(c.amount), 0) FROM ledger.corrections c
        WHERE c.original_event_id = j.event_id)::bigint AS refunded
FROM mine JOIN ledger.journal j USING (event_id)
WHERE j.account_id = $1 AND j.type = ANY($3::text[])
  AND j.body -> 'payload' ->> 'bucket' = $4
  AND j.occurred_at >= $5 AND j.occurred_at < $6
  AND EXISTS (SELECT 1 FROM jsonb_array_elements(j.body -> 'payload' -> 'postings') p
              WHERE p ->> 'account' = $7 AND (p ->> 'amount')::bigint > 0)
ORDER BY j.occurred_at, j.event_id
"""
# Accounts with charges a re-rating matches (the edge's enumeration), from the revenue account.
SELECT_ACCOUNTS = """
SELECT DISTINCT j.account_id FROM ledger.postings p JOIN ledger.journal j USING (event_id)
WHERE p.account = $1 AND p.amount > 0 AND j.type = ANY($2::text[])
  AND j.body -> 'payload' ->> 'bucket' = $3
  AND j.occurred_at >= $4 AND j.occurred_at < $5
ORDER BY j.account_id
"""
SELECT_AVAILABLE = "SELECT amount FROM ledger.balances WHERE account = $1 AND unit = $2"
SELECT_BUCKET_UNIT = "SELECT unit FROM ledger.buckets WHERE account_id = $1 AND bucket = $2"
INSERT_RERATE = """
INSERT INTO ledger.rerates
    (account_id, correction_id, request_id, original_event_id, event_id, channel_id, unit,
     charged_before, rerated, amount, at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""
OUTCOME = "SELECT type, body -> 'payload' AS payload FROM ledger.journal WHERE event_id = ANY($1)"

# Salts of the ids an account's outcome is journaled under (derived from its command's id).
APPLIED, REFUSED = "rerate_applied", "rerate_refused"


def entry_salt(request_id: str) -> str:
    """The salt of a charge's re-rating entry id."""
    return f"rerated:{request_id}"


def _charge(row: Any, receipt: dict[str, Any] | None) -> rerate.Charge:
    usage = (receipt or {}).get("usage")
    return rerate.Charge(
        request_id=row["request_id"],
        original_event_id=row["event_id"],
        settled_at=row["occurred_at"],
        unit=row["unit"],
        original=int(row["charged"]),
        rerated_so_far=int(row["rerated"]),
        usage=Usage.model_validate(usage) if isinstance(usage, dict) else None,
        refunded=int(row["refunded"]),
    )


async def charges(
    conn: asyncpg.Connection, account_id: str, sel: rerate.Selection
) -> list[rerate.Charge]:
    """The account's charges ``sel`` matches, in settlement order."""
    mine = [
        domain.bucket_account(account_id, sel.bucket),
        domain.held_account(account_id, sel.bucket),
    ]
    rows = await conn.fetch(
        SELECT_CHARGES,
        account_id,
        mine,
        list(rerate.CHARGE_TYPES),
        sel.bucket,
        sel.start,
        sel.end,
        domain.revenue_account(sel.channel_id),
    )
    return [_charge(r, await store.get_receipt(conn, r["request_id"])) for r in rows]


async def accounts(conn: asyncpg.Connection, sel: rerate.Selection) -> list[str]:
    """Accounts with charges ``sel`` matches, in id order (the edge's enumeration)."""
    rows = await conn.fetch(
        SELECT_ACCOUNTS,
        domain.revenue_account(sel.channel_id),
        list(rerate.CHARGE_TYPES),
        sel.bucket,
        sel.start,
        sel.end,
    )
    return [r["account_id"] for r in rows]


async def available(
    conn: asyncpg.Connection, account_id: str, bucket: str
) -> tuple[str | None, int]:
    """The bucket's unit (None: never funded) and its available balance (holds excluded)."""
    unit: str | None = await conn.fetchval(SELECT_BUCKET_UNIT, account_id, bucket)
    if unit is None:
        return None, 0
    value = await conn.fetchval(SELECT_AVAILABLE, domain.bucket_account(account_id, bucket), unit)
    return unit, int(value or 0)


async def plan(
    conn: asyncpg.Connection, account_id: str, sel: rerate.Selection, price: Price
) -> rerate.AccountPlan:
    """What re-rating the account would book now (the ledger's decision, the edge's preview)."""
    found = await charges(conn, account_id, sel)
    _, balance = await available(conn, account_id, sel.bucket)
    return rerate.plan_account(account_id, sel.bucket, found, price, balance)


async def record(conn: asyncpg.Connection, event_id: str, at: datetime, event: Rerated) -> None:
    """Remember a booked re-rating entry (after its journal row, its reference)."""
    await conn.execute(
        INSERT_RERATE,
        event.account_id,
        event.correction_id,
        event.request_id,
        event.original_event_id,
        event_id,
        event.channel_id,
        event.unit,
        event.charged_before_micro,
        event.rerated_micro,
        event.amount_micro,
        at,
    )


async def outcome(conn: asyncpg.Connection, command_id: str) -> dict[str, Any] | None:
    """What the ledger journaled for one account's command: applied or refused, or None yet."""
    ids = [derived_id(command_id, APPLIED), derived_id(command_id, REFUSED)]
    row = await conn.fetchrow(OUTCOME, ids)
    if row is None:
        return None
    payload: dict[str, Any] = orjson.loads(row["payload"])
    return {"type": row["type"], "payload": payload}
