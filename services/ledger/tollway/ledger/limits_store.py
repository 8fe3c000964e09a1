"""asyncpg adapter of budgets, task envelopes, per-budget usage and multi-bucket holds.

Like ``store``, every function runs inside the consumer's batch transaction, so a hold, the
usage it adds to each budget and the offsets commit together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tollway.ledger.limits_domain import Budget, TaskRule

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    import asyncpg

    from tollway.events.envelope import Envelope
    from tollway.events.limits import BudgetSet, TaskOpened

UPSERT_BUDGET = """
INSERT INTO ledger.budgets AS b (budget_id, account_id, name, scope, scope_id, time_window,
    timezone, unit, bucket, amount, mode, set_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (budget_id) DO UPDATE SET name = EXCLUDED.name, scope = EXCLUDED.scope,
    scope_id = EXCLUDED.scope_id, time_window = EXCLUDED.time_window,
    timezone = EXCLUDED.timezone, unit = EXCLUDED.unit, bucket = EXCLUDED.bucket,
    amount = EXCLUDED.amount, mode = EXCLUDED.mode, set_at = EXCLUDED.set_at
WHERE b.account_id = EXCLUDED.account_id
"""
DELETE_BUDGET = "DELETE FROM ledger.budgets WHERE budget_id = $1 AND account_id = $2"
SELECT_BUDGETS = """
SELECT budget_id, name, scope, scope_id, time_window, timezone, unit, bucket, amount, mode
FROM ledger.budgets WHERE account_id = $1 ORDER BY budget_id
"""
SELECT_USED = """
SELECT COALESCE(sum(held + spent), 0) FROM ledger.budget_usage
WHERE budget_id = $1 AND ($2::timestamptz IS NULL OR at >= $2)
"""
SELECT_SPENT = """
SELECT COALESCE(sum(spent), 0) FROM ledger.budget_usage
WHERE budget_id = $1 AND ($2::timestamptz IS NULL OR at >= $2)
"""
INSERT_USAGE = """
INSERT INTO ledger.budget_usage (budget_id, hold_id, request_id, at, held, spent, channels)
VALUES ($1, $2, $3, $4, $5, 0, $6)
"""
SELECT_REQUEST_USAGE = """
SELECT u.budget_id, u.hold_id, u.at, u.held, u.spent, u.channels
FROM ledger.budget_usage u WHERE u.request_id = $1 ORDER BY u.budget_id, u.hold_id
"""
UPDATE_USAGE = (
    "UPDATE ledger.budget_usage SET held = 0, spent = $3 WHERE budget_id = $1 AND hold_id = $2"
)
RELEASE_HOLD_USAGE = "UPDATE ledger.budget_usage SET held = 0 WHERE hold_id = $1"
INSERT_TASK = """
INSERT INTO ledger.tasks (task_id, account_id, project_id, key_id, name, route_types, fallback,
    status, opened_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8) ON CONFLICT DO NOTHING
"""
SELECT_TASK = """
SELECT task_id, status, route_types, fallback FROM ledger.tasks
WHERE task_id = $1 AND account_id = $2
"""
CLOSE_TASK = """
UPDATE ledger.tasks SET status = 'closed', closed_at = $3, close_reason = $4
WHERE task_id = $1 AND account_id = $2 AND status = 'open'
"""
TASK_STOPPED = """
UPDATE ledger.tasks SET stopped_by = $3
WHERE task_id = $1 AND account_id = $2 AND stopped_by IS NULL
"""
SELECT_HOLDS = """
SELECT hold_id, request_id, account_id, bucket, unit, amount, status
FROM ledger.holds WHERE request_id = $1 ORDER BY hold_id
"""
INSERT_JOURNAL = """
INSERT INTO ledger.journal (event_id, type, account_id, cause_id, occurred_at, body)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)
"""


async def set_budget(conn: asyncpg.Connection, b: BudgetSet, at: datetime) -> None:
    """Create or replace a budget (a budget id never moves to another account)."""
    await conn.execute(
        UPSERT_BUDGET,
        b.budget_id,
        b.account_id,
        b.name,
        b.scope,
        b.scope_id,
        b.window,
        b.timezone,
        b.unit,
        b.bucket,
        b.amount,
        b.mode,
        at,
    )


async def remove_budget(conn: asyncpg.Connection, budget_id: str, account_id: str) -> None:
    """Delete a budget's definition; its usage rows stay (they are history)."""
    await conn.execute(DELETE_BUDGET, budget_id, account_id)


