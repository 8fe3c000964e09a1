"""asyncpg adapter of budgets, task envelopes, per-budget usage and multi-bucket holds.

Like ``store``, every function runs inside the consumer's batch transaction, so a hold, the
usage it adds to each budget and the offsets commit together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
INSERT_TASK = """
INSERT INTO ledger.tasks (task_id, account_id, project_id, key_id, name, route_types, fallback,
    status, opened_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8) ON CONFLICT DO NOTHING
"""
CLOSE_TASK = """
UPDATE ledger.tasks SET status = 'closed', closed_at = $3, close_reason = $4
WHERE task_id = $1 AND account_id = $2 AND status = 'open'
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


async def close_task(
    conn: asyncpg.Connection, task_id: str, account_id: str, at: datetime, reason: str
) -> bool:
    """Close an open task; False when it was unknown or already closed."""
    result: str = await conn.execute(CLOSE_TASK, task_id, account_id, at, reason)
    return result.endswith(" 1")
