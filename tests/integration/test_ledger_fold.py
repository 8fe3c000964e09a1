"""The folded hot path in batches against the same log one record at a time, on Postgres.

For random logs of top-ups (some retried with their key, the same or another payload),
requests (one or two buckets, some beyond the balance), attempts (served, failed, cut
mid-stream), finishes (served, not served, by the fallback bucket), extensions, clock ticks,
reversals (of charges and top-ups, some beyond what is left, some retried), adjustments and
price-table changes, the ledger handler applied in batches of random sizes
(runs folded in memory, written in bulk) leaves every projection identical, row for row, to
the same log applied one record at a time, each over its partition's state read again from
Postgres (the hot path's records folded alone; top-ups and reversals through their use cases).
And a batch that fails leaves nothing behind: the batches after it apply as if it never came.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from aiokafka import TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.scratch_db import scratch_database
from tollway.events.envelope import Envelope, encode, make
from tollway.events.gateway import (
    AdjustmentRequested,
    AttemptFinished,
    Candidate,
    HoldExtensionRequested,
    RequestFinished,
    RequestReceived,
    ReversalRequested,
    TopUpRequested,
)
from tollway.events.ids import derived_id
from tollway.events.ledger import ClockTicked
from tollway.events.pricing import Price, Usage
from tollway.events.routing import PriceTableChangeRequested
from tollway.ledger import finance_store
from tollway.ledger.fold import DuplicateRequestError
from tollway.ledger.handlers import LedgerHandler
from tollway.runtime.consumer import FencedError, Record, TransactionalConsumer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tollway.runtime.outbox import Outgoing

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CREDIT = Candidate(
    channel_id="direct-a",
    channel="direct-a",
    brand="b",
    route_type="direct",
    bucket="credit",
    upstream_model="m",
    price=Price(input=150_000, output=600_000),
)
WALLET = CREDIT.model_copy(
    update={"channel_id": "pool-b", "channel": "pool-b", "route_type": "pool", "bucket": "wallet"}
)


class PerEventHandler(LedgerHandler):
    """The same handler with every record applied on its own over state read from Postgres."""

    async def _fold_run(self, conn: asyncpg.Connection, run: list[Record]) -> list[Outgoing]:
        return await self._one_by_one(conn, run)


@dataclass
class Log:
    """A log being written: envelopes in order, with the time and the requests so far."""

    account: str
    envelopes: list[Envelope[Any]] = field(default_factory=list)
    requests: list[Envelope[RequestReceived]] = field(default_factory=list)
    settlements: list[str] = field(default_factory=list)
    topups: list[Envelope[TopUpRequested]] = field(default_factory=list)
    reversals: list[Envelope[ReversalRequested]] = field(default_factory=list)
    prices: dict[str, Price] = field(default_factory=dict)
    clock: datetime = T0

    def add(self, payload: Any, *, event_id: str | None = None) -> Envelope[Any]:
        self.clock += timedelta(seconds=1)
        env = make(payload, occurred_at=self.clock, event_id=event_id)
        self.envelopes.append(env)
        return env


def _topup(log: Log, bucket: str, amount: int) -> None:
    key = uuid.uuid4().hex
    env = log.add(
        TopUpRequested(
            account_id=log.account,
            bucket=bucket,
            unit=bucket,
            amount_micro=amount,
            idempotency_key=key,
        )
    )
    log.topups.append(env)


def _again(log: Log, earlier: list[Envelope[Any]], pick: int, same: bool) -> None:
    """A command sent again with its key: the same payload, or another amount (refused)."""
    if not earlier:
        return
    p = earlier[pick % len(earlier)].payload
    log.add(p if same else p.model_copy(update={"amount_micro": p.amount_micro + 1}))


def _reverse(log: Log, original: str, amount: int) -> None:
    env = log.add(
        ReversalRequested(
            account_id=log.account,
            original_event_id=original,
            amount_micro=amount,
            reason="test",
            idempotency_key=uuid.uuid4().hex,
        )
    )
    log.reversals.append(env)


def _adjust(log: Log, bucket: str, amount: int) -> None:
    log.add(
        AdjustmentRequested(
            account_id=log.account,
            bucket=bucket,
            unit=bucket,
            amount_micro=amount,
            reason="test",
            idempotency_key=uuid.uuid4().hex,
        )
    )


def _price(log: Log, channel: int, output: int) -> None:
    """A channel's prices set (the same as before: no new version)."""
    channel_id = f"{log.account}-ch{channel}"
    previous, prices = log.prices.get(channel_id), Price(input=150_000, output=output)
    log.prices[channel_id] = prices
    log.add(
        PriceTableChangeRequested(
            channel_id=channel_id,
            bucket="credit",
            previous=previous,
            prices=prices,
            actor="ops",
            action="channel.update",
            audit_id=1,
        )
    )


