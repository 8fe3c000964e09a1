"""Re-rating one account's past charges (``RerateRequested``): load, decide, journal.

The affected set is chosen here, from the ledger's own projections at the command's place in
the account's partition: the account's charges in the bucket earned by the channel, settled in
the period (:mod:`tollway.ledger.rerate_store`). Every outcome is journaled (the per-account
``ledger.rerate_applied``, even when nothing matched, or ``ledger.correction_refused``), so the
replay's spine puts the command at the same place among the account's settlements and a replay
matches the same charges. Each changed charge gets its own ``ledger.rerated`` entry next to the
original, a row in ``ledger.rerates`` and a line on its receipt. A correction id is applied once
per account (``ledger.corrections``, key ``rerate:<id>``); the same id with another payload is
refused (``idempotency_key_reused``), like a reversal's key.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from tollway.events.ledger import CorrectionRefused, RerateApplied, Rerated
from tollway.ledger import receipts, rerate, rerate_store, store
from tollway.ledger.journal import emit, journal

if TYPE_CHECKING:
    import asyncpg

    from tollway.events.envelope import Envelope
    from tollway.events.gateway import RerateRequested
    from tollway.runtime.outbox import Outgoing


def fingerprint(p: RerateRequested) -> str:
    """What a correction id stands for, for one account."""
    parts = (
        p.account_id,
        p.side,
        p.channel_id,
        p.bucket,
        p.period_from.isoformat(),
        p.period_to.isoformat(),
        p.prices.model_dump_json(),
        p.allow_negative,
    )
    return hashlib.sha256("|".join(str(x) for x in parts).encode()).hexdigest()


async def _refuse(
    conn: asyncpg.Connection, env: Envelope[RerateRequested], code: str, reason: str
) -> list[Outgoing]:
    p = env.payload
    refused = CorrectionRefused(
        account_id=p.account_id,
        cause_id=env.id,
        idempotency_key=p.correction_id,
        reason=reason,
        code=code,
    )
    return [await journal(conn, emit(env, refused, rerate_store.REFUSED))]


async def rerate_account(
    conn: asyncpg.Connection, env: Envelope[RerateRequested]
) -> list[Outgoing]:
    """Book the account's share of a re-rating once, or journal why not."""
    p = env.payload
    if p.side != "sell":
        reason = "re-rating upstream cost is not supported yet; re-rate the sell side"
        return await _refuse(conn, env, rerate.NOT_SUPPORTED, reason)
    key = rerate.correction_key(p.correction_id)
    seen = await store.correction_fingerprint(conn, p.account_id, key)
    if seen == fingerprint(p):
        return []
    if seen is not None:
        reason = "correction id reused with a different payload"
        return await _refuse(conn, env, rerate.KEY_REUSED, reason)
    sel = rerate.Selection(p.channel_id, p.bucket, p.period_from, p.period_to)
    plan = await rerate_store.plan(conn, p.account_id, sel, p.prices)
    refusal = rerate.refuse(plan, allow_negative=p.allow_negative)
    if refusal is not None:
        return await _refuse(conn, env, refusal.code, refusal.reason)
    out = [await _book(conn, env, line) for line in plan.changed]
    summary = emit(env, _summary(env, plan), rerate_store.APPLIED)
    out.append(await journal(conn, summary))
    await store.record_correction(
        conn,
        account_id=p.account_id,
        key=key,
        fingerprint=fingerprint(p),
        event_id=summary.id,
        original_event_id=None,
        amount=plan.difference,
    )
    return out


async def _book(
    conn: asyncpg.Connection, env: Envelope[RerateRequested], line: rerate.Line
) -> Outgoing:
    p, charge = env.payload, line.charge
    event = Rerated(
        account_id=p.account_id,
        cause_id=env.id,
        correction_id=p.correction_id,
        original_event_id=charge.original_event_id,
        request_id=charge.request_id,
        channel_id=p.channel_id,
        bucket=p.bucket,
        unit=charge.unit,
        price=p.prices,
        charged_before_micro=charge.charged,
        rerated_micro=line.rerated,
        amount_micro=line.difference,
        reason=p.reason,
        postings=rerate.postings(
            p.account_id, p.bucket, charge.unit, p.channel_id, line.difference
        ),
    )
    out = emit(env, event, rerate_store.entry_salt(charge.request_id))
    message = await journal(conn, out)
    await rerate_store.record(conn, out.id, env.occurred_at, event)
    receipt = await store.get_receipt(conn, charge.request_id)
    if receipt is not None:
        receipts.rerated(receipt, out.id, event, env.occurred_at.isoformat())
        await store.update_receipt(conn, charge.request_id, receipt["status"], receipt)
    return message


def _summary(env: Envelope[RerateRequested], plan: rerate.AccountPlan) -> RerateApplied:
    p = env.payload
    return RerateApplied(
        account_id=p.account_id,
        cause_id=env.id,
        correction_id=p.correction_id,
        channel_id=p.channel_id,
        bucket=p.bucket,
        unit=plan.unit,
        period_from=p.period_from,
        period_to=p.period_to,
        price=p.prices,
        requests=len(plan.lines),
        changed=len(plan.changed),
        skipped=len(plan.skipped),
        charged_micro=plan.charged,
        rerated_micro=plan.rerated,
        difference_micro=plan.difference,
        balance_after_micro=plan.balance_after,
        allow_negative=p.allow_negative,
        actor=p.actor,
        reason=p.reason,
    )
