"""The fold's share of budgets and task envelopes: pure decisions over the partition's state.

A request of a task passes its task's gate (known to this account, open, a route type it
allows) before anything is held; each hold then counts against every budget that covers it
(:mod:`tollway.ledger.limits_domain` decides whether it fits), as one :class:`UsageRow` per
(budget, hold). A finish turns the request's rows from held into spent (money: the settled
hold's charge; tokens: the served tokens, once per budget) and journals each 50/80/100 %
threshold the spend crossed; an expiry stops counting the hold. A refusal by the task's own
limit is remembered on the task (``stopped_by``, the first one only). Definitions (budgets set
and removed, tasks opened and closed) arrive in the account's partition, in order with the
holds they constrain, and are folded like the rest (:func:`decide_definition`).

Budget usage is kept per budget (:class:`BudgetUsage`, every row of it, for the windows) and
per request (the rows its holds added, which its finish settles). ``now`` is always the
deciding event's time. No IO, no clock, no database.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tollway.events.limits import (
    BudgetRemoved,
    BudgetSet,
    BudgetThresholdCrossed,
    TaskClosed,
    TaskOpened,
)
from tollway.ledger import limits_domain as ld
from tollway.ledger.journal import emit

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from datetime import datetime

    from tollway.events.envelope import Envelope, Payload
    from tollway.events.gateway import RequestFinished, RequestReceived
    from tollway.ledger.fold import State


@dataclass(frozen=True, slots=True)
class UsageRow:
    """What one hold counts against one budget (a row of ``ledger.budget_usage``).

    ``held`` while the hold is open, ``spent`` once settled; ``at`` is the request's event
    time, which windows are evaluated against; ``channels``: the hold's candidates the budget
    covers (a settlement counts only when one of them served).
    """

    budget_id: str
    hold_id: str
    request_id: str
    at: datetime
    held: int
    spent: int
    channels: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str]:
        """The row's identity: (budget, hold)."""
        return (self.budget_id, self.hold_id)


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """Every usage row of one budget, by hold id (never changed in place: see :meth:`put`)."""

    rows: Mapping[str, UsageRow]

    def used(self, since: datetime | None, *, spent_only: bool = False) -> int:
        """Held + spent (or spent only) counted since ``since`` (event time; None: ever)."""
        return sum(
            r.spent if spent_only else r.held + r.spent
            for r in self.rows.values()
            if since is None or r.at >= since
        )

    def put(self, row: UsageRow) -> BudgetUsage:
        """The same usage with ``row`` added or replaced."""
        return BudgetUsage({**self.rows, row.hold_id: row})


@dataclass(frozen=True, slots=True)
class Stop:
    """Why a request is rejected before any hold: HTTP status, the refusal, its bucket."""

    status: int
    refusal: ld.Refusal
    bucket: str


# --- authorize ---------------------------------------------------------------------------------


def task_of(state: State, req: RequestReceived) -> ld.TaskRule | None:
    """The request's task, when it names one this account has."""
    if req.task_id is None:
        return None
    return state.tasks.get((req.account_id, req.task_id))


def task_gate(req: RequestReceived, task: ld.TaskRule | None) -> Stop | None:
    """Where a task's request stops before any hold, if it does.

    Its task unknown to this account (404), closed (402), or allowing no route type its plan
    can use (403).
    """
    if req.task_id is None:
        return None
    bucket = req.plan[0].bucket
    limit = f"task:{req.task_id}"
    if task is None:
        message = f"No task '{req.task_id}' for this account: open one with POST /v1/tasks."
        return Stop(404, ld.Refusal(limit, "task_not_found", message, 0, 0), bucket)
    if task.status != "open":
        message = f"Task '{req.task_id}' is closed: open a new task to make more calls."
        return Stop(402, ld.Refusal(limit, "task_closed", message, 0, 0), bucket)
    if not ld.allowed_plan(req.plan, task):
        message = (
            f"Task '{req.task_id}' may only use {', '.join(task.route_types)} routes,"
            " and none of them serves this model."
        )
        return Stop(403, ld.Refusal(limit, "route_type_not_allowed", message, 0, 0), bucket)
    return None


