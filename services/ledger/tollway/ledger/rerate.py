"""Re-rating past charges at a corrected sell price: the pure decision, the same for the dry run.

A charge (a settlement or a late capture) is re-rated by computing its request's tokens at the
corrected price with the one rounding rule (:func:`tollway.events.pricing.cost_micro`, once per
request); the re-rating entry moves the difference between that and what the request costs the
tenant now (its original charge plus earlier re-ratings), either way, between the tenant's
bucket and the channel's revenue. The hold's cap is not applied: the hold protected the tenant
before the call, when the cost was an estimate; a correction after the fact charges the tokens
at the corrected price, and the negative-balance rule below is what protects the tenant then.
A charge that was refunded (even in part) or whose receipt has no usage is left alone and
counted.

An account whose available balance (its bucket, holds excluded) the correction would take below
zero is not re-rated unless the operator allowed it: :func:`refuse` says so with a stable code.
The edge's dry run and the ledger's apply both call :func:`plan_account` on the same rows, so
the dry run's figures are what the apply books. No IO here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tollway.events.pricing import cost_micro
from tollway.ledger import domain

if TYPE_CHECKING:
    from datetime import datetime

    from tollway.events.ledger import Posting
    from tollway.events.pricing import Price, Usage

# Charges a re-rating re-prices (journal types): settlements and late captures.
CHARGE_TYPES = ("ledger.hold_settled", "ledger.late_captured")
# Stable codes: of a refused account, and of a charge left alone.
BALANCE_BELOW_OWED = "balance_below_owed"
NOT_SUPPORTED = "not_supported"
KEY_REUSED = "idempotency_key_reused"
REFUNDED = "refunded"
NO_USAGE = "no_usage"


def correction_key(correction_id: str) -> str:
    """The account's idempotency key of a re-rating (apart from reversal and adjustment keys)."""
    return f"rerate:{correction_id}"


@dataclass(frozen=True, slots=True)
class Selection:
    """The charges a re-rating matches: the channel's, in the bucket, settled in [start, end)."""

    channel_id: str
    bucket: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Charge:
    """One charge of the account matched by a re-rating, as the ledger's projections hold it."""

    request_id: str
    original_event_id: str
    settled_at: datetime
    unit: str
    original: int  # what the original entry charged
    rerated_so_far: int  # the sum of earlier re-ratings of it (signed)
    usage: Usage | None
    refunded: int = 0

    @property
    def charged(self) -> int:
        """What the request costs the tenant now, before this re-rating."""
        return self.original + self.rerated_so_far


def rerated_amount(usage: Usage, price: Price) -> int:
    """The request's tokens at ``price``, rounded up once (per request, never per class)."""
    return cost_micro(usage, price)


@dataclass(frozen=True, slots=True)
class Line:
    """A charge and what it is re-rated to."""

    charge: Charge
    rerated: int

    @property
    def difference(self) -> int:
        """Re-rated minus charged: positive, the tenant pays more; negative, gets money back."""
        return self.rerated - self.charge.charged


@dataclass(frozen=True, slots=True)
class Skip:
    """A matched charge left alone, and why (a stable code)."""

    request_id: str
    code: str


@dataclass(frozen=True, slots=True)
class AccountPlan:
    """What re-rating one account's charges would book, and the balance it would leave."""

    account_id: str
    bucket: str
    unit: str | None
    lines: tuple[Line, ...]
    skipped: tuple[Skip, ...]
    available: int

    @property
    def changed(self) -> tuple[Line, ...]:
        """Lines that book an entry (a zero difference books nothing)."""
        return tuple(line for line in self.lines if line.difference != 0)

    @property
    def charged(self) -> int:
        """What the re-rated requests cost the tenant before."""
        return sum(line.charge.charged for line in self.lines)

    @property
    def rerated(self) -> int:
        """What they cost after."""
        return sum(line.rerated for line in self.lines)

    @property
    def difference(self) -> int:
        """The net movement: positive debits the tenant's bucket."""
        return self.rerated - self.charged

    @property
    def balance_after(self) -> int:
        """The bucket's available balance once the entries are booked."""
        return self.available - self.difference

    @property
    def overdraws(self) -> bool:
        """The correction takes the available balance below zero (or further below)."""
        return self.difference > 0 and self.balance_after < 0


def plan_account(
    account_id: str, bucket: str, charges: list[Charge], price: Price, available: int
) -> AccountPlan:
    """Re-rate every matched charge of one account at ``price`` (in the order given)."""
    lines: list[Line] = []
    skipped: list[Skip] = []
    for charge in charges:
        if charge.refunded:
            skipped.append(Skip(charge.request_id, REFUNDED))
        elif charge.usage is None:
            skipped.append(Skip(charge.request_id, NO_USAGE))
        else:
            lines.append(Line(charge, rerated_amount(charge.usage, price)))
    unit = charges[0].unit if charges else None
    return AccountPlan(account_id, bucket, unit, tuple(lines), tuple(skipped), available)


def refuse(plan: AccountPlan, *, allow_negative: bool) -> domain.Refusal | None:
    """None when the plan may be booked; else why not (``balance_below_owed``)."""
    if plan.overdraws and not allow_negative:
        return domain.Refusal(
            BALANCE_BELOW_OWED,
            "the re-rating would take the bucket's available balance to "
            f"{plan.balance_after} micro-{plan.unit} (below zero); apply it with allow_negative"
            " for this account to book it anyway",
        )
    return None


def postings(
    account_id: str, bucket: str, unit: str, channel_id: str, difference: int
) -> list[Posting]:
    """The entry's postings: ``difference`` from the bucket to the channel's revenue (signed)."""
    tenant = domain.bucket_account(account_id, bucket)
    revenue = domain.revenue_account(channel_id)
    if difference >= 0:
        return domain.transfer(tenant, revenue, unit, difference)
    return domain.transfer(revenue, tenant, unit, -difference)
