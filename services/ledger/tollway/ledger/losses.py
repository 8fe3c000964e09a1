"""Upstream loss: tokens a failed attempt consumed are the operator's cost, on the books.

An attempt that did not produce the answer (any outcome but ``ok``, and nothing of it reached
the client) is never charged to the tenant, but the upstream may still bill its tokens. A stream
cut after it started is not such an attempt: the client got part of the answer and pays for the
tokens it got (the settlement books them as revenue), so they are booked once, never as loss.

The ledger records a loss as a movement from ``system/upstream_loss`` (the operator's expense)
to ``system/upstream_cost/<channel>`` (what is owed to the channel), in the unit of the bucket
the attempt would have paid from, and shows it on the receipt. A channel with an upstream cost
price books a failed attempt's real cost instead (:mod:`tollway.ledger.upstream_costs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollway.events.ledger import UpstreamLossRecorded
from tollway.events.pricing import cost_micro
from tollway.ledger import domain, store
from tollway.ledger.journal import emit, journal

if TYPE_CHECKING:
    import asyncpg

    from tollway.events.envelope import Envelope
    from tollway.events.gateway import AttemptFinished
    from tollway.runtime.outbox import Outgoing

UPSTREAM_LOSS = "system/upstream_loss"


def upstream_cost_account(channel_id: str) -> str:
    """What the operator owes a channel for tokens nobody paid for."""
    return f"system/upstream_cost/{channel_id}"


def loss_of(attempt: AttemptFinished) -> int:
    """The sell-price cost of a failed attempt's reported tokens.

    0 for the served (delivered) attempt, and 0 when the channel has a cost price: then the
    attempt's real cost is booked by :mod:`tollway.ledger.upstream_costs` instead, never both.
    """
    if attempt.outcome == "ok" or attempt.delivered or attempt.candidate.cost is not None:
        return 0
    return cost_micro(attempt.usage, attempt.candidate.price)


async def record_loss(conn: asyncpg.Connection, env: Envelope[AttemptFinished]) -> list[Outgoing]:
    """Journal a failed attempt's consumed tokens as upstream loss; nothing when there are none."""
    attempt = env.payload
    amount = loss_of(attempt)
    if amount == 0:
        return []
    bucket = attempt.candidate.bucket
    unit = await store.bucket_unit(conn, attempt.account_id, bucket) or bucket
    channel = attempt.candidate.channel_id
    event = UpstreamLossRecorded(
        account_id=attempt.account_id,
        cause_id=env.id,
        request_id=attempt.request_id,
        attempt=attempt.attempt,
        channel_id=channel,
        unit=unit,
        amount_micro=amount,
        postings=domain.transfer(UPSTREAM_LOSS, upstream_cost_account(channel), unit, amount),
    )
    receipt = await store.get_receipt(conn, attempt.request_id)
    if receipt is not None:
        losses = {**receipt.get("upstream_losses", {}), str(attempt.attempt): amount}
        receipt["upstream_losses"] = losses
        receipt["upstream_loss_micro"] = sum(losses.values())
        await store.update_receipt(conn, attempt.request_id, receipt["status"], receipt)
    return [await journal(conn, emit(env, event, "upstream_loss"))]
