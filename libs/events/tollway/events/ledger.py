"""The ledger's journal (ledger.events, key: account): every money movement as postings.

Each money event carries its postings so the journal is self-describing: postings of one event
sum to zero per unit (double entry), and a reader can rebuild balances from this topic alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tollway.events.envelope import Payload, register
from tollway.events.pricing import CostPrice, Price


class Posting(BaseModel):
    """Signed amount on one ledger account, in micro-units of ``unit``."""

    model_config = ConfigDict(frozen=True)

    account: str
    unit: str
    amount: int


class MoneyEvent(Payload):
    """Common fields of journal events."""

    account_id: str
    cause_id: str
    postings: tuple[Posting, ...] = ()


@register
class ToppedUp(MoneyEvent):
    """A bucket was credited from a top-up source."""

    TYPE = "ledger.topped_up"

    bucket: str
    unit: str
    amount_micro: int
    idempotency_key: str


@register
class TopUpRefused(MoneyEvent):
    """A top-up was refused: journaled, so a replay refuses it too and nothing is dead-lettered.

    ``code`` is stable for programs: ``idempotency_key_reused`` (same key, another payload),
    ``unit_mismatch``, ``amount_out_of_range``, ``balance_out_of_range``,
    ``source_out_of_range``, ``invalid_bucket`` (see ``tollway.events.pricing`` for the ranges);
    ``reason`` says it for people. ``bucket``, ``unit`` and ``amount_micro`` echo the request.
    """

    TYPE = "ledger.topup_refused"

    idempotency_key: str
    reason: str
    code: str = ""
    bucket: str | None = None
    unit: str | None = None
    amount_micro: int | None = None


@register
class HoldPlaced(MoneyEvent):
    """Money reserved for a request before any upstream call."""

    TYPE = "ledger.hold_placed"

    hold_id: str
    request_id: str
    bucket: str
    unit: str
    amount_micro: int


@register
class HoldRejected(MoneyEvent):
    """A hold was refused; ``limit`` names what stopped it (``bucket:credit``, …)."""

    TYPE = "ledger.hold_rejected"

    request_id: str
    bucket: str
    requested_micro: int
    available_micro: int
    limit: str


@register
class HoldSettled(MoneyEvent):
    """A hold was captured for ``charged_micro``; the remainder went back to the bucket."""

    TYPE = "ledger.hold_settled"

    hold_id: str
    request_id: str
    bucket: str
    unit: str
    held_micro: int
    charged_micro: int
    released_micro: int
    upstream_loss_micro: int = 0


@register
class HoldReleased(MoneyEvent):
    """A hold ended with no charge (nothing was served)."""

    TYPE = "ledger.hold_released"

    hold_id: str
    request_id: str
    bucket: str
    unit: str
    released_micro: int


@register
class HoldExpired(MoneyEvent):
    """An open hold passed its deadline (plus the grace) by the ledger's clock: released."""

    TYPE = "ledger.hold_expired"

    hold_id: str
    request_id: str
    bucket: str
    unit: str
    released_micro: int
    deadline_at: datetime


@register
class HoldExtended(MoneyEvent):
    """An open hold's deadline moved later (a long request still running); no money moves."""

    TYPE = "ledger.hold_extended"

    hold_id: str
    request_id: str
    previous_deadline_at: datetime
    deadline_at: datetime


@register
class LateCaptured(MoneyEvent):
    """A request was served after its hold expired: charged straight from the bucket.

    Never served unbilled (ARCHITECTURE invariant 8): the charge is capped at the expired hold,
    like a settlement, and may take the bucket below zero.
    """

    TYPE = "ledger.late_captured"

    hold_id: str
    request_id: str
    bucket: str
    unit: str
    charged_micro: int