def usage_of(state: State, budget: ld.Budget, now: datetime, *, spent_only: bool = False) -> int:
    """What ``budget`` counts at ``now`` inside its window."""
    usage = state.usage.get(budget.budget_id)
    if usage is None:
        return 0
    return usage.used(ld.window_start(budget.window, budget.timezone, now), spent_only=spent_only)


def limit_state(state: State, env: Envelope[RequestReceived]) -> ld.LimitState:
    """The budgets covering the request, and each hard one's usage before it."""
    req = env.payload
    budgets = [b for b in state.budgets.get(req.account_id, ()) if b.covers_request(req)]
    used = {b.budget_id: usage_of(state, b, env.occurred_at) for b in budgets if b.mode == "hard"}
    return ld.LimitState(budgets=budgets, used=used)


def usage_rows(
    env: Envelope[RequestReceived], hold_id: str, charges: Iterable[ld.Charge]
) -> list[UsageRow]:
    """The rows a placed hold adds, one per budget it counts against."""
    req = env.payload
    return [
        UsageRow(
            c.budget.budget_id, hold_id, req.request_id, env.occurred_at, c.amount, 0, c.channels
        )
        for c in charges
    ]


def task_stop(state: State, req: RequestReceived, r: ld.Refusal) -> ld.TaskRule | None:
    """The task as it stands once ``r`` refused one of its calls (None: nothing to note).

    Only the first refusal by the task's own limit is kept, and only on the owner's task.
    """
    if req.task_id is None or r.limit != f"task:{req.task_id}":
        return None
    task = state.tasks.get((req.account_id, req.task_id))
    if task is None or task.stopped_by is not None:
        return None
    return replace(task, stopped_by=r.message)


# --- finish and expiry -------------------------------------------------------------------------


def request_rows(state: State, request_id: str) -> tuple[UsageRow, ...]:
    """The usage rows of a request's holds, in (budget, hold) order."""
    return state.request_usage.get(request_id, ())


def released(state: State, request_id: str, hold_id: str) -> list[UsageRow]:
    """A hold ended without a charge (expired): it no longer counts as held anywhere."""
    return [replace(r, held=0) for r in request_rows(state, request_id) if r.hold_id == hold_id]


def settle(
    state: State, env: Envelope[RequestFinished], settled: Payload
) -> tuple[list[UsageRow], list[Envelope[Payload]]]:
    """The request's rows once finished (held -> spent) and the thresholds the spend crossed.

    ``settled``: the event that charged the served hold (its ``hold_id`` and ``charged_micro``;
    a release charges nothing).
    """
    fin = env.payload
    rows = request_rows(state, fin.request_id)
    if not rows:
        return [], []
    budgets = {b.budget_id: b for b in state.budgets.get(fin.account_id, ())}
    hold_id = str(getattr(settled, "hold_id", ""))
    charged = int(getattr(settled, "charged_micro", 0))
    spends = ld.spend_of_request(rows, budgets, fin, hold_id, charged)
    after_rows = {r.key: r for r in rows}
    for s in spends:
        row = after_rows[(s.budget_id, s.hold_id)]
        after_rows[row.key] = replace(row, held=0, spent=s.amount)
    changed = list(after_rows.values())
    usage = {bid: state.usage.get(bid) for bid in {r.budget_id for r in changed}}
    for row in changed:
        current = usage[row.budget_id]
        if current is not None:
            usage[row.budget_id] = current.put(row)
    crossings: list[Envelope[Payload]] = []
    for s in spends:
        budget = budgets.get(s.budget_id)
        current = usage.get(s.budget_id)
        if budget is not None and current is not None and s.amount > 0:
            crossings += _thresholds(env, budget, current, s)
    return changed, crossings


def _thresholds(
    env: Envelope[RequestFinished], budget: ld.Budget, usage: BudgetUsage, spend: ld.Spend
) -> list[Envelope[Payload]]:
    since = ld.window_start(budget.window, budget.timezone, env.occurred_at)
    if since is not None and spend.at < since:
        return []  # the spend belongs to a window that has already passed
    after = usage.used(since, spent_only=True)
    out: list[Envelope[Payload]] = []
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
        out.append(emit(env, crossed, f"threshold:{budget.budget_id}:{percent}"))
    return out


# --- definitions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetChange:
    """A budget set (``budget``) or removed (None) on an account, at an event time."""

    account_id: str
    budget_id: str
    budget: ld.Budget | None
    at: datetime


