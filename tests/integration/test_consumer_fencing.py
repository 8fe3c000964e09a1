"""Two consumers of one group that both believe they own a partition: one commits, one is fenced.

The consumer keeps the offsets it stored in memory instead of reading (and locking) them for
every batch. A zombie - a consumer that lost its partition during a rebalance and has not noticed
yet - therefore works from an offset that is no longer the stored one. Its batch must then roll
back as a whole: no effect, no outbox row, no offset moved. After reading the stored offsets
again it skips what the other consumer applied and applies only what is new.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import asyncpg
import pytest
from aiokafka import TopicPartition

from tests.integration.consumer_kit import SeenHandler, create_schema, topup
from tollway.runtime.consumer import FencedError, TransactionalConsumer

pytestmark = pytest.mark.integration

TOPIC = "test.fencing"


@dataclass(frozen=True)
class _Message:
    """The fields of an aiokafka ConsumerRecord the consumer reads."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def _messages(first: int, keys: list[str]) -> list[_Message]:
    return [
        _Message(
            TOPIC,
            0,
            first + i,
            b"acct",
            topup(key),
        )
        for i, key in enumerate(keys)
    ]


async def _scenario(dsn: str, bootstrap: str) -> dict[str, object]:
    schema = f"fencing_{uuid.uuid4().hex[:8]}"
    setup = await asyncpg.connect(dsn)
    await create_schema(setup, schema)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    tp = TopicPartition(TOPIC, 0)

    def consumer(event_types: set[str] | None = None) -> TransactionalConsumer:
        # Never started: the test hands batches over itself, as getmany would.
        return TransactionalConsumer(
            pool=pool,
            schema=schema,
            bootstrap=bootstrap,
            group_id="fencing",
            topics=[TOPIC],
            handler=SeenHandler(schema, echo_topic="test.fencing-echo"),
            event_types=event_types,
        )

    owner, zombie = consumer(), consumer()
    try:
        await owner.load_stored([tp])
        await zombie.load_stored([tp])
        first = _messages(0, ["a", "b"])
        # Both believe nothing is stored yet; the owner commits first.
        await owner._apply({tp: first}, isolate=False)  # the unit under test
        fenced_on_create = False
        try:
            await zombie._apply({tp: first}, isolate=False)
        except FencedError:
            fenced_on_create = True
        # The owner moves on; the zombie, still at offset 0 in its own memory, redoes a batch.
        second = _messages(2, ["c"])
        await owner._apply({tp: second}, isolate=False)
        fenced_on_advance = False
        try:
            await zombie._apply({tp: [*first, *second]}, isolate=False)
        except FencedError:
            fenced_on_advance = True
        # Back in step after reading the stored offset: only the new record is applied.
        await zombie.load_stored([tp])
        await zombie._apply({tp: [*second, *_messages(3, ["d"])]}, isolate=False)
        # A zombie that only skipped records (types it does not handle) keeps their offsets in
        # memory; its quiet-time store is refused too, and names the partition to read again.
        skipper = consumer(event_types={"not.handled.here"})
        await skipper.load_stored([tp])
        await zombie._apply({tp: _messages(4, ["e"])}, isolate=False)
        await skipper._apply({tp: _messages(4, ["e"])}, isolate=False)  # skipped: no store yet
        fenced_partitions: list[TopicPartition] = []
        try:
            await skipper._apply({}, isolate=False)
        except FencedError as exc:
            fenced_partitions = exc.partitions
        seen = [r["idem"] for r in await setup.fetch(f"SELECT idem FROM {schema}.seen")]
        outbox = await setup.fetchval(f"SELECT count(*) FROM {schema}.outbox")
        stored = await setup.fetchval(f"SELECT next_offset FROM {schema}.consumer_offsets")
    finally:
        await pool.close()
        await setup.execute(f"DROP SCHEMA {schema} CASCADE")
        await setup.close()
    return {
        "fenced_on_create": fenced_on_create,
        "fenced_on_advance": fenced_on_advance,
        "seen": sorted(seen),
        "outbox": outbox,
        "stored": stored,
        "fenced_partitions": fenced_partitions,
    }


def test_a_zombie_consumer_is_fenced_and_its_batch_leaves_nothing_behind(stack) -> None:
    result = asyncio.run(_scenario(stack.dsn, stack.bootstrap))

    assert result["fenced_on_create"], "a second first-store of the partition must be refused"
    assert result["fenced_on_advance"], "a store from a stale offset must be refused"
    assert result["seen"] == ["a", "b", "c", "d", "e"], "every record applied exactly once"
    assert result["outbox"] == 5, "a fenced batch leaves no outbox row"
    assert result["stored"] == 5
    assert result["fenced_partitions"] == [TopicPartition(TOPIC, 0)], (
        "a refused store of skipped offsets names their partition, to be read again"
    )
