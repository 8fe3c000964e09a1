"""asyncpg adapter of the ledger.

Every function runs inside the caller's transaction (the consumer's batch transaction), so
effects, offsets and outbox rows commit or vanish together.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import orjson

from tollway.ledger.domain import check_balanced

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

    from tollway.events.envelope import Envelope
    from tollway.events.ledger import MoneyEvent

MARK_APPLIED = """
INSERT INTO ledger.applied_events (event_id, type) VALUES ($1, $2)
ON CONFLICT DO NOTHING RETURNING event_id
"""
INSERT_JOURNAL = """
INSERT INTO ledger.journal (event_id, type, account_id, cause_id, occurred_at, body)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)
"""
INSERT_POSTING = (
    "INSERT INTO ledger.postings (event_id, account, unit, amount) VALUES ($1, $2, $3, $4)"
)
ADD_BALANCE = """
INSERT INTO ledger.balances AS b (account, unit, amount) VALUES ($1, $2, $3)
ON CONFLICT (account, unit) DO UPDATE SET amount = b.amount + EXCLUDED.amount
"""
# Read by the metrics gauge every few seconds; the partial index holds_open keeps it cheap.
COUNT_OPEN_HOLDS = "SELECT count(*) FROM ledger.holds WHERE status = 'open'"
SELECT_BALANCE = "SELECT amount FROM ledger.balances WHERE account = $1 AND unit = $2"
SELECT_BUCKET_UNIT = "SELECT unit FROM ledger.buckets WHERE account_id = $1 AND bucket = $2"
INSERT_BUCKET = "INSERT INTO ledger.buckets (account_id, bucket, unit) VALUES ($1, $2, $3)"
SELECT_TOPUP = "SELECT fingerprint FROM ledger.topups WHERE idempotency_key = $1"
INSERT_TOPUP = (
    "INSERT INTO ledger.topups (idempotency_key, fingerprint, event_id) VALUES ($1, $2, $3)"
)
INSERT_HOLD = """
INSERT INTO ledger.holds
    (hold_id, request_id, account_id, bucket, unit, amount, status, deadline_at, opened_at)
VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8)
"""
SELECT_HOLD = """
SELECT hold_id, request_id, account_id, bucket, unit, amount, status
FROM ledger.holds WHERE hold_id = $1
"""
CLOSE_HOLD = (
    "UPDATE ledger.holds SET status = $2, closed_at = $3 WHERE hold_id = $1 AND status = 'open'"
)
INSERT_RECEIPT = """
INSERT INTO ledger.receipts
    (request_id, account_id, key_id, project_id, task_id, catalog_model, status, created_at, body)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
"""
SELECT_RECEIPT = "SELECT body FROM ledger.receipts WHERE request_id = $1"
UPDATE_RECEIPT = "UPDATE ledger.receipts SET status = $2, body = $3::jsonb WHERE request_id = $1"


async def mark_applied(conn: asyncpg.Connection, event_id: str, event_type: str) -> bool:
    """Record an input event as applied; False when it already was (skip it)."""
    return await conn.fetchval(MARK_APPLIED, event_id, event_type) is not None


async def append(conn: asyncpg.Connection, envelope: Envelope[MoneyEvent], raw: bytes) -> None:
    """Append a journal event (``raw``: its encoded form) with its postings; move balances."""
    event = envelope.payload
    check_balanced(event.postings)
    await conn.execute(
        INSERT_JOURNAL,
        envelope.id,
        envelope.type,
        event.account_id,
        event.cause_id,
        envelope.occurred_at,
        raw.decode(),
    )
    if not event.postings:
        return
    await conn.executemany(
        INSERT_POSTING, [(envelope.id, p.account, p.unit, p.amount) for p in event.postings]
    )
    deltas: dict[tuple[str, str], int] = defaultdict(int)
    for p in event.postings:
        deltas[(p.account, p.unit)] += p.amount
    await conn.executemany(ADD_BALANCE, [(a, u, d) for (a, u), d in sorted(deltas.items())])


async def balance(conn: asyncpg.Connection, account: str, unit: str) -> int:
    """Current balance of a ledger account (0 when it never moved)."""
    value = await conn.fetchval(SELECT_BALANCE, account, unit)
    return int(value or 0)


async def bucket_unit(conn: asyncpg.Connection, account_id: str, bucket: str) -> str | None:
    """The unit of a tenant's bucket, or None when the bucket was never funded."""
    unit: str | None = await conn.fetchval(SELECT_BUCKET_UNIT, account_id, bucket)
    return unit


async def open_bucket(conn: asyncpg.Connection, account_id: str, bucket: str, unit: str) -> None:
    """Fix a bucket's unit (at its first top-up)."""
    await conn.execute(INSERT_BUCKET, account_id, bucket, unit)


async def topup_fingerprint(conn: asyncpg.Connection, key: str) -> str | None:
    """The fingerprint stored for a top-up idempotency key, if it was used."""
    value: str | None = await conn.fetchval(SELECT_TOPUP, key)
    return value


async def record_topup(conn: asyncpg.Connection, key: str, fingerprint: str, event_id: str) -> None:
    """Remember an idempotency key with the payload it stood for."""
    await conn.execute(INSERT_TOPUP, key, fingerprint, event_id)


async def insert_hold(  # noqa: PLR0913 - one row's columns
    conn: asyncpg.Connection,
    *,
    hold_id: str,
    request_id: str,
    account_id: str,
    bucket: str,
    unit: str,
    amount: int,
    deadline_at: datetime,
    opened_at: datetime,
) -> None:
    """Open a hold."""
    await conn.execute(
        INSERT_HOLD, hold_id, request_id, account_id, bucket, unit, amount, deadline_at, opened_at
    )


async def get_hold(conn: asyncpg.Connection, hold_id: str) -> dict[str, Any] | None:
    """A hold's row, or None."""
    row = await conn.fetchrow(SELECT_HOLD, hold_id)
    return dict(row) if row is not None else None


async def close_hold(conn: asyncpg.Connection, hold_id: str, status: str, at: datetime) -> bool:
    """Close an open hold; False when it was already closed."""
    result: str = await conn.execute(CLOSE_HOLD, hold_id, status, at)
    return result.endswith(" 1")


async def insert_receipt(  # noqa: PLR0913 - one row's columns
    conn: asyncpg.Connection,
    *,
    request_id: str,
    account_id: str,
    key_id: str,
    project_id: str,
    task_id: str | None,
    catalog_model: str,
    status: str,
    created_at: datetime,
    body: dict[str, Any],
) -> None:
    """Create a request's receipt."""
    await conn.execute(
        INSERT_RECEIPT,
        request_id,
        account_id,
        key_id,
        project_id,
        task_id,
        catalog_model,
        status,
        created_at,
        orjson.dumps(body).decode(),
    )


async def get_receipt(conn: asyncpg.Connection, request_id: str) -> dict[str, Any] | None:
    """A receipt's body, or None."""
    raw = await conn.fetchval(SELECT_RECEIPT, request_id)
    if raw is None:
        return None
    body: dict[str, Any] = orjson.loads(raw)
    return body


async def update_receipt(
    conn: asyncpg.Connection, request_id: str, status: str, body: dict[str, Any]
) -> None:
    """Replace a receipt's body (receipts are a projection, rebuilt by replay)."""
    await conn.execute(UPDATE_RECEIPT, request_id, status, orjson.dumps(body).decode())
