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
from tollway.events.pricing import Price, Usage, cost_micro, worst_case_micro

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tollway.events.gateway import Candidate, RequestReceived

SYSTEM_TOPUP = "system/topup"


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


def hold_candidates(request: RequestReceived) -> list[Candidate]:
    """The candidates one hold covers: those paid from the primary's bucket."""
    bucket = request.plan[0].bucket
    return [c for c in request.plan if c.bucket == bucket]


def hold_amount(request: RequestReceived) -> int:
    """Reserve the worst case over the covered candidates: estimated input, full max output.

    Every token is assumed to be of its dearest class (a cache write for input, reasoning for
    output), so whatever the upstream reports, the cost stays within the hold.
    """
    return max(
        worst_case_micro(request.estimated_input_tokens, request.max_output_tokens, c.price)
        for c in hold_candidates(request)
    )


@dataclass(frozen=True, slots=True)
class HoldDecision:
    """Whether a hold fits, and if not, which limit stopped it."""

    amount: int
    available: int
    limit: str | None

    @property
    def placed(self) -> bool:
        """True when every applicable hard limit covers the amount."""
        return self.limit is None


def decide_hold(amount: int, available: int, bucket: str) -> HoldDecision:
    """A hold is placed only when the bucket's available balance covers it."""
    limit = None if amount <= available else f"bucket:{bucket}"
    return HoldDecision(amount=amount, available=available, limit=limit)


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
