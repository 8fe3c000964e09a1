"""The ledger's pure decisions: account names, hold sizing, and the postings of every movement.

No IO here. Handlers load the state a decision needs, call these functions, and append what
they return. Every function that moves money returns postings that sum to zero per unit
(double entry); :func:`check_balanced` is the guard the store applies before writing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tollway.events.ledger import Posting
from tollway.events.pricing import (
    MAX_AMOUNT_MICRO,
    MAX_BALANCE_MICRO,
    MAX_SOURCE_MICRO,
    Price,
    Usage,
    bucket_pattern,
    cost_micro,
    format_micro,
    unit_pattern,
)

if TYPE_CHECKING:
    from collections.abc import Iterable


BUCKET = bucket_pattern()
UNIT = unit_pattern()

# Top-ups and adjustments draw on a source account of their tenant, never on one shared by all:
# a shared source was a bigint every tenant's top-ups summed into (one huge top-up overflowed it
# for everyone), and a decision bounded by it depended on other partitions, which a replay
# applies in another order. ``system/topup`` alone is the source of top-ups journaled before.
SYSTEM_TOPUP = "system/topup"
SYSTEM_ADJUSTMENTS = "system/adjustments"


# Salts of the ids a top-up's outcome is journaled under (derived from the top-up's event id).
TOPPED_UP, TOPUP_REFUSED = "topped_up", "topup_refused"
TOPUP_OUTCOMES = (TOPPED_UP, TOPUP_REFUSED)


def topup_source(account_id: str) -> str:
    """Where ``account_id``'s top-ups come from (its balance: minus all it was topped up)."""
    return f"{SYSTEM_TOPUP}/{account_id}"


def adjustment_source(account_id: str) -> str:
    """The counterpart of ``account_id``'s operator adjustments."""
    return f"{SYSTEM_ADJUSTMENTS}/{account_id}"


def bucket_account(account_id: str, bucket: str) -> str:
    """The tenant's spendable balance in ``bucket``."""
    return f"{account_id}/{bucket}"


def held_account(account_id: str, bucket: str) -> str:
    """Money reserved by open holds of ``bucket``."""
    return f"{account_id}/{bucket}/held"


def revenue_account(channel_id: str) -> str:
    """What a channel earned from tenants."""
    return f"system/revenue/{channel_id}"


class UnbalancedPostingsError(ValueError):
    """A movement's postings do not sum to zero per unit: a bug, never written."""


def check_balanced(postings: Iterable[Posting]) -> None:
    """Raise unless ``postings`` sum to zero in every unit."""
    sums: dict[str, int] = defaultdict(int)
    for p in postings:
        sums[p.unit] += p.amount
    bad = {unit: total for unit, total in sums.items() if total != 0}
    if bad:
        raise UnbalancedPostingsError(f"postings do not balance: {bad}")


def transfer(source: str, target: str, unit: str, amount: int) -> list[Posting]:
    """Move ``amount`` from ``source`` to ``target``; empty when nothing moves."""
    if amount == 0:
        return []
    return [
        Posting(account=source, unit=unit, amount=-amount),
        Posting(account=target, unit=unit, amount=amount),
    ]


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a hold ends: what is charged, what goes back."""

    cost: int
    charged: int
    released: int


def settle(held: int, usage: Usage | None, price: Price | None) -> Settlement:
    """Charge the served attempt's cost, capped at the hold; release the remainder.

    The cap keeps the hard limit: a hold is the most a request may take. ``cost`` keeps the
    uncapped figure so a receipt can show an estimate that fell short.
    """
    cost = cost_micro(usage, price) if usage is not None and price is not None else 0
    charged = min(cost, held)
    return Settlement(cost=cost, charged=charged, released=held - charged)


def closing_postings(
    account_id: str, bucket: str, unit: str, settlement: Settlement, channel_id: str | None
) -> list[Posting]:
    """Empty the hold: the charge to the serving channel's revenue, the rest back to the bucket."""
    held = held_account(account_id, bucket)
    if settlement.charged and channel_id is None:
        raise ValueError("a charge needs the channel that earned it")
    return [
        *transfer(held, revenue_account(channel_id or ""), unit, settlement.charged),
        *transfer(held, bucket_account(account_id, bucket), unit, settlement.released),
    ]


@dataclass(frozen=True, slots=True)
class Credit:
    """A credit to a bucket from its tenant's source, with the state it is decided on.

    Every figure is of the account's own partition (its bucket, its source, its keys), so the
    decision is the same live and in a replay, whatever order other partitions are applied in.
    """

    bucket: str
    amount: int
    unit: str
    bucket_unit: str | None  # None: the bucket was never funded (this credit fixes its unit)
    bucket_balance: int
    source_balance: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the ledger refused a command: a stable ``code`` and a sentence for people."""

    code: str
    reason: str


def refuse_names(bucket: str, unit: str) -> Refusal | None:
    """None when ``bucket`` and ``unit`` are names every service accepts (pricing's patterns)."""
    if BUCKET.fullmatch(bucket) and UNIT.fullmatch(unit):
        return None
    return Refusal("invalid_bucket", "the bucket or unit name is not acceptable")


def refuse_credit(credit: Credit, *, signed: bool = False) -> Refusal | None:
    """None when the credit fits every range (pricing's MAX_*), else why it does not.

    ``signed``: an adjustment may be negative (a debit); a top-up must be positive.
    """
    named = refuse_names(credit.bucket, credit.unit)
    if named is not None:
        return named
    low = -MAX_AMOUNT_MICRO if signed else 1
    if not low <= credit.amount <= MAX_AMOUNT_MICRO or credit.amount == 0:
        return Refusal(
            "amount_out_of_range",
            f"the amount must be between {format_micro(max(low, 1))} and "
            f"{format_micro(MAX_AMOUNT_MICRO)} units in magnitude",
        )
    if credit.bucket_unit is not None and credit.bucket_unit != credit.unit:
        return Refusal("unit_mismatch", f"the bucket is in {credit.bucket_unit}, not {credit.unit}")
    if abs(credit.bucket_balance + credit.amount) > MAX_BALANCE_MICRO:
        return Refusal(
            "balance_out_of_range",
            f"the bucket would hold more than {format_micro(MAX_BALANCE_MICRO)} units",
        )
    if abs(credit.source_balance - credit.amount) > MAX_SOURCE_MICRO:
        return Refusal(
            "source_out_of_range",
            f"the account's credits would pass {format_micro(MAX_SOURCE_MICRO)} units in all",
        )
    return None
