"""The price table in the journal: each change of a channel's prices is a numbered version.

The edge publishes ``PriceTableChangeRequested`` on gw.requests under the one key
``system:prices``, so one ledger partition sees every price change in the order they were made
and numbers each channel's versions from 1 (kept in ``ledger.price_versions``; the fold keeps
each channel's latest). Each version is journaled as ``ledger.price_table_changed`` (account
``system:prices``, no postings), with its id and time derived from the command: a replay writes
the same versions byte for byte.

Settlement never reads this table: a request is charged at the price its own events carry, so
the price table's history explains charges without deciding them. No IO, no clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollway.events.ledger import PriceTableChanged
from tollway.events.topics import PRICE_TABLE_KEY
from tollway.ledger.fold import Decision, PriceVersion, State
from tollway.ledger.journal import emit

if TYPE_CHECKING:
    from tollway.events.envelope import Envelope
    from tollway.events.routing import PriceTableChangeRequested


def decide(
    latest: int | None, request: PriceTableChangeRequested, cause_id: str
) -> PriceTableChanged | None:
    """The channel's next price version after ``latest``; None when no price changed.

    Pure: the version depends only on the channel's earlier journaled versions.
    """
    if request.previous == request.prices and request.previous_cost == request.cost:
        return None
    return PriceTableChanged(
        account_id=PRICE_TABLE_KEY,
        cause_id=cause_id,
        channel_id=request.channel_id,
        version=(latest or 0) + 1,
        bucket=request.bucket,
        previous=request.previous,
        prices=request.prices,
        previous_cost=request.previous_cost,
        cost=request.cost,
        actor=request.actor,
        audit_id=request.audit_id,
    )


def decide_change(state: State, env: Envelope[PriceTableChangeRequested]) -> Decision:
    """Journal the channel's next price version; nothing when no price changed."""
    p, decision = env.payload, Decision()
    changed = decide(state.price_versions.get(p.channel_id), p, env.id)
    if changed is None:
        return decision
    out = emit(env, changed, "price_table_changed")
    decision.journal(out)
    decision.prices.append(PriceVersion(out.id, env.occurred_at, changed))
    return decision
