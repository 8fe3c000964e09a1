"""The live resident ledger against the pure fold a replay runs, on the real Postgres.

For random logs of top-ups, requests, attempts, finishes, extensions, clock ticks, reversals and
re-ratings, applied live by a resident handler in batches of random sizes (with batches that
fail and are applied again, and rebalances that load the partition again in bulk), the replay's
fold over the same log (one in-memory state, written out in bulk at the end) leaves the same
digest, table by table; and the state it decided over equals the live ledger's memory.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.scratch_db import scratch_database
from tests.integration.test_ledger_fold import CREDIT, STEPS, T0, build_log
from tests.integration.test_ledger_resident import (
    BATCHES,
    SERVICES,
    _apply_batch,
    _BatchFailedError,
    _rebalance,
)
from tollway.events.envelope import make
from tollway.events.gateway import RerateRequested
from tollway.events.pricing import Price
from tollway.ledger import finance_store, replay
from tollway.ledger.handlers import LedgerHandler
from tollway.runtime.consumer import Record

if TYPE_CHECKING:
    from tests.integration.test_ledger_fold import Log
    from tollway.ledger.replay_fold import Folder
    from tollway.ledger.resident import Memory

pytestmark = pytest.mark.integration

# Re-ratings of the credit channel's charges so far, inserted after the step they name.
RERATES = st.lists(st.tuples(st.integers(0, 40), st.integers(1, 900_000)), max_size=2)


@pytest.fixture(scope="module")
def loop_and_template(stack: Any) -> Any:
    """An event loop, the server's DSN and a migrated database to copy for each example."""
    loop = asyncio.new_event_loop()
    template = urlsplit(loop.run_until_complete(scratch_database(stack.dsn, SERVICES))).path[1:]
    yield loop, stack.dsn, template
    loop.close()


async def _fresh(dsn: str, template: str) -> str:
    """An empty ledger (a replay starts from one; a tick of the live ledger sees every hold)."""
    name = f"pure_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return replay.target_dsn(dsn, name)


async def _drop(dsn: str, target: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{urlsplit(target).path[1:]}" WITH (FORCE)')
    finally:
        await conn.close()


def _with_rerates(log: Log, rerates: list[tuple[int, int]]) -> list[Record]:
    envelopes = list(log.envelopes)
    for at, output_price in sorted(rerates, reverse=True):
        i = min(at, len(envelopes))
        rerate = RerateRequested(
            account_id=log.account,
            correction_id=uuid.uuid4().hex,
            channel_id=CREDIT.channel_id,
            bucket="credit",
            period_from=T0,
            period_to=T0 + timedelta(days=1),
            prices=Price(input=150_000, output=output_price),
            reason="test",
        )
        occurred = envelopes[i - 1].occurred_at if i else T0
        envelopes.insert(i, make(rerate, occurred_at=occurred))
    return [Record("t", 0, i, log.account, env) for i, env in enumerate(envelopes)]


async def _live(conn: asyncpg.Connection, recs: list[Record], batches: list[Any]) -> Memory | None:
    """The log applied by the resident handler, as the consumer does; its memory after."""
    handler = LedgerHandler(resident=True)
    i = n = 0
    while i < len(recs):
        size, what = batches[n % len(batches)]
        n += 1
        batch = recs[i : i + size]
        if what == "fail":
            with pytest.raises(_BatchFailedError):
                await _apply_batch(conn, handler, batch, fail=True)
        elif what == "rebalance":
            await _rebalance(conn, handler)
        await _apply_batch(conn, handler, batch, fail=False)
        i += size
    return handler.memory(0)


def _same_state(memory: Memory | None, folder: Folder) -> None:
    """What the live ledger keeps in memory is what the fold decided over."""
    if memory is None:
        return
    live, pure = memory.state, folder.state
    for account in memory.accounts:
        mine = {k: v for k, v in live.units.items() if k[0] == account}
        assert mine == {k: v for k, v in pure.units.items() if k[0] == account}
        for (acct, bucket), unit in mine.items():
            assert live.available(acct, bucket, unit) == pure.available(acct, bucket, unit)
    for request_id in memory.requests:
        assert live.holds.get(request_id, ()) == pure.holds.get(request_id, ())
        here, there = live.receipts.get(request_id), pure.receipts.get(request_id)
        assert (here and (here.status, here.body)) == (there and (there.status, there.body))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=STEPS, rerates=RERATES, batches=BATCHES)
def test_the_pure_fold_of_a_log_equals_the_live_ledger_that_applied_it(
    loop_and_template: Any,
    steps: list[tuple[Any, ...]],
    rerates: list[tuple[int, int]],
    batches: list[tuple[int, str]],
) -> None:
    loop, dsn, template = loop_and_template
    recs = _with_rerates(build_log(steps), rerates)

    async def run() -> tuple[Any, Any]:
        live_dsn, replay_dsn = await _fresh(dsn, template), await _fresh(dsn, template)
        live = await asyncpg.connect(live_dsn)
        pure = await asyncpg.connect(replay_dsn)
        try:
            memory = await _live(live, recs, batches)
            folder = await replay.fold_records(pure, recs)
            await replay.write_out(pure, folder)
            assert not folder.pending.applied  # everything written
            _same_state(memory, folder)
            return (
                await finance_store.table_digests(live),
                await finance_store.table_digests(pure),
            )
        finally:
            await live.close()
            await pure.close()
            await _drop(dsn, live_dsn)
            await _drop(dsn, replay_dsn)

    expected, replayed = loop.run_until_complete(run())
    assert replayed == expected
    assert finance_store.combine(replayed) == finance_store.combine(expected)
