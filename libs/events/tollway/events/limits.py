"""Spending limits and task envelopes, and what the limits service tells ops.

Budget and task definitions travel on gw.requests keyed by billing account, so the ledger (the
one writer per account) applies them in order with the holds they constrain: a hard budget is
checked in the same transaction that places a hold, and replay reproduces every decision.
Breakers (compacted ``limits.breakers``) and alerts (``limits.alerts``) are the limits
service's output.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from tollway.events.envelope import Payload, register
from tollway.events.gateway import RouteType
from tollway.events.pricing import MAX_AMOUNT_MICRO

BudgetScope = Literal["account", "key", "project", "route_type", "channel", "model", "task"]
BudgetWindow = Literal["minute", "hour", "day", "month", "lifetime"]
BudgetMode = Literal["hard", "soft"]
TOKENS = "tokens"
MAX_TOKENS_PER_MINUTE = 10**12


@register
class BudgetSet(Payload):
    """Create or replace a budget (gw.requests, key: account).

    ``scope_id`` is the key id, project id, route type (``direct``/``pool``), channel id, catalog
    model or task id the budget covers. ``minute``/``hour`` windows are rolling; ``day``/``month``
    are calendar windows in ``timezone``. ``unit`` is a bucket's unit (amounts in micro-units of
    that unit, counting only spend from ``bucket``) or ``tokens`` (input + output tokens).
    """

    TYPE = "budget.set"

    budget_id: str
    account_id: str
    name: str
    scope: BudgetScope
    scope_id: str
    window: BudgetWindow = "lifetime"
    timezone: str = "UTC"
    unit: str
    bucket: str | None = None
    amount: int = Field(gt=0)
    mode: BudgetMode = "hard"


@register
class BudgetRemoved(Payload):
    """Delete a budget (gw.requests, key: account)."""

    TYPE = "budget.removed"

    budget_id: str
    account_id: str


class TaskBudget(BaseModel):
    """A task's envelope in one bucket: at most ``amount_micro`` spent from ``bucket``."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    unit: str
    amount_micro: int = Field(gt=0)


def _all_route_types() -> list[RouteType]:
    return ["direct", "pool"]


FallbackRule = Literal["any", "same_route_type", "none"]


@register
class TaskOpened(Payload):
    """A task envelope was opened (gw.requests, key: account).

    Calls carrying ``X-Tollway-Task: <task_id>`` are held against the task's budgets, may only
    use ``route_types``, and fall back only as ``fallback`` allows (``same_route_type``: never
    from pool to direct or back; ``none``: only the primary's route type and bucket).
    """

    TYPE = "task.opened"

    task_id: str
    account_id: str
    project_id: str
    key_id: str
    name: str = ""
    budgets: list[TaskBudget] = Field(min_length=1)
    route_types: list[RouteType] = Field(default_factory=_all_route_types)
    fallback: FallbackRule = "any"


@register
class TaskClosed(Payload):
    """A task was closed: further calls are refused and what it still holds is released."""

    TYPE = "task.closed"

    task_id: str
    account_id: str
    reason: str = "closed"


@register
class BudgetThresholdCrossed(Payload):
    """Spend under a budget crossed 50, 80 or 100 % (ledger.events, key: account).

    Emitted by the ledger, deterministically, when a settlement crosses the line; the limits
    service turns it into an alert.
    """

    TYPE = "ledger.budget_threshold_crossed"

    account_id: str
    budget_id: str
    name: str
    scope: BudgetScope
    scope_id: str
    mode: BudgetMode
    unit: str
    amount: int
    spent: int
    percent: int
    cause_id: str


# --- velocity breakers (limits.breakers, compacted) and alerts (limits.alerts) ---------------

BreakerScope = Literal["account", "key", "project", "task"]
BREAKER_SCOPES: tuple[BreakerScope, ...] = ("account", "key", "project", "task")


def breaker_key(scope: str, scope_id: str) -> str:
    """The partition and compaction key of a breaker: its latest record is its state."""
    return f"{scope}:{scope_id}"


@register
class VelocityLimitSet(Payload):
    """An operator set velocity thresholds for one scope (gw.requests, key: account).

    Travels with the account's requests so the limits service applies it in log order and a
    replay reproduces every trip. ``None`` keeps the service default; ``relative_factor`` trips
    when the last ten minutes burn that many times the learned hourly baseline's share.
    """

    TYPE = "velocity_limit.set"

    account_id: str
    scope: BreakerScope
    scope_id: str
    # Bounded so every value fits the limits service's bigint columns and the event encoder.
    tokens_per_minute: int | None = Field(default=None, gt=0, le=MAX_TOKENS_PER_MINUTE)
    spend_micro_per_minute: dict[str, Annotated[int, Field(ge=0, le=MAX_AMOUNT_MICRO)]] = Field(
        default_factory=dict
    )
    relative_factor: int | None = Field(default=None, gt=1, le=1_000)
    cooldown_seconds: int | None = Field(default=None, gt=0, le=30 * 86_400)


@register
class BreakerTripped(Payload):
    """A scope burned faster than allowed: edges refuse its calls until ``until``.

    Published on ``limits.breakers`` under ``breaker_key(scope, scope_id)``; ``crossed_at`` is
    the event time of the usage that crossed the threshold.
    """

    TYPE = "breaker.tripped"

    account_id: str
    scope: BreakerScope
    scope_id: str
    name: str
    reason: str
    metric: str
    value: int
    threshold: int
    window_seconds: int
    crossed_at: datetime
    until: datetime
    cooldown_seconds: int
    example_request_ids: list[str] = Field(default_factory=list)


BreakerResetReason = Literal["cooldown", "operator"]


@register
class BreakerReset(Payload):
    """A breaker closed after its cool-down or by an operator (a real record, not a tombstone)."""

    TYPE = "breaker.reset"

    account_id: str
    scope: BreakerScope
    scope_id: str
    name: str = ""
    reason: BreakerResetReason
    trip_id: str | None = None
    by: str = ""


AlertSeverity = Literal["info", "warning", "critical"]


@register
class Alert(Payload):
    """Something ops should look at (limits.alerts, key: ``breaker_key(scope, scope_id)``).

    ``scope`` is what the metric is about (``channel``, ``route``, ``key``, ``account``,
    ``consumer``, ``budget``, ...); ``value`` and ``threshold`` are in the metric's own unit
    (a rate in 0..1, tokens, micro-units) over ``window_seconds`` ending at ``window_end``.
    """

    TYPE = "limits.alert"

    scope: str
    scope_id: str
    account_id: str | None = None
    metric: str
    value: float
    threshold: float
    window_seconds: int
    window_end: datetime
    severity: AlertSeverity = "warning"
    message: str
    example_request_ids: list[str] = Field(default_factory=list)
