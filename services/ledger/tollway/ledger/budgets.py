"""Budget and task use cases: definitions, and what a finished request does to them.

Definitions (BudgetSet, BudgetRemoved, TaskOpened, TaskClosed) arrive on gw.requests in the
account's partition, in order with the holds they constrain. When a request finishes, its other
buckets' holds are released, each budget it counted against stops counting the hold and counts
what was actually spent, and a spend that crosses 50/80/100 % of a budget is journaled once as
``BudgetThresholdCrossed`` (id derived from the finishing event, so replay reproduces it).

Closing a task refuses its further calls; the task itself reserves nothing, so what it "holds"
is the holds of its in-flight requests, which settle normally when they finish.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from tollway.events import topics
from tollway.events.ledger import HoldReleased
from tollway.events.limits import (
    BudgetRemoved,
    BudgetSet,
    BudgetThresholdCrossed,
    TaskClosed,
    TaskOpened,
)
from tollway.ledger import holds, limits_store, receipts, store
from tollway.ledger import limits_domain as ld
from tollway.ledger.journal import emit, journal
from tollway.runtime.outbox import Outgoing

if TYPE_CHECKING:
    import asyncpg

    from tollway.events.envelope import Envelope, Payload
    from tollway.events.gateway import RequestFinished

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


def served_bucket_hold(holds: list[dict[str, Any]], fin: RequestFinished) -> str:
    """The hold to settle: the served bucket's, else the primary (nothing served: released)."""
    if fin.served and fin.served_bucket is not None:
        for hold in holds:
            if hold["bucket"] == fin.served_bucket:
                return str(hold["hold_id"])
    return fin.hold_id


def served_hold(holds: list[dict[str, Any]], fin: RequestFinished) -> dict[str, Any] | None:
    """Of the request's ``holds``, the one the finish settles (or captures late, once expired)."""
    hold_id = served_bucket_hold(holds, fin)
    return next((h for h in holds if h["hold_id"] == hold_id), None)


async def after_finish(
    conn: asyncpg.Connection,
    env: Envelope[RequestFinished],
    settled: Envelope[Payload],
    holds: list[dict[str, Any]] | None = None,
) -> list[Outgoing]:
    """Release the other holds, move budget usage from held to spent, journal thresholds.

    ``holds``: the request's holds as they now stand, when the caller has them already.
    """
    fin = env.payload
    if holds is None:
        holds = await limits_store.request_holds(conn, fin.request_id)
    out = [await _release(conn, env, hold) for hold in holds if hold["status"] == "open"]
    charged = int(getattr(settled.payload, "charged_micro", 0))
    out += await _count_spend(conn, env, str(getattr(settled.payload, "hold_id", "")), charged)
    settled_hold = str(getattr(settled.payload, "hold_id", ""))
    await _annotate_receipt(conn, fin, settled_hold, str(getattr(settled.payload, "unit", "")))
    return out


async def _release(
    conn: asyncpg.Connection, env: Envelope[RequestFinished], hold: dict[str, Any]
) -> Outgoing:
    account, bucket, unit = hold["account_id"], hold["bucket"], hold["unit"]
    released = HoldReleased(
        account_id=account,
        cause_id=env.id,
        hold_id=hold["hold_id"],
        request_id=hold["request_id"],
        bucket=bucket,
        unit=unit,
        released_micro=hold["amount"],
        postings=holds.expiry_postings(account, bucket, unit, hold["amount"]),
    )
    await store.close_hold(conn, hold["hold_id"], "released", env.occurred_at)
    return await journal(conn, emit(env, released, f"hold_released:{hold['hold_id']}"))


async def _count_spend(
    conn: asyncpg.Connection, env: Envelope[RequestFinished], settled_hold: str, charged: int
) -> list[Outgoing]:
    fin = env.payload
    rows = await limits_store.request_usage(conn, fin.request_id)
    budgets = {b.budget_id: b for b in await limits_store.budgets(conn, fin.account_id)}
    spends = ld.spend_of_request(rows, budgets, fin, settled_hold, charged)
    for s in spends:
        await limits_store.settle_usage(conn, s.budget_id, s.hold_id, s.amount)
    out: list[Outgoing] = []
    for s in spends:
        budget = budgets.get(s.budget_id)
        if budget is not None and s.amount > 0:
            out += await _thresholds(conn, env, budget, s)
    return out


async def _thresholds(
    conn: asyncpg.Connection, env: Envelope[RequestFinished], budget: ld.Budget, spend: ld.Spend
) -> list[Outgoing]:
    since = ld.window_start(budget.window, budget.timezone, env.occurred_at)
    if since is not None and spend.at < since:
        return []  # the spend belongs to a window that has already passed
    after = await limits_store.used(conn, budget.budget_id, since, spent_only=True)
    out = []
    for percent in ld.crossed(budget.amount, after - spend.amount, after):
        crossed = BudgetThresholdCrossed(
            account_id=env.payload.account_id,
            budget_id=budget.budget_id,
            name=budget.name,
            scope=budget.scope,
            scope_id=budget.scope_id,
            mode=budget.mode,
            unit=budget.unit,
            amount=budget.amount,
            spent=after,
            percent=percent,
            cause_id=env.id,
        )
        event = emit(env, crossed, f"threshold:{budget.budget_id}:{percent}")
        message = Outgoing.of(topics.LEDGER_EVENTS, env.payload.account_id, event)
        await limits_store.journal(conn, event, message.value)
        log.info("budget_threshold_crossed", budget_id=budget.budget_id, percent=percent)
        out.append(message)
    return out


async def _annotate_receipt(
    conn: asyncpg.Connection, fin: RequestFinished, settled: str, unit: str
) -> None:
    receipt = await store.get_receipt(conn, fin.request_id)
    if receipt is None:
        return
    receipts.annotate_finish(receipt, fin, settled, unit)
    await store.update_receipt(conn, fin.request_id, receipt["status"], receipt)