def _request(log: Log, two_buckets: bool, max_out: int) -> None:
    env = log.add(
        RequestReceived(
            request_id=f"req_{uuid.uuid4().hex}",
            edge_id="e",
            account_id=log.account,
            key_id="k",
            project_id="p",
            catalog_model="m",
            body={},
            plan=[CREDIT, WALLET] if two_buckets else [CREDIT],
            estimated_input_tokens=100,
            max_output_tokens=max_out,
            deadline_at=log.clock + timedelta(seconds=20),
        )
    )
    log.requests.append(env)


def _attempt(log: Log, req: Envelope[RequestReceived], n: int, outcome: str, wallet: bool) -> None:
    log.add(
        AttemptFinished(
            request_id=req.payload.request_id,
            account_id=log.account,
            attempt=n,
            candidate=WALLET if wallet else CREDIT,
            outcome="ok" if outcome == "ok" else "http_error",
            status=200 if outcome == "ok" else 502,
            error_class=None if outcome == "ok" else "cut",
            latency_ms=10,
            usage=Usage(input_tokens=100, output_tokens=40 * n),
            delivered=outcome == "cut",
        )
    )


def _finish(log: Log, req: Envelope[RequestReceived], served: bool, wallet: bool) -> None:
    channel = WALLET if wallet else CREDIT
    env = log.add(
        RequestFinished(
            request_id=req.payload.request_id,
            account_id=log.account,
            hold_id="hold_" + derived_id(req.id, "hold"),
            served_attempt=1 if served else None,
            served_channel_id=channel.channel_id if served else None,
            served_bucket=channel.bucket if served else None,
            usage=Usage(input_tokens=100, output_tokens=40),
            price=channel.price if served else None,
            status=200 if served else 502,
            attempts=1,
            fallbacks=1 if wallet else 0,
        )
    )
    if served:
        log.settlements.append(derived_id(env.id, "hold_settled"))


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("topup"), st.sampled_from(["credit", "wallet"]), st.integers(1, 3000)),
        st.tuples(st.just("request"), st.booleans(), st.integers(1, 4000)),
        st.tuples(
            st.just("attempt"),
            st.integers(0, 30),
            st.sampled_from(["ok", "failed", "cut"]),
            st.booleans(),
        ),
        st.tuples(st.just("finish"), st.integers(0, 30), st.booleans(), st.booleans()),
        st.tuples(st.just("extend"), st.integers(0, 30), st.integers(1, 60)),
        st.tuples(st.just("tick"), st.integers(0, 40)),
        st.tuples(st.just("reverse"), st.integers(0, 10), st.integers(1, 500)),
        st.tuples(st.just("reverse_topup"), st.integers(0, 10), st.integers(1, 2_000_000)),
        st.tuples(st.just("reverse_unknown"), st.integers(1, 500)),
        st.tuples(st.just("topup_again"), st.integers(0, 10), st.booleans()),
        st.tuples(st.just("reverse_again"), st.integers(0, 10), st.booleans()),
        st.tuples(
            st.just("adjust"),
            st.sampled_from(["credit", "wallet", "points"]),
            st.integers(-3000, 3000),
        ),
        st.tuples(st.just("price"), st.integers(0, 2), st.sampled_from([600_000, 700_000])),
    ),
    min_size=1,
    max_size=40,
)


