"""A clock tick expires only holds whose request the ledger had applied when the tick was made.

Live, the ledger interleaves gw.requests and gw.usage as they arrive; a replay reconstructs that
interleaving only where the journal pins it. A request applied after an idle tick (its deadline
already past, under load) must therefore not be expirable by that tick, or a replay that applies
the request first would expire it with another tick than live did. The tick carries the
requests' position (``requests_before``) and the hold its request's offset.

Budgets follow a hold's end: an expired hold stops counting against them, and a late capture of
it counts as spend, exactly once.
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
from tollway.events.ids import derived_id
from tollway.events.ledger import ClockTicked
from tollway.events.limits import BudgetSet
from tollway.events.pricing import Usage, cost_micro
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


async def _budget_usage_through_expiry_and_late_capture(dsn: str) -> list[tuple[int, int]]:
    """(held, spent) of an account budget: after the hold, after expiry, after a late capture."""
    target = await replay.fresh_database(dsn, f"expiry_{uuid.uuid4().hex[:8]}")
    conn = await asyncpg.connect(target)
    account = f"acct-{uuid.uuid4().hex[:6]}"
    partition = partition_of(account, PARTITIONS)
    topup = TopUpRequested(
        account_id=account,
        bucket="credit",
        unit="credit",
        amount_micro=10_000_000,
        idempotency_key=uuid.uuid4().hex,
    )
    budget = BudgetSet(
        budget_id=f"bud-{account}",
        account_id=account,
        name="all",
        scope="account",
        scope_id=account,
        unit="credit",
        bucket="credit",
        amount=5_000_000,
    )
    request = io.request(account, "edge-test", deadline_in=timedelta(minutes=-5))
    hold_id = "hold_" + derived_id(request.id, "hold")
    tick = ClockTicked(
        partition=partition,
        partitions=PARTITIONS,
        expire_before=utcnow(),
        requests_before=REQUEST_OFFSET + 1,
    )
    steps = [
        [
            Record(topics.REQUESTS, partition, 0, account, make(topup)),
            Record(topics.REQUESTS, partition, 1, account, make(budget)),
            Record(topics.REQUESTS, partition, REQUEST_OFFSET, account, request),
        ],
        [Record(topics.USAGE, partition, 0, None, make(tick))],
        [Record(topics.USAGE, partition, 1, account, io.served(request.payload, hold_id, USED))],
    ]
    sums = []
    try:
        for records in steps:
            async with conn.transaction():
                await LedgerHandler()(conn, records)
            row = await conn.fetchrow(
                "SELECT sum(held)::bigint AS held, sum(spent)::bigint AS spent"
                " FROM ledger.budget_usage WHERE budget_id = $1",
                budget.budget_id,
            )
            sums.append((row["held"], row["spent"]))
    finally:
        await conn.close()
    return sums


USED = Usage(input_tokens=100, output_tokens=200)


def test_an_expired_hold_stops_counting_against_a_budget_and_a_late_capture_counts_as_spend(
    stack,
) -> None:
    held, expired, captured = asyncio.run(_budget_usage_through_expiry_and_late_capture(stack.dsn))
    charged = cost_micro(USED, io.CHANNEL.price)
    assert held[0] > 0
    assert held[1] == 0
    assert expired == (0, 0)
    assert captured == (0, charged)
