"""Reversals (refunds) and operator adjustments: corrections are new entries, never edits.

A reversal references the journal entry it corrects and moves money back along that entry's
leg: a charge (settlement, late capture) from the channel's revenue to the tenant's bucket, a
top-up from the bucket to the source it came from (the tenant's ``system/topup/<account>``, or
the shared ``system/topup`` of top-ups journaled before sources were per account). An adjustment
moves money between the bucket and the tenant's ``system/adjustments/<account>``, within the
ranges of ``tollway.events.pricing``. What reversals of one original give back adds up to at
most what the original moved (ARCHITECTURE invariant 2). Both commands are idempotent by the
account's own key; the same key with another payload is refused, like a top-up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tollway.events.ledger import Adjusted, CorrectionRefused, Reversed
from tollway.ledger import domain, rerate_store, store
from tollway.ledger.journal import emit, journal

if TYPE_CHECKING:
    import asyncpg

    from tollway.events.envelope import Envelope
    from tollway.events.gateway import AdjustmentRequested, ReversalRequested
    from tollway.events.ledger import Posting
    from tollway.runtime.outbox import Outgoing

CHARGES = {"ledger.hold_settled", "ledger.late_captured"}


@dataclass(frozen=True, slots=True)
class Leg:
    """The money an entry moved that a reversal may send back: ``source`` got it from ``target``."""

    source: str
    target: str
    unit: str
    amount: int


def reversible_leg(entry: dict[str, Any]) -> Leg | None:
    """The leg of a charge or a top-up; None for anything else (holds, adjustments…)."""
    account, bucket = entry["account_id"], entry["bucket"]
    if bucket is None:
        return None
    tenant = domain.bucket_account(account, bucket)
    if entry["type"] == "ledger.topped_up":
        # A top-up moved money from its source into the bucket: reverse bucket -> source.
        sources = [p for p in entry["postings"] if p["account"].startswith(domain.SYSTEM_TOPUP)]
        amount = next((p["amount"] for p in entry["postings"] if p["account"] == tenant), 0)
        if len(sources) != 1 or amount <= 0:
            return None
        return Leg(tenant, sources[0]["account"], sources[0]["unit"], amount)
    if entry["type"] not in CHARGES:
        return None
    gains = [
        p
        for p in entry["postings"]
        if p["account"].startswith("system/revenue/") and p["amount"] > 0
    ]
    if len(gains) != 1:
        return None
    return Leg(gains[0]["account"], tenant, gains[0]["unit"], gains[0]["amount"])


def reversal_postings(leg: Leg, amount: int) -> list[Posting]:
    """Send ``amount`` back along ``leg``."""
    return domain.transfer(leg.source, leg.target, leg.unit, amount)


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()


async def _refuse(
    conn: asyncpg.Connection,
    env: Envelope[Any],
    reason: str,
    original: str | None = None,
    code: str = "",
) -> list[Outgoing]:
    p = env.payload
    refused = CorrectionRefused(
        account_id=p.account_id,
        cause_id=env.id,
        idempotency_key=p.idempotency_key,
        original_event_id=original,
        reason=reason,
        code=code,
    )
    return [await journal(conn, emit(env, refused, "correction_refused"))]


async def _replayed_key(
    conn: asyncpg.Connection, account_id: str, key: str, fingerprint: str
) -> str | None:
    """'same' when this key was applied with this payload, 'other' for another payload."""
    seen = await store.correction_fingerprint(conn, account_id, key)
    if seen is None:
        return None
    return "same" if seen == fingerprint else "other"


async def reverse(conn: asyncpg.Connection, env: Envelope[ReversalRequested]) -> list[Outgoing]:
    """Refund part or all of an entry, never beyond what it moved (cumulatively)."""
    p = env.payload
    fingerprint = _fingerprint(p.account_id, p.original_event_id, p.amount_micro)
    replayed = await _replayed_key(conn, p.account_id, p.idempotency_key, fingerprint)
    if replayed == "same":
        return []
    if replayed == "other":
        return await _refuse(conn, env, "idempotency key reused with a different payload")
    entry = await store.journal_entry(conn, p.original_event_id)
    leg = reversible_leg(entry) if entry and entry["account_id"] == p.account_id else None
    if entry is None or leg is None:
        reason = "the original is not a charge or a top-up of this account"
        return await _refuse(conn, env, reason, p.original_event_id)
    left = leg.amount - await store.reversed_so_far(conn, p.original_event_id)
    if entry["type"] in CHARGES:
        # A re-rated charge costs the tenant its original plus its re-ratings: refund that.
        left += await rerate_store.rerated_so_far(conn, p.original_event_id)
    if p.amount_micro > left:
        reason = f"only {left} micro-{leg.unit} of the original are left to reverse"
        return await _refuse(conn, env, reason, p.original_event_id)
    event = Reversed(
        account_id=p.account_id,
        cause_id=env.id,
        original_event_id=p.original_event_id,
        request_id=entry["request_id"],
        unit=leg.unit,
        amount_micro=p.amount_micro,
        reason=p.reason,
        idempotency_key=p.idempotency_key,
        postings=reversal_postings(leg, p.amount_micro),
    )
    out = emit(env, event, "reversed")
    await store.record_correction(
        conn,
        account_id=p.account_id,
        key=p.idempotency_key,
        fingerprint=fingerprint,
        event_id=out.id,
        original_event_id=p.original_event_id,
        amount=p.amount_micro,
    )
    await _note_refund(conn, entry["request_id"], out.id, p.amount_micro)
    return [await journal(conn, out)]


async def _note_refund(
    conn: asyncpg.Connection, request_id: str | None, event_id: str, amount: int
) -> None:
    receipt = await store.get_receipt(conn, request_id) if request_id else None
    if receipt is None or request_id is None:
        return
    receipt["refunds"] = [*receipt.get("refunds", []), {"event_id": event_id, "amount": amount}]
    receipt["refunded_micro"] = sum(r["amount"] for r in receipt["refunds"])
    await store.update_receipt(conn, request_id, receipt["status"], receipt)


async def adjust(conn: asyncpg.Connection, env: Envelope[AdjustmentRequested]) -> list[Outgoing]:
    """Credit (or debit) a funded bucket against the account's adjustment source, in range."""
    p = env.payload
    fingerprint = _fingerprint(p.account_id, p.bucket, p.unit, p.amount_micro)
    replayed = await _replayed_key(conn, p.account_id, p.idempotency_key, fingerprint)
    if replayed == "same":
        return []
    if replayed == "other":
        return await _refuse(conn, env, "idempotency key reused with a different payload")
    refusal = domain.refuse_names(p.bucket, p.unit)
    if refusal is None:
        refusal = domain.refuse_credit(await _credit(conn, p), signed=True)
    if refusal is not None:
        return await _refuse(conn, env, refusal.reason, code=refusal.code)
    bucket = domain.bucket_account(p.account_id, p.bucket)
    event = Adjusted(
        account_id=p.account_id,
        cause_id=env.id,
        bucket=p.bucket,
        unit=p.unit,
        amount_micro=p.amount_micro,
        reason=p.reason,
        idempotency_key=p.idempotency_key,
        postings=domain.transfer(
            domain.adjustment_source(p.account_id), bucket, p.unit, p.amount_micro
        ),
    )
    out = emit(env, event, "adjusted")
    await store.record_correction(
        conn,
        account_id=p.account_id,
        key=p.idempotency_key,
        fingerprint=fingerprint,
        event_id=out.id,
        original_event_id=None,
        amount=0,
    )
    return [await journal(conn, out)]


async def _credit(conn: asyncpg.Connection, p: AdjustmentRequested) -> domain.Credit:
    unit = await store.bucket_unit(conn, p.account_id, p.bucket)
    bucket = domain.bucket_account(p.account_id, p.bucket)
    source = domain.adjustment_source(p.account_id)
    return domain.Credit(
        bucket=p.bucket,
        amount=p.amount_micro,
        unit=p.unit,
        # An adjustment never fixes a unit: a bucket never topped up has none to adjust.
        bucket_unit=unit or "no unit yet (top it up first)",
        bucket_balance=await store.balance(conn, bucket, p.unit),
        source_balance=await store.balance(conn, source, p.unit),
    )
