"""Pure rules of a hold's end of life: expiry, extension and the late capture.

A hold ends settled, released or expired (ARCHITECTURE invariant 7). Expiry is decided against
time carried by an event (a clock tick), never the wall clock, so a replay expires the same
holds. A request served after its hold expired is still charged (invariant 8), straight from
the bucket, capped at the hold like any settlement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollway.ledger.domain import (
    Settlement,
    bucket_account,
    held_account,
    revenue_account,
    transfer,
)

if TYPE_CHECKING:
    from datetime import datetime

    from tollway.events.ledger import Posting


def is_expired(deadline_at: datetime, expire_before: datetime) -> bool:
    """A hold expires once the tick's cut-off (its time minus the grace) is past its deadline."""
    return deadline_at < expire_before


def expiry_postings(account_id: str, bucket: str, unit: str, amount: int) -> list[Posting]:
    """Give the whole reservation back to the bucket."""
    return transfer(
        held_account(account_id, bucket), bucket_account(account_id, bucket), unit, amount
    )


def extended_deadline(current: datetime, requested: datetime) -> datetime | None:
    """The new deadline, or None when the request would not move it later (holds only grow)."""
    return requested if requested > current else None


def late_capture_postings(
    account_id: str, bucket: str, unit: str, settlement: Settlement, channel_id: str
) -> list[Posting]:
    """Charge the bucket directly: the hold's money already went back to it at expiry."""
    return transfer(
        bucket_account(account_id, bucket), revenue_account(channel_id), unit, settlement.charged
    )