def build_log(steps: Sequence[tuple[Any, ...]]) -> Log:
    """The envelopes ``steps`` describe, for a fresh account (amounts in micro-units x 1000)."""
    log = Log(account=f"acct-{uuid.uuid4().hex[:12]}")
    for step in steps:
        kind, args = step[0], step[1:]
        pick = args[0] if isinstance(args[0], int) else 0
        req = log.requests[pick % len(log.requests)] if log.requests else None
        if kind == "topup":
            _topup(log, args[0], args[1] * 1000)
        elif kind == "request":
            _request(log, args[0], args[1])
        elif kind == "attempt" and req is not None:
            _attempt(log, req, 1 + args[0] % 2, args[1], args[2])
        elif kind == "finish" and req is not None:
            _finish(log, req, args[1], args[2])
        elif kind == "extend" and req is not None:
            deadline = req.payload.deadline_at + timedelta(seconds=args[1])
            hold_id = "hold_" + derived_id(req.id, "hold")
            log.add(
                HoldExtensionRequested(
                    request_id=req.payload.request_id,
                    account_id=log.account,
                    hold_id=hold_id,
                    deadline_at=deadline,
                )
            )
        elif kind == "tick":
            cutoff = log.clock - timedelta(seconds=args[0])
            log.add(ClockTicked(partition=0, partitions=1, expire_before=cutoff))
        else:
            _operator_step(log, kind, args)
    return log


def _operator_step(log: Log, kind: str, args: tuple[Any, ...]) -> None:
    """Reversals, retried keys, adjustments and price changes (see :data:`STEPS`)."""
    if kind == "reverse" and log.settlements:
        _reverse(log, log.settlements[args[0] % len(log.settlements)], args[1])
    elif kind == "reverse_topup" and log.topups:
        topup = log.topups[args[0] % len(log.topups)]
        _reverse(log, derived_id(topup.id, "topped_up"), args[1])
    elif kind == "reverse_unknown":
        _reverse(log, f"evt_{uuid.uuid4().hex}", args[0])
    elif kind in {"topup_again", "reverse_again"}:
        _again(log, log.topups if kind == "topup_again" else log.reversals, args[0], args[1])
    elif kind == "adjust":
        _adjust(log, args[0], args[1] * 1000)
    elif kind == "price":
        _price(log, args[0], args[1])


def records(log: Log) -> list[Record]:
    """The log as the consumer hands it over (one partition, offsets in log order)."""
    return [Record("t", 0, i, log.account, env) for i, env in enumerate(log.envelopes)]


async def apply(
    conn: asyncpg.Connection, handler: LedgerHandler, recs: list[Record], sizes: list[int]
) -> None:
    """Apply ``recs`` in batches of ``sizes`` (cycled), one transaction each."""
    i = n = 0
    while i < len(recs):
        size = sizes[n % len(sizes)]
        async with conn.transaction():
            await handler(conn, recs[i : i + size])
        i, n = i + size, n + 1


@dataclass
class Databases:
    """One database applied per event, one by the folding handler, one loop for both."""

    per_event: asyncpg.Connection
    folded: asyncpg.Connection
    loop: asyncio.AbstractEventLoop


@pytest.fixture(scope="module")
def databases(stack: Any) -> Any:
    loop = asyncio.new_event_loop()

    async def open_both() -> Databases:
        services = {"ledger": "tollway.ledger"}
        a = await asyncpg.connect(await scratch_database(stack.dsn, services))
        b = await asyncpg.connect(await scratch_database(stack.dsn, services))
        return Databases(a, b, loop)

    dbs = loop.run_until_complete(open_both())
    yield dbs
    loop.run_until_complete(dbs.per_event.close())
    loop.run_until_complete(dbs.folded.close())
    loop.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=STEPS, sizes=st.lists(st.integers(1, 12), min_size=1, max_size=5))