async def budgets(conn: asyncpg.Connection, account_id: str) -> list[Budget]:
    """Every budget of an account, task envelopes included."""
    rows = await conn.fetch(SELECT_BUDGETS, account_id)
    return [
        Budget(
            budget_id=r["budget_id"],
            name=r["name"],
            scope=r["scope"],
            scope_id=r["scope_id"],
            window=r["time_window"],
            timezone=r["timezone"],
            unit=r["unit"],
            bucket=r["bucket"],
            amount=r["amount"],
            mode=r["mode"],
        )
        for r in rows
    ]


async def used(
    conn: asyncpg.Connection, budget_id: str, since: datetime | None, *, spent_only: bool = False
) -> int:
    """Held + spent (or spent only) counted against a budget since ``since`` (event time)."""
    value = await conn.fetchval(SELECT_SPENT if spent_only else SELECT_USED, budget_id, since)
    return int(value)


async def insert_usage(
    conn: asyncpg.Connection, rows: Iterable[tuple[str, str, str, datetime, int, list[str]]]
) -> None:
    """Count new holds against budgets: (budget, hold, request, at, held, channels)."""
    await conn.executemany(INSERT_USAGE, list(rows))


async def request_usage(conn: asyncpg.Connection, request_id: str) -> list[dict[str, Any]]:
    """Every budget row a request's holds added."""
    return [dict(r) for r in await conn.fetch(SELECT_REQUEST_USAGE, request_id)]


async def settle_usage(conn: asyncpg.Connection, budget_id: str, hold_id: str, spent: int) -> None:
    """A hold ended: nothing held any more, ``spent`` counted."""
    await conn.execute(UPDATE_USAGE, budget_id, hold_id, spent)


async def release_hold_usage(conn: asyncpg.Connection, hold_id: str) -> None:
    """A hold ended without a charge (released or expired): it no longer counts anywhere."""
    await conn.execute(RELEASE_HOLD_USAGE, hold_id)


async def open_task(conn: asyncpg.Connection, env: Envelope[TaskOpened]) -> None:
    """Record a task envelope (a redelivered or repeated open is a no-op)."""
    t = env.payload
    await conn.execute(
        INSERT_TASK,
        t.task_id,
        t.account_id,
        t.project_id,
        t.key_id,
        t.name,
        list(t.route_types),
        t.fallback,
        env.occurred_at,
    )


async def task(conn: asyncpg.Connection, task_id: str, account_id: str) -> TaskRule | None:
    """A task of this account, or None (another account's task does not exist here)."""
    row = await conn.fetchrow(SELECT_TASK, task_id, account_id)
    if row is None:
        return None
    return TaskRule(row["task_id"], row["status"], tuple(row["route_types"]), row["fallback"])


async def close_task(
    conn: asyncpg.Connection, task_id: str, account_id: str, at: datetime, reason: str
) -> bool:
    """Close an open task; False when it was unknown or already closed."""
    result: str = await conn.execute(CLOSE_TASK, task_id, account_id, at, reason)
    return result.endswith(" 1")


async def task_stopped(conn: asyncpg.Connection, task_id: str, account_id: str, limit: str) -> None:
    """Remember the first limit that refused one of the task's calls.

    Only the owner's own calls count: another account naming this task id gets a 404 and
    must not touch a row it does not own (nor write across partitions, which a replay, one
    partition at a time, could not reproduce).
    """
    await conn.execute(TASK_STOPPED, task_id, account_id, limit)


async def request_holds(conn: asyncpg.Connection, request_id: str) -> list[dict[str, Any]]:
    """Every hold of a request (one per bucket), whatever its status."""
    return [dict(r) for r in await conn.fetch(SELECT_HOLDS, request_id)]


async def journal(conn: asyncpg.Connection, env: Envelope[Any], raw: bytes) -> None:
    """Append a journal event that moves no money (a threshold crossing)."""
    p = env.payload
    await conn.execute(
        INSERT_JOURNAL, env.id, env.type, p.account_id, p.cause_id, env.occurred_at, raw.decode()
    )
