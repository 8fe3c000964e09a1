"""The price table in the journal: each change of a channel's prices is a numbered version.

The edge publishes ``PriceTableChangeRequested`` on gw.requests under the one key
``system:prices``, so one ledger consumer sees every price change in the order they were made
and numbers each channel's versions from 1 (kept in ``ledger.price_versions``). Each version is
journaled as ``ledger.price_table_changed`` (account ``system:prices``, no postings), with its
id and time derived from the command: a replay writes the same versions byte for byte.

Settlement never reads this table: a request is charged at the price its own events carry, so
the price table's history explains charges without deciding them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from tollway.events.ledger import PriceTableChanged
from tollway.events.topics import PRICE_TABLE_KEY
from tollway.ledger import store
from tollway.ledger.journal import emit, journal

if TYPE_CHECKING:
    import asyncpg

    from tollway.events.envelope import Envelope
    from tollway.events.routing import PriceTableChangeRequested
    from tollway.runtime.outbox import Outgoing

log = structlog.get_logger(__name__)


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


async def change_prices(
    conn: asyncpg.Connection, env: Envelope[PriceTableChangeRequested]
) -> list[Outgoing]:
    """Journal the channel's next price version (applied once per event id, like every input)."""
    p = env.payload
    changed = decide(await store.latest_price_version(conn, p.channel_id), p, env.id)
    if changed is None:
        log.info("price_change_ignored", channel_id=p.channel_id, reason="prices unchanged")
        return []
    journal_env = emit(env, changed, "price_table_changed")
    message = await journal(conn, journal_env)
    await store.record_price_version(conn, journal_env.id, env.occurred_at, changed)
    log.info("price_table_changed", channel_id=p.channel_id, version=changed.version)
    return [message]
