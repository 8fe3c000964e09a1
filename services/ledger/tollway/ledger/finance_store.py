"""asyncpg reads for finance: the state digest, the invariant checks and statements.

Read-only over the ledger schema (the live one, or a replay's). Time filters use the journal's
``occurred_at`` (event time), so a statement or a past balance is the same on a replay.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

from tollway.events.ids import derived_id
from tollway.ledger import domain

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

# Every projection a replay rebuilds: (columns, ordering). Sequence numbers are left out: two
# runs interleave accounts differently, but every row and every per-account order is the same.
DIGEST_TABLES: dict[str, tuple[str, str]] = {
    "journal": ("event_id, type, account_id, cause_id, occurred_at, body", "event_id"),
    "postings": ("event_id, account, unit, amount", "event_id, account, unit, amount"),
    "balances": ("account, unit, amount", "account, unit"),
    "buckets": ("account_id, bucket, unit", "account_id, bucket"),
    "topups": (
        "account_id, idempotency_key, fingerprint, event_id",
        "account_id, idempotency_key",
    ),
    "corrections": (
        "account_id, idempotency_key, fingerprint, event_id, original_event_id, amount",
        "account_id, idempotency_key",
    ),
    "holds": (
        (
            "hold_id, request_id, account_id, bucket, unit, amount, status, deadline_at, opened_at,"
            " closed_at"
        ),
        "hold_id",
    ),
    "receipts": (
        (
            "request_id, account_id, key_id, project_id, task_id, catalog_model, status,"
            " created_at, body"
        ),
        "request_id",
    ),
    "price_versions": (
        (
            "channel_id, version, price_input, price_output, price_cached_input, event_id,"
            " changed_at, price_cache_write, price_cache_write_1h, price_reasoning,"
            " cost_currency, cost_input, cost_output, cost_cached_input, cost_cache_write,"
            " cost_cache_write_1h, cost_reasoning, cost_per_request"
        ),
        "channel_id, version",
    ),
    "upstream_costs": (
        (
            "event_id, cause_id, request_id, attempt, occurred_at, day, channel_id, brand,"
            " route_type, catalog_model, account_id, key_id, project_id, served, currency,"
            " cost_micro"
        ),
        "event_id",
    ),
    # Budgets, their usage and task envelopes decide which holds are placed: a replay must
    # rebuild them too.
    "budgets": (
        (
            "budget_id, account_id, name, scope, scope_id, time_window, timezone, unit, bucket,"
            " amount, mode, set_at"
        ),
        "budget_id",
    ),
    "budget_usage": (
        "budget_id, hold_id, request_id, at, held, spent, channels",
        "budget_id, hold_id",
    ),
    # Re-ratings of past charges (their journal entries and postings are covered above).
    "rerates": (
        (
            "account_id, correction_id, request_id, original_event_id, event_id, channel_id,"
            " unit, charged_before, rerated, amount, at"
        ),
        "account_id, correction_id, request_id",
    ),
    # Re-ratings of booked upstream costs (their entries and postings are covered above).
    "upstream_cost_rerates": (
        (
            "account_id, correction_id, cost_event_id, attempt_event_id, event_id, request_id,"
            " attempt, channel_id, currency, booked_before, rerated, amount, at"
        ),
        "account_id, correction_id, cost_event_id",
    ),
    # Reconciliation: every attempt's booked and reported cost, every invoice line revision.
    "recon_attempts": (
        (
            "event_id, day, channel_id, account_id, request_id, attempt, outcome,"
            " upstream_request_id, upstream_model, input_tokens, output_tokens, booked_micro,"
            " booked_currency, reported_micro, reported_currency, occurred_at"
        ),
        "event_id",
    ),
    "recon_invoice_lines": (
        (
            "channel_id, day, line_key, revision, upstream_request_id, model, requests,"
            " input_tokens, output_tokens, cost_micro, currency, import_id, line, event_id,"
            " recorded_at"
        ),
        "channel_id, day, line_key, revision",
    ),
    "tasks": (
        (
            "task_id, account_id, project_id, key_id, name, route_types, fallback, status,"
            " opened_at, closed_at, close_reason, stopped_by"
        ),
        "task_id",
    ),
}
# A zero balance and a missing row mean the same: an account whose postings cancel out.
DIGEST_FILTER = {"balances": "WHERE amount <> 0"}


UNBALANCED_EVENTS = """
SELECT count(*) FROM (SELECT event_id, unit FROM ledger.postings
                      GROUP BY event_id, unit HAVING sum(amount) <> 0) bad
"""
UNIT_TOTALS = "SELECT unit, sum(amount)::bigint AS total FROM ledger.postings GROUP BY unit"
BALANCE_DRIFT = """
SELECT count(*) FROM ledger.balances b
FULL JOIN (SELECT account, unit, sum(amount) AS total FROM ledger.postings GROUP BY account, unit) p
    USING (account, unit)