@dataclass(frozen=True, slots=True)
class OpenedTask:
    """A task envelope opened (a row of ``ledger.tasks``)."""

    account_id: str
    task_id: str
    project_id: str
    key_id: str
    name: str
    route_types: tuple[str, ...]
    fallback: str
    opened_at: datetime


@dataclass(frozen=True, slots=True)
class ClosedTask:
    """A task closed: further calls are refused."""

    account_id: str
    task_id: str
    at: datetime
    reason: str


def task_budget_id(task_id: str, bucket: str) -> str:
    """A task envelope's budget in one bucket."""
    return f"task:{task_id}:{bucket}"


def named(payloads: Iterable[object]) -> tuple[set[str], set[str]]:
    """The budget ids and task ids definitions among ``payloads`` name (owners to look up)."""
    budget_ids: set[str] = set()
    task_ids: set[str] = set()
    for p in payloads:
        if isinstance(p, (BudgetSet, BudgetRemoved)):
            budget_ids.add(p.budget_id)
        elif isinstance(p, TaskOpened):
            task_ids.add(p.task_id)
            budget_ids.update(task_budget_id(p.task_id, b.bucket) for b in p.budgets)
    return budget_ids, task_ids


DEFINITIONS = (BudgetSet, BudgetRemoved, TaskOpened, TaskClosed)


@dataclass(slots=True)
class Defined:
    """What a definition changed: budgets, tasks opened, tasks closed (the new task rules)."""

    budgets: list[BudgetChange]
    opened: list[OpenedTask]
    closed: list[ClosedTask]
    tasks: list[tuple[str, ld.TaskRule]]


def decide_definition(state: State, env: Envelope[Payload]) -> Defined:
    """Set or remove a budget, open or close a task (a budget id or task id never changes hands).

    A budget id another account owns is left alone, as is a task id another account opened
    (its envelope budgets, being that account's ids, are left alone too); closing a task that
    is not open changes nothing.
    """
    p, at = env.payload, env.occurred_at
    out = Defined([], [], [], [])
    if isinstance(p, BudgetSet):
        out.budgets += _set(state, p.account_id, _budget(p), at)
    elif isinstance(p, BudgetRemoved):
        if state.budget_owners.get(p.budget_id) == p.account_id:
            out.budgets.append(BudgetChange(p.account_id, p.budget_id, None, at))
    elif isinstance(p, TaskOpened):
        _open(state, p, at, out)
    elif isinstance(p, TaskClosed):
        task = state.tasks.get((p.account_id, p.task_id))
        if task is not None and task.status == "open":
            out.tasks.append((p.account_id, replace(task, status="closed")))
            out.closed.append(ClosedTask(p.account_id, p.task_id, at, p.reason))
    return out


def _set(state: State, account_id: str, budget: ld.Budget, at: datetime) -> list[BudgetChange]:
    owner = state.budget_owners.get(budget.budget_id)
    if owner is not None and owner != account_id:
        return []
    return [BudgetChange(account_id, budget.budget_id, budget, at)]


def _budget(p: BudgetSet) -> ld.Budget:
    return ld.Budget(
        budget_id=p.budget_id,
        name=p.name,
        scope=p.scope,
        scope_id=p.scope_id,
        window=p.window,
        timezone=p.timezone,
        unit=p.unit,
        bucket=p.bucket,
        amount=p.amount,
        mode=p.mode,
    )


def _open(state: State, t: TaskOpened, at: datetime, out: Defined) -> None:
    if state.task_owners.get(t.task_id) is None:
        rule = ld.TaskRule(t.task_id, "open", tuple(t.route_types), t.fallback)
        out.tasks.append((t.account_id, rule))
        out.opened.append(
            OpenedTask(
                t.account_id,
                t.task_id,
                t.project_id,
                t.key_id,
                t.name,
                tuple(t.route_types),
                t.fallback,
                at,
            )
        )
    for b in t.budgets:
        envelope = BudgetSet(
            budget_id=task_budget_id(t.task_id, b.bucket),
            account_id=t.account_id,
            name=t.name or t.task_id,
            scope="task",
            scope_id=t.task_id,
            unit=b.unit,
            bucket=b.bucket,
            amount=b.amount_micro,
        )
        out.budgets += _set(state, t.account_id, _budget(envelope), at)
