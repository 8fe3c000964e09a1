"""Re-rating booked upstream costs at a corrected cost price: the pure decision (dry run alike).

A booked attempt cost (``ledger.upstream_cost_booked``) is re-rated by computing the attempt's
tokens at the corrected cost price with the one rounding rule, plus ``per_request`` when the
call reached the upstream (:func:`tollway.events.pricing.upstream_cost_micro`, as the booking
does); the compensating entry moves the difference between that and what the attempt costs the
operator now (its booking plus earlier cost re-ratings), either way, between the channel's
operator accounts ``system/upstream_payable/<channel>`` and ``system/upstream_expense/<channel>``.
No tenant account moves, so there is no balance to protect and nothing to refuse but a reused
correction id.

A re-rating corrects amounts, never the currency: a booking in another currency than the
corrected price's is left alone (``currency_mismatch``; the edge refuses such a request first),
as is one whose attempt has no tokens on its receipt (``no_usage``). The edge's dry run and the
ledger's apply both call :func:`plan_account` on the same rows. No IO here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tollway.events.pricing import cost_micro
from tollway.ledger import domain
from tollway.ledger.upstream_costs import expense_account, payable_account

if TYPE_CHECKING:
    from datetime import datetime

    from tollway.events.ledger import Posting
    from tollway.events.pricing import CostPrice, Usage

# Stable codes of a booking left alone.
CURRENCY_MISMATCH = "currency_mismatch"
NO_USAGE = "no_usage"
KEY_REUSED = "idempotency_key_reused"


def correction_key(correction_id: str) -> str:
    """The account's idempotency key of a cost re-rating (apart from the sell side's)."""
    return f"cost_rerate:{correction_id}"


@dataclass(frozen=True, slots=True)
class Selection:
    """The bookings a cost re-rating matches: the channel's, with attempt time in [start, end)."""

    channel_id: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Booking:
    """One booked attempt cost of the account, as the ledger's projections hold it."""

    event_id: str  # the ledger.upstream_cost_booked entry
    attempt_event_id: str  # the attempt.finished that caused it
    request_id: str
    attempt: int
    occurred_at: datetime
    currency: str
    original: int  # what the booking booked
    rerated_so_far: int  # the sum of earlier cost re-ratings of it (signed)
    usage: Usage | None  # the attempt's tokens (from the receipt), None when unknown
    reached: bool = True  # the call reached the upstream (every outcome but connect_error)

    @property
    def booked(self) -> int:
        """What the attempt costs the operator now, before this re-rating."""
        return self.original + self.rerated_so_far


def rerated_cost(usage: Usage, cost: CostPrice, *, reached: bool) -> int:
    """The attempt's tokens at ``cost``, rounded up once, plus ``per_request`` if it reached."""
    return cost_micro(usage, cost) + (cost.per_request if reached else 0)


@dataclass(frozen=True, slots=True)
class Line:
    """A booking and what it is re-rated to."""

    booking: Booking
    rerated: int

    @property
    def difference(self) -> int:
        """Re-rated minus booked: positive, the attempt cost the operator more."""
        return self.rerated - self.booking.booked


@dataclass(frozen=True, slots=True)
class Skip:
    """A matched booking left alone, and why (a stable code); ``currency`` is the booking's."""

    request_id: str
    attempt: int
    code: str
    currency: str


@dataclass(frozen=True, slots=True)
class AccountPlan:
    """What re-rating one account's booked costs on the channel would book."""

    account_id: str
    channel_id: str
    currency: str
    lines: tuple[Line, ...]
    skipped: tuple[Skip, ...]

    @property
    def changed(self) -> tuple[Line, ...]:
        """Lines that book an entry (a zero difference books nothing)."""
        return tuple(line for line in self.lines if line.difference != 0)

    @property
    def booked(self) -> int:
        """What the re-rated attempts cost the operator before."""
        return sum(line.booking.booked for line in self.lines)

    @property
    def rerated(self) -> int:
        """What they cost after."""
        return sum(line.rerated for line in self.lines)

    @property
    def difference(self) -> int:
        """The net movement: positive adds to the channel's expense."""
        return self.rerated - self.booked

    @property
    def other_currencies(self) -> tuple[str, ...]:
        """Currencies of bookings left alone because the correction is in another one."""
        return tuple(sorted({s.currency for s in self.skipped if s.code == CURRENCY_MISMATCH}))


def plan_account(
    account_id: str, sel: Selection, bookings: list[Booking], cost: CostPrice
) -> AccountPlan:
    """Re-rate every matched booking of one account at ``cost`` (in the order given)."""
    lines: list[Line] = []
    skipped: list[Skip] = []
    for b in bookings:
        if b.currency != cost.currency:
            skipped.append(Skip(b.request_id, b.attempt, CURRENCY_MISMATCH, b.currency))
        elif b.usage is None:
            skipped.append(Skip(b.request_id, b.attempt, NO_USAGE, b.currency))
        else:
            lines.append(Line(b, rerated_cost(b.usage, cost, reached=b.reached)))
    return AccountPlan(account_id, sel.channel_id, cost.currency, tuple(lines), tuple(skipped))


def postings(channel_id: str, currency: str, difference: int) -> list[Posting]:
    """The entry's postings: ``difference`` from the payable to the expense account (signed)."""
    payable, expense = payable_account(channel_id), expense_account(channel_id)
    if difference >= 0:
        return domain.transfer(payable, expense, currency, difference)
    return domain.transfer(expense, payable, currency, -difference)
