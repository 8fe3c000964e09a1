"""The fold's top-ups: a bucket credited once per (account, idempotency key), pure.

A top-up credits a bucket from the account's own source (``system/topup/<account>``). Anything
the ledger refuses (a key reused with another payload, the wrong unit, an amount or a balance
out of range, a name no service accepts) is journaled as ``TopUpRefused``: a replay refuses it
the same way, and the next top-up, of this tenant or any other, is applied as if it never came.
Every figure a decision reads is of the account's own partition (its bucket, its source, its
keys), so it is the same live and in a replay. No IO, no clock.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from tollway.events.ledger import ToppedUp, TopUpRefused
from tollway.ledger import domain
from tollway.ledger.fold import Bucket, Decision, KeyUse, State
from tollway.ledger.journal import emit

if TYPE_CHECKING:
    from tollway.events.envelope import Envelope
    from tollway.events.gateway import TopUpRequested

KEY_REUSED = domain.Refusal(
    "idempotency_key_reused", "idempotency key reused with a different payload"
)


def fingerprint(p: TopUpRequested) -> str:
    """What an idempotency key stands for: the same key with another payload is refused."""
    return hashlib.sha256(
        f"{p.account_id}|{p.bucket}|{p.unit}|{p.amount_micro}".encode()
    ).hexdigest()


def wants_key(p: TopUpRequested) -> bool:
    """Whether deciding ``p`` reads its key (names no service accepts are refused first)."""
    return domain.refuse_names(p.bucket, p.unit) is None


def decide_topup(state: State, env: Envelope[TopUpRequested]) -> Decision:
    """Credit the bucket (fixing its unit at its first top-up), or journal why not.

    A key already applied with the same payload decides nothing (the retry of a top-up).
    """
    p, decision = env.payload, Decision()
    # Names first: a unit no service accepts is refused before anything else is read.
    refusal = domain.refuse_names(p.bucket, p.unit)
    unit: str | None = None
    if refusal is None:
        seen = state.topup_keys.get((p.account_id, p.idempotency_key))
        if seen == fingerprint(p):
            return decision
        unit = state.units.get((p.account_id, p.bucket))
        refusal = KEY_REUSED if seen is not None else domain.refuse_credit(_credit(state, p, unit))
    if refusal is not None:
        refused = TopUpRefused(
            account_id=p.account_id,
            cause_id=env.id,
            idempotency_key=p.idempotency_key,
            reason=refusal.reason,
            code=refusal.code,
            bucket=p.bucket,
            unit=p.unit,
            amount_micro=p.amount_micro,
        )
        decision.journal(emit(env, refused, domain.TOPUP_REFUSED))
        return decision
    if unit is None:
        decision.buckets.append(Bucket(p.account_id, p.bucket, p.unit))
    topped = ToppedUp(
        account_id=p.account_id,
        cause_id=env.id,
        bucket=p.bucket,
        unit=p.unit,
        amount_micro=p.amount_micro,
        idempotency_key=p.idempotency_key,
        postings=domain.transfer(
            domain.topup_source(p.account_id),
            domain.bucket_account(p.account_id, p.bucket),
            p.unit,
            p.amount_micro,
        ),
    )
    out = emit(env, topped, domain.TOPPED_UP)
    decision.topups.append(KeyUse(p.account_id, p.idempotency_key, fingerprint(p), out.id))
    decision.journal(out)
    return decision


def _credit(state: State, p: TopUpRequested, unit: str | None) -> domain.Credit:
    """The credit as the account's own partition sees it (balances in the bucket's unit)."""
    in_unit = unit or p.unit
    return domain.Credit(
        bucket=p.bucket,
        amount=p.amount_micro,
        unit=p.unit,
        bucket_unit=unit,
        bucket_balance=state.balances.get(
            (domain.bucket_account(p.account_id, p.bucket), in_unit), 0
        ),
        source_balance=state.balances.get((domain.topup_source(p.account_id), in_unit), 0),
    )
