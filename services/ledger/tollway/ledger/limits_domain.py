"""Pure decisions of hard limits: which buckets a request may hold, and whether each hold fits.

A request's plan is cut down to what its task allows (route types, fallback rule), grouped into
one hold per bucket, and each hold is placed only when the bucket's balance and every hard budget
that applies still cover its worst case. Usage comes in as numbers folded from events and ``now``
is the request's event time, so the same log always yields the same decisions.

Budget usage is ``held + spent`` inside the budget's window: a money budget counts micro-units
of its bucket's unit, a token budget counts input estimate + max output while held and the
served tokens once settled (once per request, whichever bucket served).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from tollway.events.limits import TOKENS
from tollway.events.pricing import worst_case_micro

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from tollway.events.gateway import Candidate, RequestFinished, RequestReceived
    from tollway.ledger.fold_limits import UsageRow

THRESHOLDS = (50, 80, 100)
ROLLING = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}


@dataclass(frozen=True, slots=True)
class Budget:
    """A budget definition as the ledger folds it (a task envelope is a ``task`` budget)."""

    budget_id: str
    name: str
    scope: str
    scope_id: str
    window: str
    timezone: str
    unit: str
    bucket: str | None
    amount: int
    mode: str

    @property
    def label(self) -> str:
        """How a refusal names this limit (``task:<id>``, ``budget:<name>``)."""
        return f"task:{self.scope_id}" if self.scope == "task" else f"budget:{self.name}"

    @property
    def tokens(self) -> bool:
        """True when the budget counts tokens rather than money."""
        return self.unit == TOKENS

    def covers_bucket(self, bucket: str, unit: str) -> bool:
        """A money budget counts only its bucket's unit (and its bucket, when set)."""
        return self.tokens or (unit == self.unit and self.bucket in {None, bucket})

    def covers_request(self, req: RequestReceived) -> bool:
        """Scopes fixed by the request itself (key, project, task, model, account)."""
        wanted = {
            "account": req.account_id,
            "key": req.key_id,
            "project": req.project_id,
            "task": req.task_id,
            "model": req.catalog_model,
        }
        return self.scope not in wanted or wanted[self.scope] == self.scope_id

    def covers_candidate(self, candidate: Candidate) -> bool:
        """Scopes fixed by the route that serves (route type, channel)."""
        if self.scope == "route_type":
            return candidate.route_type == self.scope_id
        if self.scope == "channel":
            return candidate.channel_id == self.scope_id
        return True


def window_start(window: str, timezone: str, now: datetime) -> datetime | None:
    """The earliest event time a window counts at ``now``; None for a lifetime budget.

    ``minute``/``hour`` roll; ``day``/``month`` are calendar windows in the budget's time zone.
    """
    if window in ROLLING:
        return now - ROLLING[window]
    if window == "lifetime":
        return None
    local = now.astimezone(ZoneInfo(timezone))
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "month":
        start = start.replace(day=1)
    return start


@dataclass(frozen=True, slots=True)
class TaskRule:
    """What a task allows: its status, route types and fallback rule."""

    task_id: str
    status: str
    route_types: tuple[str, ...]
    fallback: str
    stopped_by: str | None = None


def allowed_plan(plan: Sequence[Candidate], task: TaskRule | None) -> list[Candidate]:
    """The candidates a request may use: its task's route types, then its fallback rule.

    The primary is the first candidate (lowest tier) of a route type the task allows; a
    fallback is any other candidate: another channel, tier or upstream model. A retry of the
    primary is not a fallback.

    * ``any``: every candidate of the task's route types, whatever its bucket;
    * ``same_route_type``: only candidates of the primary's route type (other channels and
      tiers of it; never from direct to pool or back);
    * ``none``: the primary alone.
    """
    if task is None:
        return list(plan)
    allowed = [c for c in plan if c.route_type in task.route_types]
    if not allowed or task.fallback == "any":
        return allowed
    primary = allowed[0]
    if task.fallback == "same_route_type":
        return [c for c in allowed if c.route_type == primary.route_type]
    return [primary]


@dataclass(frozen=True, slots=True)
class BucketGroup:
    """The candidates one hold covers, and the worst case it must reserve."""

    bucket: str
    candidates: tuple[Candidate, ...]
    worst_micro: int
    tokens: int


def bucket_groups(plan: Sequence[Candidate], est_in: int, max_out: int) -> list[BucketGroup]:
    """One group per bucket, in order of first appearance (the primary's bucket first)."""
    order: dict[str, list[Candidate]] = {}
    for c in plan:
        order.setdefault(c.bucket, []).append(c)
    return [
        BucketGroup(
            bucket=bucket,
            candidates=tuple(cands),
            worst_micro=max(worst_case_micro(est_in, max_out, c.price) for c in cands),
            tokens=est_in + max_out,
        )
        for bucket, cands in order.items()
    ]


@dataclass(frozen=True, slots=True)
class Refusal:
    """The limit that stopped a hold, with a message a client can act on."""

    limit: str
    code: str
    message: str
    requested: int
    available: int


@dataclass(slots=True)
class LimitState:
    """The numbers one authorization decides over, updated as its holds are placed.

    ``used`` is each hard budget's held + spent inside its window before this request.
    ``tokens_counted``: token budgets this request already reserved for (once per request).
    """

    budgets: Sequence[Budget]
    used: dict[str, int]
    tokens_counted: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Charge:
    """What a placed hold adds to one budget."""

    budget: Budget
    amount: int
    channels: tuple[str, ...]


