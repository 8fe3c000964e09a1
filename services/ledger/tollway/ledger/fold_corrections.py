"""The fold's reversals (refunds) and operator adjustments: corrections are new entries, pure.

A reversal references the journal entry it corrects and moves money back along that entry's
leg: a charge (settlement, late capture) from the channel's revenue to the tenant's bucket, a
top-up from the bucket to the source it came from (the tenant's ``system/topup/<account>``, or
the shared ``system/topup`` of top-ups journaled before sources were per account). An adjustment
moves money between the bucket and the tenant's ``system/adjustments/<account>``, within the
ranges of ``tollway.events.pricing``. What reversals of one original give back adds up to at
most what the original moved (ARCHITECTURE invariant 2). Both commands are idempotent by the
account's own key (a namespace shared with re-ratings); the same key with another payload is
refused. A reversal notes its refund on the original's receipt. No IO, no clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tollway.events.ledger import Adjusted, CorrectionRefused, Reversed
from tollway.ledger import domain
from tollway.ledger.fold import Decision, KeyUse, Original, State
from tollway.ledger.journal import emit

if TYPE_CHECKING:
    from tollway.events.envelope import Envelope
    from tollway.events.gateway import AdjustmentRequested, ReversalRequested
    from tollway.events.ledger import Posting

CHARGES = {"ledger.hold_settled", "ledger.late_captured"}
KEY_REUSED = "idempotency key reused with a different payload"


@dataclass(frozen=True, slots=True)
class Leg:
    """The money an entry moved that a reversal may send back: ``source`` got it from ``target``."""

    source: str
    target: str
    unit: str
    amount: int


def reversible_leg(entry: Original) -> Leg | None:
    """The leg of a charge or a top-up; None for anything else (holds, adjustments…)."""
    if entry.bucket is None:
        return None
    tenant = domain.bucket_account(entry.account_id, entry.bucket)
    if entry.type == "ledger.topped_up":
        # A top-up moved money from its source into the bucket: reverse bucket -> source.
        sources = [p for p in entry.postings if p.account.startswith(domain.SYSTEM_TOPUP)]
        amount = next((p.amount for p in entry.postings if p.account == tenant), 0)
        if len(sources) != 1 or amount <= 0:
            return None
        return Leg(tenant, sources[0].account, sources[0].unit, amount)
    if entry.type not in CHARGES:
        return None
    gains = [p for p in entry.postings if p.account.startswith("system/revenue/") and p.amount > 0]
    if len(gains) != 1:
        return None
    return Leg(gains[0].account, tenant, gains[0].unit, gains[0].amount)


def reversal_postings(leg: Leg, amount: int) -> list[Posting]:
    """Send ``amount`` back along ``leg``."""
    return domain.transfer(leg.source, leg.target, leg.unit, amount)


def fingerprint(*parts: object) -> str:
    """What a correction's key stands for (the same key with another payload is refused)."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()


def _replayed(state: State, account_id: str, key: str, fp: str) -> str | None:
    """'same' when this key was applied with this payload, 'other' for another payload."""
    seen = state.correction_keys.get((account_id, key))
    if seen is None:
        return None
    return "same" if seen == fp else "other"


def _refuse(
    env: Envelope[Any], reason: str, original: str | None = None, code: str = ""
) -> Decision:
    p, decision = env.payload, Decision()
    refused = CorrectionRefused(
        account_id=p.account_id,
        cause_id=env.id,
        idempotency_key=p.idempotency_key,
        original_event_id=original,
        reason=reason,
        code=code,
    )
    decision.journal(emit(env, refused, "correction_refused"))
    return decision


def decide_reversal(state: State, env: Envelope[ReversalRequested]) -> Decision:
    """Refund part or all of an entry, never beyond what it moved (cumulatively)."""
    p = env.payload
    fp = fingerprint(p.account_id, p.original_event_id, p.amount_micro)
    replayed = _replayed(state, p.account_id, p.idempotency_key, fp)
    if replayed == "same":
        return Decision()
    if replayed == "other":
        return _refuse(env, KEY_REUSED)
    entry = state.originals.get(p.original_event_id)
    leg = reversible_leg(entry) if entry and entry.account_id == p.account_id else None
    if entry is None or leg is None:
        reason = "the original is not a charge or a top-up of this account"
        return _refuse(env, reason, p.original_event_id)
    left = leg.amount - entry.reversed
    if entry.type in CHARGES:
        # A re-rated charge costs the tenant its original plus its re-ratings: refund that.
        left += entry.rerated
    if p.amount_micro > left:
        reason = f"only {left} micro-{leg.unit} of the original are left to reverse"
        return _refuse(env, reason, p.original_event_id)
    event = Reversed(
        account_id=p.account_id,
        cause_id=env.id,
        original_event_id=p.original_event_id,
        request_id=entry.request_id,
        unit=leg.unit,
        amount_micro=p.amount_micro,
        reason=p.reason,
        idempotency_key=p.idempotency_key,
        postings=reversal_postings(leg, p.amount_micro),
    )
    out, decision = emit(env, event, "reversed"), Decision()
    use = KeyUse(p.account_id, p.idempotency_key, fp, out.id, p.original_event_id, p.amount_micro)
    decision.corrections.append(use)
    _note_refund(state, entry.request_id, out.id, p.amount_micro, decision)
    decision.journal(out)
    return decision


def _note_refund(
    state: State, request_id: str | None, event_id: str, amount: int, decision: Decision
) -> None:
    """The refund on the original's receipt (the request's, for a charge)."""
    row = state.receipts.get(request_id) if request_id else None
    if row is None:
        return
    body = row.edit()
    body["refunds"] = [*body.get("refunds", []), {"event_id": event_id, "amount": amount}]
    body["refunded_micro"] = sum(r["amount"] for r in body["refunds"])
    decision.receipts.append(row.with_body(body))


def decide_adjustment(state: State, env: Envelope[AdjustmentRequested]) -> Decision:
    """Credit (or debit) a funded bucket against the account's adjustment source, in range."""
    p = env.payload
    fp = fingerprint(p.account_id, p.bucket, p.unit, p.amount_micro)
    replayed = _replayed(state, p.account_id, p.idempotency_key, fp)
    if replayed == "same":
        return Decision()
    if replayed == "other":
        return _refuse(env, KEY_REUSED)
    refusal = domain.refuse_names(p.bucket, p.unit)
    if refusal is None:
        refusal = domain.refuse_credit(_credit(state, p), signed=True)
    if refusal is not None:
        return _refuse(env, refusal.reason, code=refusal.code)
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
    out, decision = emit(env, event, "adjusted"), Decision()
    decision.corrections.append(KeyUse(p.account_id, p.idempotency_key, fp, out.id))
    decision.journal(out)
    return decision


def _credit(state: State, p: AdjustmentRequested) -> domain.Credit:
    unit = state.units.get((p.account_id, p.bucket))
    return domain.Credit(
        bucket=p.bucket,
        amount=p.amount_micro,
        unit=p.unit,
        # An adjustment never fixes a unit: a bucket never topped up has none to adjust.
        bucket_unit=unit or "no unit yet (top it up first)",
        bucket_balance=state.balances.get(
            (domain.bucket_account(p.account_id, p.bucket), p.unit), 0
        ),
        source_balance=state.balances.get((domain.adjustment_source(p.account_id), p.unit), 0),
    )