@register
class ClockTicked(Payload):
    """The ledger's clock, carried in the log (gw.usage, one per partition, explicit partition).

    Consuming a tick expires that partition's open holds whose deadline is before
    ``expire_before`` and whose request the ledger had already applied when the tick was made
    (its gw.requests record is before ``requests_before``). Because time and that position
    arrive in the event, a replay expires the same holds whatever the interleaving of the two
    topics it reconstructs: a request applied after the tick live is never expired by it.
    ``requests_before`` None (ticks from before it existed): every open hold.
    """

    TYPE = "ledger.clock_ticked"

    partition: int
    partitions: int
    expire_before: datetime
    requests_before: int | None = None


@register
class Reversed(MoneyEvent):
    """A reversing entry for (part of) ``original_event_id``; never more than the original."""

    TYPE = "ledger.reversed"

    original_event_id: str
    request_id: str | None = None
    unit: str
    amount_micro: int
    reason: str
    idempotency_key: str


@register
class Adjusted(MoneyEvent):
    """An operator's adjustment of a bucket (positive credits it), against system/adjustments."""

    TYPE = "ledger.adjusted"

    bucket: str
    unit: str
    amount_micro: int
    reason: str
    idempotency_key: str


@register
class CorrectionRefused(MoneyEvent):
    """A reversal, adjustment or re-rating was refused; ``reason`` says why, ``code`` is stable.

    For a re-rating (``idempotency_key`` is its correction id): ``balance_below_owed``,
    ``idempotency_key_reused``, ``not_supported`` (a ``rerate.requested`` of the cost side; the
    cost side is ``rerate.cost_requested``).
    """

    TYPE = "ledger.correction_refused"

    idempotency_key: str
    original_event_id: str | None = None
    reason: str
    code: str = ""


@register
class UpstreamLossRecorded(MoneyEvent):
    """Tokens a failed attempt consumed: the operator's cost, never charged to the tenant."""

    TYPE = "ledger.upstream_loss_recorded"

    request_id: str
    attempt: int
    channel_id: str
    unit: str
    amount_micro: int


@register
class UpstreamCostBooked(MoneyEvent):
    """What one upstream attempt cost the operator at its channel's cost price, on the books.

    Booked for every attempt whose candidate carries a cost price, served or failed, once per
    attempt (the id derives from the attempt's event id). The postings move ``amount_micro`` of
    ``currency`` from ``system/upstream_payable/<channel>`` (owed to the upstream) to
    ``system/upstream_expense/<channel>`` (the operator's expense); no tenant account moves.
    The other fields are what margin reports group by, copied from the attempt so a replay
    rebuilds the same rows from the log alone. ``account_id`` is the tenant's (the partition).
    """

    TYPE = "ledger.upstream_cost_booked"

    request_id: str
    attempt: int
    channel_id: str
    brand: str
    route_type: str
    served: bool
    currency: str
    amount_micro: int
    catalog_model: str | None = None
    key_id: str | None = None
    project_id: str | None = None


@register
class UpstreamCostRerated(MoneyEvent):
    """A compensating entry next to one booked attempt cost: the cost re-rated at a corrected price.

    The original ``ledger.upstream_cost_booked`` (``original_event_id``, caused by the attempt
    ``attempt_event_id``) stays; this one moves ``amount_micro`` of ``currency`` (re-rated minus
    booked before; positive: the attempt cost the operator more) from
    ``system/upstream_payable/<channel>`` to ``system/upstream_expense/<channel>``, or back when
    negative. ``rerated_micro`` is the attempt's tokens at ``cost``, rounded up once, plus its
    ``per_request``; ``booked_before_micro`` includes earlier cost re-ratings of the same
    booking. No tenant account moves; ``account_id`` is the tenant's (the partition).
    """

    TYPE = "ledger.upstream_cost_rerated"

    correction_id: str
    original_event_id: str
    attempt_event_id: str
    request_id: str
    attempt: int
    channel_id: str
    currency: str
    cost: CostPrice
    booked_before_micro: int
    rerated_micro: int
    amount_micro: int
    reason: str


