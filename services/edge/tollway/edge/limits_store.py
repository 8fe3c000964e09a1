"""asyncpg adapter of budgets and tasks for the edge.

Task ownership lives in the edge schema; budgets, task envelopes and their usage are read from
the ledger's projections (the ledger is their only writer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import asyncpg

INSERT_TASK = """
INSERT INTO edge.tasks (id, account_id, project_id, key_id) VALUES ($1, $2, $3, $4)
"""
DELETE_TASK = "DELETE FROM edge.tasks WHERE id = $1"
TASK_OWNED = "SELECT 1 FROM edge.tasks WHERE id = $1 AND account_id = $2"
# An account's tasks, newest first, with the ledger's status once it applied the opening.
ACCOUNT_TASKS = """
SELECT e.id, e.project_id, e.key_id, e.created_at, t.name, t.status, t.stopped_by
FROM edge.tasks e LEFT JOIN ledger.tasks t ON t.task_id = e.id AND t.account_id = e.account_id
WHERE e.account_id = $1 ORDER BY e.created_at DESC, e.id DESC LIMIT $2
"""
# A key's tasks, newest first, as GET /v1/tasks lists them.
KEY_TASKS = """
SELECT e.id, e.created_at, t.name, t.status, t.route_types, t.fallback, t.stopped_by
FROM edge.tasks e LEFT JOIN ledger.tasks t ON t.task_id = e.id AND t.account_id = e.account_id
WHERE e.account_id = $1 AND e.key_id = $2 ORDER BY e.created_at DESC, e.id DESC LIMIT $3
"""
# Which buckets each route type can pay from, over the models a key may call.
ROUTE_BUCKETS = """
SELECT DISTINCT c.route_type, c.bucket
FROM router.routes r
JOIN router.channels c ON c.id = r.channel_id
JOIN router.catalog_models m ON m.name = r.catalog_model
WHERE c.enabled AND m.enabled AND ($1::text[] IS NULL OR m.name = ANY($1::text[]))
"""
SELECT_LEDGER_TASK = """
SELECT name, status, route_types, fallback, opened_at, closed_at, close_reason, stopped_by
FROM ledger.tasks WHERE task_id = $1 AND account_id = $2
"""
SELECT_TASK_RECEIPTS = """
SELECT body FROM ledger.receipts WHERE account_id = $1 AND task_id = $2 ORDER BY created_at
"""
# A budget's usage in its current window (the wall clock is fine here: this is a read view,
# not a projection; the ledger itself decides on event time).
SELECT_BUDGETS = """
SELECT b.budget_id, b.account_id, b.name, b.scope, b.scope_id, b.time_window, b.timezone, b.unit,
       b.bucket, b.amount, b.mode,
       COALESCE(sum(u.held), 0)::bigint AS held, COALESCE(sum(u.spent), 0)::bigint AS spent
FROM ledger.budgets b
CROSS JOIN LATERAL (SELECT CASE b.time_window
    WHEN 'minute' THEN now() - interval '1 minute'
    WHEN 'hour' THEN now() - interval '1 hour'
    WHEN 'day' THEN date_trunc('day', now() AT TIME ZONE b.timezone) AT TIME ZONE b.timezone
    WHEN 'month' THEN date_trunc('month', now() AT TIME ZONE b.timezone) AT TIME ZONE b.timezone
END AS since) w
LEFT JOIN ledger.budget_usage u ON u.budget_id = b.budget_id
    AND (w.since IS NULL OR u.at >= w.since)
WHERE b.account_id = $1 AND ($2::text IS NULL OR (b.scope = 'task' AND b.scope_id = $2))
GROUP BY b.budget_id ORDER BY b.budget_id
"""
BUDGET_ACCOUNT = "SELECT account_id FROM ledger.budgets WHERE budget_id = $1"
ACCOUNT_EXISTS = "SELECT 1 FROM edge.accounts WHERE id = $1"
BUCKET_UNITS = "SELECT bucket, unit FROM ledger.buckets WHERE account_id = $1"


async def add_task(
    pool: asyncpg.Pool, task_id: str, account_id: str, project_id: str, key_id: str
) -> None:
    """Record a task's owner."""
    await pool.execute(INSERT_TASK, task_id, account_id, project_id, key_id)


async def forget_task(pool: asyncpg.Pool, task_id: str) -> None:
    """Undo ``add_task`` when the event log never confirmed the task."""
    await pool.execute(DELETE_TASK, task_id)


async def owns_task(pool: asyncpg.Pool, task_id: str, account_id: str) -> bool:
    """True when ``account_id`` opened the task."""
    return await pool.fetchval(TASK_OWNED, task_id, account_id) is not None


async def account_tasks(pool: asyncpg.Pool, account_id: str, limit: int) -> list[dict[str, Any]]:
    """The account's newest tasks (status ``None`` until the ledger applied the opening)."""
    return [dict(r) for r in await pool.fetch(ACCOUNT_TASKS, account_id, limit)]


async def key_tasks(
    pool: asyncpg.Pool, account_id: str, key_id: str, limit: int
) -> list[dict[str, Any]]:
    """A key's newest tasks (status ``None`` until the ledger applied the opening)."""
    return [dict(r) for r in await pool.fetch(KEY_TASKS, account_id, key_id, limit)]


async def route_buckets(pool: asyncpg.Pool, models: tuple[str, ...] | None) -> set[tuple[str, str]]:
    """``(route type, bucket)`` of every enabled route of ``models`` (None: every model)."""
    rows = await pool.fetch(ROUTE_BUCKETS, list(models) if models else None)
    return {(r["route_type"], r["bucket"]) for r in rows}


async def ledger_task(pool: asyncpg.Pool, task_id: str, account_id: str) -> dict[str, Any] | None:
    """The ledger's view of a task, or None until it applied the opening."""
    row = await pool.fetchrow(SELECT_LEDGER_TASK, task_id, account_id)
    return None if row is None else dict(row)


async def task_receipts(pool: asyncpg.Pool, account_id: str, task_id: str) -> list[dict[str, Any]]:
    """Every receipt of the task's calls."""
    rows = await pool.fetch(SELECT_TASK_RECEIPTS, account_id, task_id)
    return [orjson.loads(r["body"]) for r in rows]


async def budgets(
    pool: asyncpg.Pool, account_id: str, task_id: str | None = None
) -> list[dict[str, Any]]:
    """An account's budgets (or one task's envelope) with held and spent in the current window."""
    return [dict(r) for r in await pool.fetch(SELECT_BUDGETS, account_id, task_id)]


async def budget_account(pool: asyncpg.Pool, budget_id: str) -> str | None:
    """The account a budget belongs to, once the ledger applied it."""
    value: str | None = await pool.fetchval(BUDGET_ACCOUNT, budget_id)
    return value


async def account_exists(pool: asyncpg.Pool, account_id: str) -> bool:
    """True for a known account."""
    return await pool.fetchval(ACCOUNT_EXISTS, account_id) is not None


async def bucket_units(pool: asyncpg.Pool, account_id: str) -> dict[str, str]:
    """Each funded bucket's unit."""
    return {r["bucket"]: r["unit"] for r in await pool.fetch(BUCKET_UNITS, account_id)}
