"""Budget and task definitions: the use cases that set, remove, open and close them.

Definitions (BudgetSet, BudgetRemoved, TaskOpened, TaskClosed) arrive on gw.requests in the
account's partition, in order with the holds they constrain. What a request does to them (its
holds counted, its spend, the thresholds it crosses) is decided in the fold
(:mod:`tollway.ledger.fold_limits`).

Closing a task refuses its further calls; the task itself reserves nothing, so what it "holds"
is the holds of its in-flight requests, which settle normally when they finish.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from tollway.events.limits import (
    BudgetRemoved,
    BudgetSet,
    TaskClosed,
    TaskOpened,
)
from tollway.ledger import limits_store

if TYPE_CHECKING:
    import asyncpg

    from tollway.events.envelope import Envelope

log = structlog.get_logger(__name__)


def task_budget_id(task_id: str, bucket: str) -> str:
    """A task envelope's budget in one bucket."""
    return f"task:{task_id}:{bucket}"


async def apply_definition(conn: asyncpg.Connection, env: Envelope[Any]) -> bool:
    """Apply a budget or task definition; False when ``env`` is not one."""
    p = env.payload
    if isinstance(p, BudgetSet):
        await limits_store.set_budget(conn, p, env.occurred_at)
    elif isinstance(p, BudgetRemoved):
        await limits_store.remove_budget(conn, p.budget_id, p.account_id)
    elif isinstance(p, TaskOpened):
        await _open_task(conn, env)
    elif isinstance(p, TaskClosed):
        closed = await limits_store.close_task(
            conn, p.task_id, p.account_id, env.occurred_at, p.reason
        )
        log.info("task_closed" if closed else "task_close_ignored", task_id=p.task_id)
    else:
        return False
    return True


async def _open_task(conn: asyncpg.Connection, env: Envelope[TaskOpened]) -> None:
    t = env.payload
    await limits_store.open_task(conn, env)
    for b in t.budgets:
        budget = BudgetSet(
            budget_id=task_budget_id(t.task_id, b.bucket),
            account_id=t.account_id,
            name=t.name or t.task_id,
            scope="task",
            scope_id=t.task_id,
            unit=b.unit,
            bucket=b.bucket,
            amount=b.amount_micro,
        )
        await limits_store.set_budget(conn, budget, env.occurred_at)
    log.info("task_opened", task_id=t.task_id, buckets=[b.bucket for b in t.budgets])