WHERE coalesce(b.amount, 0) <> coalesce(p.total, 0)
"""
OVERDUE_HOLDS = """
SELECT hold_id, account_id, deadline_at FROM ledger.holds
WHERE status = 'open' AND deadline_at < $1 ORDER BY deadline_at
"""
UNCLOSED_CLOSED_HOLDS = """
SELECT count(*) FROM ledger.holds WHERE (status = 'open') <> (closed_at IS NULL)
"""
STATEMENT = """
SELECT j.occurred_at, j.type, j.event_id, j.body -> 'payload' ->> 'request_id' AS request_id,
       p.account, p.unit, p.amount
FROM ledger.postings p JOIN ledger.journal j USING (event_id)
WHERE p.account = ANY($1::text[]) AND j.occurred_at >= $2 AND j.occurred_at < $3
ORDER BY j.occurred_at, j.seq, p.seq
"""
BALANCE_AT = """
SELECT p.account, p.unit, coalesce(sum(p.amount), 0)::bigint AS amount
FROM ledger.postings p JOIN ledger.journal j USING (event_id)
WHERE p.account = ANY($1::text[]) AND j.occurred_at < $2
GROUP BY p.account, p.unit ORDER BY p.account, p.unit
"""
CURRENT_BALANCES = """
SELECT account, unit, amount FROM ledger.balances
WHERE account = $1 OR account LIKE $1 || '/%' ORDER BY account, unit
"""
ENTRIES = """
SELECT seq, event_id, type, occurred_at, cause_id, body -> 'payload' AS payload
FROM ledger.journal WHERE account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3
"""
STORED_OFFSETS = (
    "SELECT topic, partition, next_offset FROM ledger.consumer_offsets WHERE group_id = $1"
)
OUTBOX_LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM ledger.outbox"
OUTBOX_PENDING_THROUGH = "SELECT count(*) FROM ledger.outbox WHERE seq <= $1"
ACCOUNTS_OF = """
SELECT DISTINCT account FROM ledger.postings
WHERE account = $1 OR account LIKE $1 || '/%' ORDER BY account
"""
# The state a credit to a bucket is decided on (see domain.refuse_credit), read in one round trip.
CREDIT_STATE = """
SELECT (SELECT unit FROM ledger.buckets WHERE account_id = $1 AND bucket = $2) AS bucket_unit,
       (SELECT amount FROM ledger.balances WHERE account = $3 AND unit = $5) AS bucket_balance,
       (SELECT amount FROM ledger.balances WHERE account = $4 AND unit = $5) AS source_balance
