"""Re-rating one account's booked upstream costs (``CostRerateRequested``): load, decide, journal.

The affected set is chosen here, from the ledger's own projection ``ledger.upstream_costs`` at
the command's place in the tenant's partition: the account's bookings on the channel whose
attempt time is in the period (:mod:`tollway.ledger.cost_rerate_store`). Every outcome is
journaled (the per-account ``ledger.upstream_cost_rerate_applied``, even when nothing matched,
or ``ledger.upstream_cost_rerate_refused``), so the replay's spine puts the command at the same
place among the account's cost bookings and a replay matches the same ones. Each changed
booking gets its own ``ledger.upstream_cost_rerated`` entry next to the original and a row in
``ledger.upstream_cost_rerates``; the tenant's receipt, buckets and views are not touched (the
three types are operator-only). A correction id is applied once per account
(``ledger.corrections``, key ``cost_rerate:<id>``); the same id with another payload is refused.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from tollway.events.ledger import (
    UpstreamCostRerateApplied,
    UpstreamCostRerated,
    UpstreamCostRerateRefused,
)
from tollway.ledger import cost_rerate, cost_rerate_store, store
from tollway.ledger.journal import emit, journal

if TYPE_CHECKING:
    import asyncpg

    from tollway.events.envelope import Envelope
    from tollway.events.gateway import CostRerateRequested
    from tollway.runtime.outbox import Outgoing


def fingerprint(p: CostRerateRequested) -> str:
    """What a correction id stands for, for one account."""
    parts = (
        p.account_id,
        "cost",
        p.channel_id,
        p.period_from.isoformat(),
        p.period_to.isoformat(),
        p.cost.model_dump_json(),
    )
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


async def rerate_costs(
    conn: asyncpg.Connection, env: Envelope[CostRerateRequested]
) -> list[Outgoing]:
    """Book the account's share of a cost re-rating once, or journal why not."""
    p = env.payload
    key = cost_rerate.correction_key(p.correction_id)
    seen = await store.correction_fingerprint(conn, p.account_id, key)
    if seen == fingerprint(p):
        return []
    if seen is not None:
        refused = UpstreamCostRerateRefused(
            account_id=p.account_id,
            cause_id=env.id,
            correction_id=p.correction_id,
            reason="correction id reused with a different payload",
            code=cost_rerate.KEY_REUSED,
        )
        return [await journal(conn, emit(env, refused, cost_rerate_store.REFUSED))]
    sel = cost_rerate.Selection(p.channel_id, p.period_from, p.period_to)
    plan = await cost_rerate_store.plan(conn, p.account_id, sel, p.cost)
    out = [await _book(conn, env, line) for line in plan.changed]
    summary = emit(env, _summary(env, plan), cost_rerate_store.APPLIED)
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
    conn: asyncpg.Connection, env: Envelope[CostRerateRequested], line: cost_rerate.Line
) -> Outgoing:
    p, booking = env.payload, line.booking
    event = UpstreamCostRerated(
        account_id=p.account_id,
        cause_id=env.id,
        correction_id=p.correction_id,
        original_event_id=booking.event_id,
        attempt_event_id=booking.attempt_event_id,
        request_id=booking.request_id,
        attempt=booking.attempt,
        channel_id=p.channel_id,
        currency=booking.currency,
        cost=p.cost,
        booked_before_micro=booking.booked,
        rerated_micro=line.rerated,
        amount_micro=line.difference,
        reason=p.reason,
        postings=cost_rerate.postings(p.channel_id, booking.currency, line.difference),
    )
    out = emit(env, event, cost_rerate_store.entry_salt(booking.event_id))
    message = await journal(conn, out)
    await cost_rerate_store.record(conn, out.id, env.occurred_at, event)
    return message


def _summary(
    env: Envelope[CostRerateRequested], plan: cost_rerate.AccountPlan
) -> UpstreamCostRerateApplied:
    p = env.payload
    return UpstreamCostRerateApplied(
        account_id=p.account_id,
        cause_id=env.id,
        correction_id=p.correction_id,
        channel_id=p.channel_id,
        currency=p.cost.currency,
        period_from=p.period_from,
        period_to=p.period_to,
        cost=p.cost,
        attempts=len(plan.lines),
        changed=len(plan.changed),
        skipped=len(plan.skipped),
        booked_micro=plan.booked,
        rerated_micro=plan.rerated,
        difference_micro=plan.difference,
        actor=p.actor,
        reason=p.reason,
    )
