"""A clock tick expires only holds whose request the ledger had applied when the tick was made.

Live, the ledger interleaves gw.requests and gw.usage as they arrive; a replay reconstructs that
interleaving only where the journal pins it. A request applied after an idle tick (its deadline
already past, under load) must therefore not be expirable by that tick, or a replay that applies
the request first would expire it with another tick than live did. The tick carries the
requests' position (``requests_before``) and the hold its request's offset.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import pytest

from tests.integration import ledger_io as io
from tollway.events import topics
from tollway.events.envelope import make, utcnow
from tollway.events.gateway import TopUpRequested
from tollway.events.ledger import ClockTicked
from tollway.ledger import replay
from tollway.ledger.expiry import partition_of
from tollway.ledger.handlers import LedgerHandler
from tollway.runtime.consumer import Record

pytestmark = pytest.mark.integration

PARTITIONS = 4
REQUEST_OFFSET = 7


async def _hold_status_after_ticks(dsn: str, requests_before: list[int | None]) -> str:
    target = await replay.fresh_database(dsn, f"expiry_{uuid.uuid4().hex[:8]}")
    conn = await asyncpg.connect(target)
    account = f"acct-{uuid.uuid4().hex[:6]}"
    partition = partition_of(account, PARTITIONS)
    topup = make(
        TopUpRequested(
            account_id=account,
            bucket="credit",
            unit="credit",
            amount_micro=10_000_000,
            idempotency_key=uuid.uuid4().hex,
        )
    )
    request = io.request(account, "edge-test", deadline_in=timedelta(minutes=-5))
    records = [
        Record(topics.REQUESTS, partition, REQUEST_OFFSET - 1, account, topup),
        Record(topics.REQUESTS, partition, REQUEST_OFFSET, account, request),
    ]
    for n, before in enumerate(requests_before):
        tick = ClockTicked(
            partition=partition,
            partitions=PARTITIONS,
            expire_before=utcnow(),
            requests_before=before,
        )
        records.append(Record(topics.USAGE, partition, n, None, make(tick)))
    try:
        async with conn.transaction():
            await LedgerHandler()(conn, records)
        status: str = await conn.fetchval(
            "SELECT status FROM ledger.holds WHERE request_id = $1", request.payload.request_id
        )
    finally:
        await conn.close()
    return status


@pytest.mark.parametrize(
    ("requests_before", "status"),
    [
        ([REQUEST_OFFSET], "open"),  # made before the request was applied: not its to expire
        ([REQUEST_OFFSET, REQUEST_OFFSET + 1], "expired"),  # the next tick knows it
        ([None], "expired"),  # ticks from before the field existed: every overdue hold
    ],
)
def test_a_tick_expires_only_holds_of_requests_applied_before_it(
    stack, requests_before, status
) -> None:
    assert asyncio.run(_hold_status_after_ticks(stack.dsn, requests_before)) == status
