"""Upstream cost: what each attempt cost the operator, at its channel's cost price (pure).

An attempt whose candidate carries a cost price (:class:`tollway.events.pricing.CostPrice`) is
booked as ``ledger.upstream_cost_booked``, served or failed: its reported tokens at the cost
price, rounded up once, plus the channel's ``per_request`` cost when the call reached the
upstream (every outcome but ``connect_error``, which never left the router). The postings move
the amount, in the cost currency, from ``system/upstream_payable/<channel>`` (what the operator
owes the upstream) to ``system/upstream_expense/<channel>`` (the operator's expense); no tenant
account moves, and the tenant's receipt never shows it. The event's id derives from the
attempt's event id, so a redelivered attempt books nothing twice, live or in a replay.

The sell-price "upstream loss" (:mod:`tollway.ledger.losses`) stays the measure only for
channels without a cost price: once a channel has one, the real expense of a failed attempt is
its cost, booked here, and no loss at the sell price is booked for the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from tollway.events.ledger import UpstreamCostBooked
from tollway.events.pricing import upstream_cost_micro
from tollway.ledger import domain
from tollway.ledger.journal import emit

if TYPE_CHECKING:
    from tollway.events.envelope import Envelope, Payload
    from tollway.events.gateway import AttemptFinished

EXPENSE = "system/upstream_expense/"
PAYABLE = "system/upstream_payable/"
SALT = "upstream_cost"


def expense_account(channel_id: str) -> str:
    """The operator's expense for calls to ``channel_id``."""
    return f"{EXPENSE}{channel_id}"


def payable_account(channel_id: str) -> str:
    """What the operator owes the upstream behind ``channel_id``."""
    return f"{PAYABLE}{channel_id}"


def is_served(attempt: AttemptFinished) -> bool:
    """The attempt answered the client (its tokens are the tenant's charge)."""
    return attempt.outcome == "ok" or attempt.delivered


def cost_of(attempt: AttemptFinished) -> int:
    """The attempt's upstream cost in micro-units of its cost currency; 0 without a cost price."""
    cost = attempt.candidate.cost
    if cost is None or attempt.outcome == "connect_error":
        return 0
    return upstream_cost_micro(attempt.usage, cost)


def decide(env: Envelope[AttemptFinished]) -> Envelope[Payload] | None:
    """The attempt's cost booking, or None when it has no cost price or costs nothing."""
    attempt = env.payload
    amount = cost_of(attempt)
    cost = attempt.candidate.cost
    if amount == 0 or cost is None:
        return None
    channel = attempt.candidate.channel_id
    booked = UpstreamCostBooked(
        account_id=attempt.account_id,
        cause_id=env.id,
        request_id=attempt.request_id,
        attempt=attempt.attempt,
        channel_id=channel,
        brand=attempt.candidate.brand,
        route_type=attempt.candidate.route_type,
        served=is_served(attempt),
        currency=cost.currency,
        amount_micro=amount,
        catalog_model=attempt.catalog_model,
        key_id=attempt.key_id,
        project_id=attempt.project_id,
        postings=domain.transfer(
            payable_account(channel), expense_account(channel), cost.currency, amount
        ),
    )
    return emit(env, booked, SALT)


@dataclass(frozen=True, slots=True)
class CostRow:
    """One row of ``ledger.upstream_costs``: a booked attempt cost and what reports group by."""

    event_id: str
    cause_id: str
    request_id: str
    attempt: int
    occurred_at: datetime
    day: date
    channel_id: str
    brand: str
    route_type: str
    catalog_model: str | None
    account_id: str
    key_id: str | None
    project_id: str | None
    served: bool
    currency: str
    cost_micro: int


def row_of(env: Envelope[Payload]) -> CostRow:
    """The projection row of a booked cost; its day is the UTC day of the event time."""
    b = env.payload
    if not isinstance(b, UpstreamCostBooked):
        raise TypeError(f"not a booked upstream cost: {env.type}")
    return CostRow(
        event_id=env.id,
        cause_id=b.cause_id,
        request_id=b.request_id,
        attempt=b.attempt,
        occurred_at=env.occurred_at,
        day=env.occurred_at.astimezone(UTC).date(),
        channel_id=b.channel_id,
        brand=b.brand,
        route_type=b.route_type,
        catalog_model=b.catalog_model,
        account_id=b.account_id,
        key_id=b.key_id,
        project_id=b.project_id,
        served=b.served,
        currency=b.currency,
        cost_micro=b.amount_micro,
    )