def test_folded_batches_equal_the_log_applied_event_by_event(
    databases: Databases, steps: list[tuple[Any, ...]], sizes: list[int]
) -> None:
    recs = records(build_log(steps))

    async def run() -> tuple[Any, Any]:
        await apply(databases.per_event, PerEventHandler(), recs, [1])
        await apply(databases.folded, LedgerHandler(), recs, sizes)
        return (
            await finance_store.table_digests(databases.per_event),
            await finance_store.table_digests(databases.folded),
        )

    per_event, folded = databases.loop.run_until_complete(run())
    assert folded == per_event


# Every operator command next to the hot path: top-ups (one retried, one reused), charges and
# top-ups reversed (partly, beyond what is left, retried, reused, unknown), adjustments (credit,
# debit, a bucket never funded, zero), price changes (new, unchanged, changed), then a bucket
# funded after all that and spent on.
OPERATOR_STEPS: list[tuple[Any, ...]] = [
    ("topup", "credit", 3000),
    ("topup", "wallet", 500),
    ("price", 0, 600_000),
    ("request", False, 500),
    ("request", True, 800),
    ("request", False, 300),
    ("attempt", 0, "ok", False),
    ("finish", 0, True, False),
    ("attempt", 1, "failed", False),
    ("attempt", 1, "ok", True),
    ("finish", 1, True, True),
    ("reverse", 0, 3),
    ("reverse", 0, 10**6),
    ("reverse_again", 0, True),
    ("reverse_again", 0, False),
    ("reverse", 1, 1),
    ("reverse", 1, 1),
    ("reverse", 0, 1),
    ("reverse_topup", 0, 1000),
    ("reverse_topup", 0, 3_000_000),
    ("reverse_topup", 1, 1),
    ("reverse_unknown", 5),
    ("topup_again", 0, True),
    ("topup_again", 1, False),
    ("adjust", "credit", 5),
    ("adjust", "credit", -7),
    ("adjust", "points", 3),
    ("adjust", "wallet", 0),
    ("price", 0, 600_000),
    ("price", 0, 700_000),
    ("price", 1, 700_000),
    ("finish", 2, False, False),
    ("tick", 0),
    ("topup", "points", 1),
    ("request", False, 4000),
    ("finish", 3, True, False),
    ("reverse", 2, 2),
    ("reverse", 2, 100_000),
]


async def _apply_resident(conn: asyncpg.Connection, recs: list[Record], size: int) -> None:
    """``recs`` in batches of ``size`` through a resident handler told of each commit (so what
    a batch settled is evicted from memory, and loaded again when a reversal names it)."""
    handler = LedgerHandler(resident=True)
    for i in range(0, len(recs), size):
        async with conn.transaction():
            await handler(conn, recs[i : i + size])
        handler.committed()


@pytest.mark.parametrize("size", [2, 5, len(OPERATOR_STEPS)])
def test_operator_commands_folded_with_the_hot_path_equal_them_applied_alone(
    databases: Databases, size: int
) -> None:
    recs = records(build_log(OPERATOR_STEPS))

    async def run() -> tuple[Any, Any, Any]:
        await apply(databases.per_event, PerEventHandler(), recs, [1])
        await _apply_resident(databases.folded, recs, size)
        kinds = await databases.folded.fetch(
            "SELECT DISTINCT type FROM ledger.journal WHERE account_id = $1", recs[0].key
        )
        return (
            await finance_store.table_digests(databases.per_event),
            await finance_store.table_digests(databases.folded),
            {r["type"] for r in kinds},
        )

    per_event, folded, kinds = databases.loop.run_until_complete(run())
    assert folded == per_event
    assert {
        "ledger.topped_up",
        "ledger.topup_refused",
        "ledger.hold_settled",
        "ledger.reversed",
        "ledger.correction_refused",
        "ledger.adjusted",
    } <= kinds


