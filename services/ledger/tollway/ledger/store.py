"""asyncpg adapter of the ledger.

Every function runs inside the caller's transaction (the consumer's batch transaction), so
effects, offsets and outbox rows commit or vanish together.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import orjson

from tollway.ledger.domain import check_balanced

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from datetime import datetime

    import asyncpg

    from tollway.events.envelope import Envelope
    from tollway.events.ledger import MoneyEvent

MARK_APPLIED = """
INSERT INTO ledger.applied_events (event_id, type)
SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT DO NOTHING RETURNING event_id
"""
# A journal event, its postings and the balances they move: one statement, one round trip.
# Postings keep their order (``seq``); balances move once per (account, unit), in key order.
APPEND_EVENT = """
WITH p(account, unit, amount, n) AS (
    SELECT * FROM unnest($7::text[], $8::text[], $9::bigint[]) WITH ORDINALITY
),
journal AS (
    INSERT INTO ledger.journal (event_id, type, account_id, cause_id, occurred_at, body)
    VALUES ($1, $2, $3, $4, $5, $6::jsonb)
),
postings AS (
    INSERT INTO ledger.postings (event_id, account, unit, amount)
    SELECT $1, account, unit, amount FROM p ORDER BY n
)
INSERT INTO ledger.balances AS b (account, unit, amount)
SELECT account, unit, sum(amount)::bigint FROM p GROUP BY account, unit ORDER BY account, unit
ON CONFLICT (account, unit) DO UPDATE SET amount = b.amount + EXCLUDED.amount
"""
# Read by the ledger's clock whenever it looks (see clock.py); the partial index holds_open
# keeps it cheap: only holds in flight are open.
OPEN_HOLDS_DUE = (
    "SELECT count(*) AS open, min(deadline_at) AS earliest FROM ledger.holds WHERE status = 'open'"
)
SELECT_BALANCE = "SELECT amount FROM ledger.balances WHERE account = $1 AND unit = $2"
SELECT_BUCKET_UNIT = "SELECT unit FROM ledger.buckets WHERE account_id = $1 AND bucket = $2"
INSERT_RECEIPT = """
INSERT INTO ledger.receipts
    (request_id, account_id, key_id, project_id, task_id, catalog_model, status, created_at, body)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
"""
SELECT_RECEIPT = "SELECT body FROM ledger.receipts WHERE request_id = $1"
UPDATE_RECEIPT = "UPDATE ledger.receipts SET status = $2, body = $3::jsonb WHERE request_id = $1"
UPDATE_RECEIPTS = """
UPDATE ledger.receipts r SET status = u.status, body = u.body::jsonb
FROM unnest($1::text[], $2::text[], $3::text[]) AS u(request_id, status, body)
WHERE r.request_id = u.request_id
"""

# The receipts of the batch being applied: request id -> (status if changed, body as JSON).
# See ``receipt_batch``; None outside a batch, where every call goes to Postgres.
_BATCH_RECEIPTS: ContextVar[dict[str, tuple[str | None, str]] | None] = ContextVar(
    "ledger_batch_receipts", default=None
)


async def mark_applied(conn: asyncpg.Connection, events: list[tuple[str, str]]) -> set[str]:
    """Record input events (id, type) as applied, in one statement; the ids new to the ledger.

    An id already applied, or repeated within ``events``, is returned at most once.
    """
    rows = await conn.fetch(MARK_APPLIED, [i for i, _ in events], [t for _, t in events])
    return {r["event_id"] for r in rows}


async def append(conn: asyncpg.Connection, envelope: Envelope[MoneyEvent], raw: bytes) -> None:
    """Append a journal event (``raw``: its encoded form) with its postings; move balances."""
    event = envelope.payload
    check_balanced(event.postings)
    await conn.execute(
        APPEND_EVENT,
        envelope.id,
        envelope.type,
        event.account_id,
        event.cause_id,
        envelope.occurred_at,
        raw.decode(),
        [p.account for p in event.postings],
        [p.unit for p in event.postings],
        [p.amount for p in event.postings],
    )


async def balance(conn: asyncpg.Connection, account: str, unit: str) -> int:
    """Current balance of a ledger account (0 when it never moved)."""
    value = await conn.fetchval(SELECT_BALANCE, account, unit)
    return int(value or 0)


async def bucket_unit(conn: asyncpg.Connection, account_id: str, bucket: str) -> str | None:
    """The unit of a tenant's bucket, or None when the bucket was never funded."""
    unit: str | None = await conn.fetchval(SELECT_BUCKET_UNIT, account_id, bucket)
    return unit


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


