"""asyncpg adapter of the upstream cost projection (``ledger.upstream_costs``).

Rows are written in the caller's transaction, after their journal rows (the foreign key), by
the folded batch and by the per-event use case alike, with one multi-row statement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollway.ledger.journal import journal
from tollway.ledger.upstream_costs import decide, row_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    import asyncpg

    from tollway.events.envelope import Envelope
    from tollway.events.gateway import AttemptFinished
    from tollway.ledger.upstream_costs import CostRow
    from tollway.runtime.outbox import Outgoing

INSERT_COSTS = """
INSERT INTO ledger.upstream_costs
    (event_id, cause_id, request_id, attempt, occurred_at, day, channel_id, brand, route_type,
     catalog_model, account_id, key_id, project_id, served, currency, cost_micro)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::timestamptz[],
    $6::date[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
    $13::text[], $14::boolean[], $15::text[], $16::bigint[])
"""


async def insert(conn: asyncpg.Connection, rows: Sequence[CostRow]) -> None:
    """Append booked attempt costs (nothing when ``rows`` is empty)."""
    if not rows:
        return
    await conn.execute(
        INSERT_COSTS,
        [r.event_id for r in rows],
        [r.cause_id for r in rows],
        [r.request_id for r in rows],
        [r.attempt for r in rows],
        [r.occurred_at for r in rows],
        [r.day for r in rows],
        [r.channel_id for r in rows],
        [r.brand for r in rows],
        [r.route_type for r in rows],
        [r.catalog_model for r in rows],
        [r.account_id for r in rows],
        [r.key_id for r in rows],
        [r.project_id for r in rows],
        [r.served for r in rows],
        [r.currency for r in rows],
        [r.cost_micro for r in rows],
    )


async def book(conn: asyncpg.Connection, env: Envelope[AttemptFinished]) -> list[Outgoing]:
    """The per-event use case: journal the attempt's cost and write its row (once per id)."""
    booked = decide(env)
    if booked is None:
        return []
    message = await journal(conn, booked)
    await insert(conn, [row_of(booked)])
    return [message]