def test_a_failed_batch_leaves_no_partial_state(databases: Databases) -> None:
    log = build_log(
        [
            ("topup", "credit", 3000),
            ("request", False, 500),
            ("request", True, 500),
            ("attempt", 0, "failed", False),
            ("attempt", 0, "ok", False),
            ("finish", 0, True, False),
            ("request", False, 900),
        ]
    )
    first, second = records(log)[:3], records(log)[3:]
    again = log.requests[1].model_copy(update={"id": f"evt_{uuid.uuid4().hex}"})
    poisoned = [*second, Record("t", 0, 99, log.account, again)]

    async def run() -> tuple[Any, Any]:
        conn = databases.folded
        await apply(conn, LedgerHandler(), first, [3])
        before = await finance_store.table_digests(conn)
        with pytest.raises(DuplicateRequestError):
            async with conn.transaction():
                await LedgerHandler().__call__(conn, poisoned)
        after_failure = await finance_store.table_digests(conn)
        assert after_failure == before
        await apply(conn, LedgerHandler(), second, [len(second)])
        await apply(databases.per_event, PerEventHandler(), records(log), [1])
        return (
            await finance_store.table_digests(databases.per_event),
            await finance_store.table_digests(conn),
        )

    per_event, folded = databases.loop.run_until_complete(run())
    assert folded == per_event


@dataclass(frozen=True)
class _Message:
    """The fields of an aiokafka ConsumerRecord the consumer reads."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def test_a_rebalance_mid_load_loses_and_doubles_nothing(stack: Any) -> None:
    """Two ledger consumers of one partition: the one that lost it is fenced, batch and all.

    The new owner applies the first half; the old owner, still believing it owns the partition,
    folds an overlapping batch (its state loaded and its effects written in its transaction)
    and is fenced, leaving nothing; given the partition back, it reads the stored offset and
    applies only the rest. The result equals the whole log applied event by event.
    """
    steps: list[tuple[Any, ...]] = [("topup", "credit", 3000), ("topup", "wallet", 500)]
    for i in range(12):
        steps += [("request", i % 2 == 0, 300 + 50 * i)]
    for i in range(12):
        steps += [("attempt", i, "ok", False), ("finish", i, i % 3 != 0, i % 4 == 1)]
    log = build_log(steps)
    messages = [
        _Message("gw.test", 0, i, log.account.encode(), encode(env))
        for i, env in enumerate(log.envelopes)
    ]
    half = len(messages) // 2
    tp = TopicPartition("gw.test", 0)

    async def run() -> tuple[Any, Any, bool, int]:
        services = {"ledger": "tollway.ledger"}
        target = await scratch_database(stack.dsn, services)
        reference = await asyncpg.connect(await scratch_database(stack.dsn, services))
        pool = await asyncpg.create_pool(target, min_size=1, max_size=3)

        def consumer() -> TransactionalConsumer:
            return TransactionalConsumer(
                pool=pool,
                schema="ledger",
                bootstrap=stack.bootstrap,
                group_id="ledger",
                topics=["gw.test"],
                handler=LedgerHandler(),
            )

        old_owner, new_owner = consumer(), consumer()
        try:
            await old_owner.load_stored([tp])
            await new_owner.load_stored([tp])
            await new_owner._apply({tp: messages[:half]}, isolate=False)  # the unit under test
            fenced = False
            try:
                await old_owner._apply({tp: messages[: half + 5]}, isolate=False)
            except FencedError:
                fenced = True
            await old_owner.load_stored([tp])  # assigned again: read the stored offset
            await old_owner._apply({tp: messages[half - 3 :]}, isolate=False)
            await apply(reference, PerEventHandler(), records(log), [1])
            async with pool.acquire() as conn:
                applied = await conn.fetchval("SELECT count(*) FROM ledger.applied_events")
                return (
                    await finance_store.table_digests(conn),
                    await finance_store.table_digests(reference),
                    fenced,
                    applied,
                )
        finally:
            await pool.close()
            await reference.close()

    live, expected, fenced, applied = asyncio.run(run())
    assert fenced
    assert applied == len(messages)
    assert live == expected