@contextlib.asynccontextmanager
async def receipt_batch(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Within: each receipt is read from Postgres once and written back once, at the end.

    An attempt, the finish and its budget notes each rewrite a request's receipt; in one batch
    that was three reads and three writes of the same row. Every read still returns a fresh
    copy (decoded from the bytes last written), exactly as a read from Postgres would. Nothing is
    written when the body raises: the batch's transaction is rolled back anyway.
    """
    batch: dict[str, tuple[str | None, str]] = {}
    token = _BATCH_RECEIPTS.set(batch)
    try:
        yield
    finally:
        _BATCH_RECEIPTS.reset(token)
    changed = [(rid, status, body) for rid, (status, body) in batch.items() if status is not None]
    if changed:
        await conn.execute(
            UPDATE_RECEIPTS,
            [rid for rid, _, _ in changed],
            [status for _, status, _ in changed],
            [body for _, _, body in changed],
        )


async def get_receipt(conn: asyncpg.Connection, request_id: str) -> dict[str, Any] | None:
    """A receipt's body, or None."""
    batch = _BATCH_RECEIPTS.get()
    raw: str | None
    if batch is not None and request_id in batch:
        raw = batch[request_id][1]
    else:
        raw = await conn.fetchval(SELECT_RECEIPT, request_id)
        if batch is not None and raw is not None:
            batch[request_id] = (None, raw)
    if raw is None:
        return None
    body: dict[str, Any] = orjson.loads(raw)
    return body


async def update_receipt(
    conn: asyncpg.Connection, request_id: str, status: str, body: dict[str, Any]
) -> None:
    """Replace a receipt's body (receipts are a projection, rebuilt by replay)."""
    raw = orjson.dumps(body).decode()
    batch = _BATCH_RECEIPTS.get()
    if batch is not None:
        batch[request_id] = (status, raw)
        return
    await conn.execute(UPDATE_RECEIPT, request_id, status, raw)


SELECT_EXPIRABLE = """
SELECT hold_id, request_id, account_id, bucket, unit, amount, status, deadline_at
FROM ledger.holds WHERE status = 'open' AND deadline_at < $1
  AND ($2::bigint IS NULL OR request_offset IS NULL OR request_offset < $2)
ORDER BY deadline_at, hold_id
"""


async def expirable_holds(
    conn: asyncpg.Connection, before: datetime, requests_before: int | None = None
) -> list[dict[str, Any]]:
    """Open holds whose deadline is before ``before``, oldest first (a stable order).

    With ``requests_before``, only holds whose request's offset is below it.
    """
    return [dict(r) for r in await conn.fetch(SELECT_EXPIRABLE, before, requests_before)]


SELECT_CORRECTION = (
    "SELECT fingerprint FROM ledger.corrections WHERE account_id = $1 AND idempotency_key = $2"
)
INSERT_CORRECTION = """
INSERT INTO ledger.corrections
    (account_id, idempotency_key, fingerprint, event_id, original_event_id, amount)
VALUES ($1, $2, $3, $4, $5, $6)
"""


async def correction_fingerprint(conn: asyncpg.Connection, account_id: str, key: str) -> str | None:
    """The fingerprint stored for an account's correction key, if it was applied."""
    value: str | None = await conn.fetchval(SELECT_CORRECTION, account_id, key)
    return value


async def record_correction(  # noqa: PLR0913 - one row's columns
    conn: asyncpg.Connection,
    *,
    account_id: str,
    key: str,
    fingerprint: str,
    event_id: str,
    original_event_id: str | None,
    amount: int,
) -> None:
    """Remember an applied correction (and what it took from its original)."""
    await conn.execute(
        INSERT_CORRECTION, account_id, key, fingerprint, event_id, original_event_id, amount
    )