"""
OUTCOME = "SELECT type, body -> 'payload' AS payload FROM ledger.journal WHERE event_id = ANY($1)"


async def credit_state(
    conn: asyncpg.Connection, account_id: str, bucket: str, unit: str, amount: int
) -> domain.Credit:
    """A top-up of ``amount`` as the ledger would decide it now (its own partition's state).

    Only a preview: top-ups ahead of it in the log may still change the outcome.
    """
    row = await conn.fetchrow(
        CREDIT_STATE,
        account_id,
        bucket,
        domain.bucket_account(account_id, bucket),
        domain.topup_source(account_id),
        unit,
    )
    return domain.Credit(
        bucket=bucket,
        amount=amount,
        unit=unit,
        bucket_unit=row["bucket_unit"],
        bucket_balance=int(row["bucket_balance"] or 0),
        source_balance=int(row["source_balance"] or 0),
    )


async def topup_outcome(conn: asyncpg.Connection, event_id: str) -> dict[str, Any] | None:
    """What the ledger journaled for top-up ``event_id`` (``ToppedUp``/``TopUpRefused``), if yet.

    Looked up by the ids the ledger derives from its cause (unique index, no scan).
    """
    ids = [derived_id(event_id, salt) for salt in domain.TOPUP_OUTCOMES]
    row = await conn.fetchrow(OUTCOME, ids)
    if row is None:
        return None
    payload: dict[str, Any] = orjson.loads(row["payload"])
    return {"type": row["type"], "payload": payload}


async def table_digests(conn: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    """Row count and SHA-256 of every projection, over each row's canonical text form."""
    await conn.execute("SET TIME ZONE 'UTC'")
    out: dict[str, tuple[int, str]] = {}
    for name, (columns, order) in DIGEST_TABLES.items():
        query = (
            f"SELECT ROW({columns})::text FROM ledger.{name}"  # noqa: S608 - constants only
            f" {DIGEST_FILTER.get(name, '')} ORDER BY {order}"
        )
        digest = hashlib.sha256()
        rows = 0
        async with conn.transaction():
            async for record in conn.cursor(query, prefetch=5000):
                digest.update(record[0].encode())
                digest.update(b"\n")
                rows += 1
        out[name] = (rows, digest.hexdigest())
    return out


def combine(digests: dict[str, tuple[int, str]]) -> str:
    """One digest over the per-table digests (table order fixed by :data:`DIGEST_TABLES`)."""
    text = "\n".join(f"{name}:{digests[name][0]}:{digests[name][1]}" for name in DIGEST_TABLES)
    return hashlib.sha256(text.encode()).hexdigest()


async def unbalanced_events(conn: asyncpg.Connection) -> int:
    """Journal events whose postings do not sum to zero in some unit."""
    return int(await conn.fetchval(UNBALANCED_EVENTS))


async def unit_totals(conn: asyncpg.Connection) -> dict[str, int]:
    """Sum of every posting per unit (zero when double entry holds)."""
    return {r["unit"]: int(r["total"]) for r in await conn.fetch(UNIT_TOTALS)}


async def balance_drift(conn: asyncpg.Connection) -> int:
    """Ledger accounts whose balance differs from the sum of their postings."""
    return int(await conn.fetchval(BALANCE_DRIFT))


async def overdue_holds(conn: asyncpg.Connection, before: datetime) -> list[dict[str, Any]]:
    """Open holds whose deadline is before ``before``."""
    return [dict(r) for r in await conn.fetch(OVERDUE_HOLDS, before)]


async def inconsistent_holds(conn: asyncpg.Connection) -> int:
    """Holds open with a closing time, or closed without one."""
    return int(await conn.fetchval(UNCLOSED_CLOSED_HOLDS))


async def ledger_accounts(conn: asyncpg.Connection, account: str) -> list[str]:
    """The ledger accounts of a tenant (``acct`` -> ``acct/credit``, ``acct/credit/held``…)."""
    return [r["account"] for r in await conn.fetch(ACCOUNTS_OF, account)]


async def balances_at(
    conn: asyncpg.Connection, accounts: list[str], at: datetime
) -> list[dict[str, Any]]:
    """Balances of ``accounts`` as of event time ``at`` (postings strictly before it)."""
    return [dict(r) for r in await conn.fetch(BALANCE_AT, accounts, at)]


async def statement_lines(
    conn: asyncpg.Connection, accounts: list[str], start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Postings of ``accounts`` with their journal event, in event-time order."""
    return [dict(r) for r in await conn.fetch(STATEMENT, accounts, start, end)]


async def stored_offsets(conn: asyncpg.Connection, group: str) -> dict[tuple[str, int], int]:
    """The consumer group's offsets, stored with its effects."""
    rows = await conn.fetch(STORED_OFFSETS, group)
    return {(r["topic"], r["partition"]): int(r["next_offset"]) for r in rows}


async def outbox_last_seq(conn: asyncpg.Connection) -> int:
    """The newest outbox row (0 when it is empty)."""
    return int(await conn.fetchval(OUTBOX_LAST_SEQ))


async def outbox_pending_through(conn: asyncpg.Connection, seq: int) -> int:
    """Rows up to ``seq`` committed but not yet published."""
    return int(await conn.fetchval(OUTBOX_PENDING_THROUGH, seq))


async def current_balances(conn: asyncpg.Connection, account_id: str) -> list[dict[str, Any]]:
    """Every ledger account of a tenant with its balance now."""
    return [dict(r) for r in await conn.fetch(CURRENT_BALANCES, account_id)]


async def entries(
    conn: asyncpg.Connection, account_id: str, before_seq: int, limit: int
) -> list[dict[str, Any]]:
    """A tenant's journal entries, newest first, below ``before_seq`` (keyset pagination)."""
    return [dict(r) for r in await conn.fetch(ENTRIES, account_id, before_seq, limit)]


async def row_differences(
    live: asyncpg.Connection, other: asyncpg.Connection, table: str, limit: int = 3
) -> list[str]:
    """Up to ``limit`` rows of ``table`` that differ between two databases, both sides shown.

    For a person reading a failed verification: where to start looking. The live side is read
    now, so a live ledger still applying events can show rows that moved on since the snapshot.
    """
    columns, order = DIGEST_TABLES[table]
    key = order.split(",")[0].strip()
    query = (
        f"SELECT {key}::text AS k, ROW({columns})::text AS r FROM ledger.{table}"  # noqa: S608
        f" {DIGEST_FILTER.get(table, '')}"
    )
    mine = {(r["k"], r["r"]) for r in await live.fetch(query)}
    theirs = {(r["k"], r["r"]) for r in await other.fetch(query)}
    keys = sorted({k for k, _ in mine ^ theirs})[:limit]
    lines = []
    for k in keys:
        lines += [f"  {table} {k}:"]
        lines += [f"    live   {r[:400]}" for kk, r in sorted(mine - theirs) if kk == k]
        lines += [f"    replay {r[:400]}" for kk, r in sorted(theirs - mine) if kk == k]
    return lines
