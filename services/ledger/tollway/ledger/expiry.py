"""Use cases of a hold's end of life: expiry on a clock tick, extension, and the late capture.

The ledger's clock is an event (``ClockTicked``) published into every partition of gw.usage,
so expiry happens at a fixed place in each partition's log: a replay of the same log expires
exactly the same holds, at the same event time (ARCHITECTURE invariants 5 and 7).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from aiokafka.partitioner import murmur2

from tollway.events.ledger import HoldExpired, HoldExtended, LateCaptured
from tollway.ledger import domain, holds, limits_store, receipts, store
from tollway.ledger.journal import emit, journal

if TYPE_CHECKING:
    import asyncpg

    from tollway.events.envelope import Envelope, Payload
    from tollway.events.gateway import HoldExtensionRequested, RequestFinished
    from tollway.events.ledger import ClockTicked
    from tollway.runtime.outbox import Outgoing

log = structlog.get_logger(__name__)


def partition_of(account_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives an account key (murmur2, like Java)."""
    hashed: int = murmur2(account_id.encode())
    return (hashed & 0x7FFFFFFF) % partitions


async def on_tick(conn: asyncpg.Connection, env: Envelope[ClockTicked]) -> list[Outgoing]:
    """Expire this partition's overdue holds; other partitions' accounts belong to their ticks."""
    tick = env.payload
    due = await store.expirable_holds(conn, tick.expire_before, tick.requests_before)
    return [
        await _expire(conn, env, hold)
        for hold in due
        if partition_of(hold["account_id"], tick.partitions) == tick.partition
    ]


async def _expire(
    conn: asyncpg.Connection, env: Envelope[ClockTicked], hold: dict[str, Any]
) -> Outgoing:
    account, bucket, unit = hold["account_id"], hold["bucket"], hold["unit"]
    event = HoldExpired(
        account_id=account,
        cause_id=env.id,
        hold_id=hold["hold_id"],
        request_id=hold["request_id"],
        bucket=bucket,
        unit=unit,
        released_micro=hold["amount"],
        deadline_at=hold["deadline_at"],
        postings=holds.expiry_postings(account, bucket, unit, hold["amount"]),
    )
    await store.close_hold(conn, hold["hold_id"], "expired", env.occurred_at)
    await limits_store.release_hold_usage(conn, hold["hold_id"])  # budgets stop counting it
    message = await journal(conn, emit(env, event, f"expired:{hold['hold_id']}"))
    receipt = await store.get_receipt(conn, hold["request_id"])
    if receipt is not None:
        available = await store.balance(conn, domain.bucket_account(account, bucket), unit)
        receipts.expired(receipt, event, env.occurred_at.isoformat(), available)
        await store.update_receipt(conn, hold["request_id"], "expired", receipt)
    log.info("hold_expired", hold_id=hold["hold_id"], account=account)
    return message


async def extend(conn: asyncpg.Connection, env: Envelope[HoldExtensionRequested]) -> list[Outgoing]:
    """Move an open hold's deadline later; anything else (closed, earlier) changes nothing."""
    ask = env.payload
    hold = await store.get_hold(conn, ask.hold_id)
    current = await store.hold_deadline(conn, ask.hold_id)
    if hold is None or current is None or hold["status"] != "open":
        log.info("extension_ignored", hold_id=ask.hold_id)
        return []
    new_deadline = holds.extended_deadline(current, ask.deadline_at)
    if new_deadline is None:
        return []
    await store.extend_hold(conn, ask.hold_id, new_deadline)
    event = HoldExtended(
        account_id=hold["account_id"],
        cause_id=env.id,
        hold_id=ask.hold_id,
        request_id=hold["request_id"],
        previous_deadline_at=current,
        deadline_at=new_deadline,
    )
    receipt = await store.get_receipt(conn, hold["request_id"])
    if receipt is not None:
        receipts.extended(receipt, event)
        await store.update_receipt(conn, hold["request_id"], receipt["status"], receipt)
    return [await journal(conn, emit(env, event, "hold_extended"))]


async def late_capture(
    conn: asyncpg.Connection, env: Envelope[RequestFinished], hold: dict[str, Any]
) -> tuple[Outgoing, Envelope[Payload]] | None:
    """Charge a request served after its hold expired (invariant 8: never served unbilled).

    Returns the journaled message and its event, or None when the hold was already captured.
    """
    fin = env.payload
    if not await store.capture_expired(conn, hold["hold_id"]):
        return None
    account, bucket, unit = hold["account_id"], hold["bucket"], hold["unit"]
    settlement = domain.settle(hold["amount"], fin.usage, fin.price)
    channel = fin.served_channel_id or ""
    event = LateCaptured(
        account_id=account,
        cause_id=env.id,
        hold_id=hold["hold_id"],
        request_id=fin.request_id,
        bucket=bucket,
        unit=unit,
        charged_micro=settlement.charged,
        postings=holds.late_capture_postings(account, bucket, unit, settlement, channel),
    )
    captured = emit(env, event, "late_captured")
    message = await journal(conn, captured)
    receipt = await store.get_receipt(conn, fin.request_id)
    if receipt is not None:
        available = await store.balance(conn, domain.bucket_account(account, bucket), unit)
        receipts.late_captured(receipt, event, fin, available)
        await store.update_receipt(conn, fin.request_id, "settled", receipt)
    log.info("late_captured", hold_id=hold["hold_id"], account=account)
    return message, captured