def matching(
    budgets: Iterable[Budget], req: RequestReceived, group: BucketGroup, unit: str
) -> list[tuple[Budget, tuple[str, ...]]]:
    """Budgets a group's hold counts against, with the channels of the group each covers."""
    out = []
    for b in budgets:
        if not (b.covers_request(req) and b.covers_bucket(group.bucket, unit)):
            continue
        channels = tuple(c.channel_id for c in group.candidates if b.covers_candidate(c))
        if channels:
            out.append((b, channels))
    return out


def charges_of(
    state: LimitState, req: RequestReceived, group: BucketGroup, unit: str
) -> list[Charge]:
    """What a hold for ``group`` would add to each budget it counts against."""
    charges = []
    for budget, channels in matching(state.budgets, req, group, unit):
        if budget.tokens:
            amount = 0 if budget.budget_id in state.tokens_counted else group.tokens
        else:
            amount = group.worst_micro
        charges.append(Charge(budget, amount, channels))
    return charges


def decide_group(
    state: LimitState, req: RequestReceived, group: BucketGroup, unit: str, available: int
) -> tuple[list[Charge], Refusal | None]:
    """Place a hold for ``group`` only if the bucket and every hard budget still cover it."""
    if group.worst_micro > available:
        message = (
            f"Insufficient balance in the {group.bucket} bucket: this request needs up to"
            f" {group.worst_micro} micro-{unit or 'units'} and {available} are available."
        )
        limit = f"bucket:{group.bucket}"
        return [], Refusal(limit, "insufficient_balance", message, group.worst_micro, available)
    outside = _outside_task(state, req, group, unit)
    if outside is not None:
        return [], outside
    charges = charges_of(state, req, group, unit)
    for charge in charges:
        refusal = _over(state, charge, unit)
        if refusal is not None:
            return [], refusal
    return charges, None


def _outside_task(
    state: LimitState, req: RequestReceived, group: BucketGroup, unit: str
) -> Refusal | None:
    """A task spends only from the buckets its envelope names."""
    if req.task_id is None:
        return None
    for b in state.budgets:
        if b.scope == "task" and b.scope_id == req.task_id and b.covers_bucket(group.bucket, unit):
            return None
    message = f"Task '{req.task_id}' has no budget in the {group.bucket} bucket."
    return Refusal(f"task:{req.task_id}", "task_bucket_not_allowed", message, group.worst_micro, 0)


def _over(state: LimitState, charge: Charge, unit: str) -> Refusal | None:
    budget = charge.budget
    if budget.mode != "hard" or charge.amount == 0:
        return None
    used = state.used.get(budget.budget_id, 0)
    if used + charge.amount <= budget.amount:
        return None
    what = "tokens" if budget.tokens else f"micro-{unit}"
    left = max(budget.amount - used, 0)
    if budget.scope == "task" and left == 0:
        message = (
            f"Task '{budget.scope_id}' has exhausted its {budget.bucket or unit} envelope:"
            f" 0 of {budget.amount} {what} remain."
        )
        code = "task_budget_exhausted"
    elif budget.scope == "task":
        message = (
            f"This request's worst case does not fit in task '{budget.scope_id}''s"
            f" {budget.bucket or unit} envelope: it needs up to {charge.amount} {what}"
            f" (its input estimate and max_tokens at its route's highest price) and"
            f" {left} of {budget.amount} remain. Lower max_tokens or shorten the input."
        )
        code = "task_budget_insufficient"
    else:
        message = (
            f"Budget '{budget.name}' ({budget.scope} {budget.scope_id}, {budget.window}) allows"
            f" {budget.amount} {what}: {left} remain and this request needs up to {charge.amount}."
        )
        code = "budget_exceeded"
    return Refusal(budget.label, code, message, charge.amount, left)


def apply_charges(state: LimitState, charges: Iterable[Charge]) -> None:
    """Count a placed hold, so the request's next hold sees it."""
    for charge in charges:
        bid = charge.budget.budget_id
        state.used[bid] = state.used.get(bid, 0) + charge.amount
        if charge.budget.tokens:
            state.tokens_counted.add(bid)


def crossed(amount: int, before: int, after: int) -> list[int]:
    """The thresholds (percent of ``amount``) that spend crossed going from before to after."""
    return [p for p in THRESHOLDS if before * 100 < p * amount <= after * 100]


@dataclass(frozen=True, slots=True)
class Spend:
    """What one budget row counts once its request finished (``held`` drops to 0)."""

    budget_id: str
    hold_id: str
    at: datetime
    amount: int


def spend_of_request(
    rows: Iterable[UsageRow],
    budgets: dict[str, Budget],
    fin: RequestFinished,
    settled_hold: str,
    charged: int,
) -> list[Spend]:
    """Each budget row of a finished request: its spend, 0 unless its candidates served.

    Money counts the charge on the settled hold's row; tokens count the served tokens once per
    budget, on the row whose candidates include the serving channel.
    """
    out = []
    tokens_done: set[str] = set()
    for row in rows:
        budget = budgets.get(row.budget_id)
        amount = 0
        if fin.served and budget is not None and fin.served_channel_id in row.channels:
            if budget.tokens and budget.budget_id not in tokens_done:
                amount = fin.usage.total_tokens
                tokens_done.add(budget.budget_id)
            elif not budget.tokens and row.hold_id == settled_hold:
                amount = charged
        out.append(Spend(row.budget_id, row.hold_id, row.at, amount))
    return out