@register
class UpstreamCostRerateApplied(MoneyEvent):
    """One account's share of a cost re-rating is booked: what it matched, changed and moved.

    No money moves here (each booking's entry is an ``UpstreamCostRerated``); journaled even
    when nothing matched, so the command holds its place among the account's cost bookings and
    a replay decides at the same place. ``skipped`` counts bookings left alone (booked in
    another currency, or no tokens on the receipt).
    """

    TYPE = "ledger.upstream_cost_rerate_applied"

    correction_id: str
    channel_id: str
    currency: str
    period_from: datetime
    period_to: datetime
    cost: CostPrice
    attempts: int
    changed: int
    skipped: int = 0
    booked_micro: int
    rerated_micro: int
    difference_micro: int
    actor: str = ""
    reason: str


@register
class UpstreamCostRerateRefused(MoneyEvent):
    """One account's share of a cost re-rating was refused; ``code`` is stable.

    ``idempotency_key_reused``: the correction id was applied with another payload.
    """

    TYPE = "ledger.upstream_cost_rerate_refused"

    correction_id: str
    reason: str
    code: str


# Journal events a tenant never sees, though they are journaled under the tenant's account (its
# partition): what the operator's upstreams cost, its re-ratings, and what the upstream said an
# attempt cost (``tollway.events.recon.UpstreamCostReported``, which imports this module).
OPERATOR_ONLY = frozenset(
    {
        UpstreamCostBooked.TYPE,
        UpstreamCostRerated.TYPE,
        UpstreamCostRerateApplied.TYPE,
        UpstreamCostRerateRefused.TYPE,
        "ledger.upstream_cost_reported",
    }
)


@register
class PriceTableChanged(MoneyEvent):
    """A channel's prices changed (or were first set): the journal's record of the price table.

    No money moves. ``account_id`` is ``system:prices``; ``version`` counts the channel's
    journaled price changes from 1, in the order of that one partition, so a replay numbers them
    the same. ``previous`` and ``prices`` are micro-units per 1M tokens; ``actor`` and
    ``audit_id`` name who changed it and the route tree's audit row.
    """

    TYPE = "ledger.price_table_changed"

    channel_id: str
    version: int
    bucket: str
    previous: Price | None = None
    prices: Price
    actor: str
    audit_id: int
    previous_cost: CostPrice | None = None
    cost: CostPrice | None = None


@register
class Rerated(MoneyEvent):
    """A re-rating entry next to one original charge: the charge re-priced at a corrected price.

    The original entry (``original_event_id``, a settlement or late capture) stays; this one
    moves ``amount_micro`` (re-rated minus charged before; positive: the tenant pays more)
    from the tenant's bucket to the channel's revenue, or back when negative. ``rerated_micro``
    is the request's tokens at ``price``, rounded once (the hold's cap is not applied).
    ``charged_before_micro`` includes earlier re-ratings of the same charge.
    """

    TYPE = "ledger.rerated"

    correction_id: str
    side: Literal["sell", "cost"] = "sell"
    original_event_id: str
    request_id: str
    channel_id: str
    bucket: str
    unit: str
    price: Price
    charged_before_micro: int
    rerated_micro: int
    amount_micro: int
    reason: str


@register
class RerateApplied(MoneyEvent):
    """One account's share of a re-rating is booked: what it matched, changed and moved.

    No money moves here (each receipt's entry is a ``Rerated``); journaled even when nothing
    matched, so the command holds its place in the account's journal and a replay decides at
    the same place. ``difference_micro`` is the sum of the entries (positive: the tenant paid
    more); ``skipped`` counts charges left alone (already refunded, no usage on the receipt).
    """

    TYPE = "ledger.rerate_applied"

    correction_id: str
    side: Literal["sell", "cost"] = "sell"
    channel_id: str
    bucket: str
    unit: str | None = None
    period_from: datetime
    period_to: datetime
    price: Price
    requests: int
    changed: int
    skipped: int = 0
    charged_micro: int
    rerated_micro: int
    difference_micro: int
    balance_after_micro: int
    allow_negative: bool = False
    actor: str = ""
    reason: str
