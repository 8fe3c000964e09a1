"""Every committed outbox row is published exactly once, in order, however it reaches a relay.

A relay publishes rows handed over in memory after their commit, and sweeps rows nobody handed
over from the table. Two relays of one schema (two instances of a service) may reach the same
rows both ways at once: the row locks decide which one publishes each row.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from tollway.events.topics import TopicSpec
from tollway.runtime.kafka import ensure_topics, new_producer, partitions_of
from tollway.runtime.outbox import OutboxRelay, Outgoing, outbox_ddl, write_outbox

pytestmark = pytest.mark.integration

ROWS = 600


async def _published(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        [tp] = await partitions_of(consumer, topic)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        async with asyncio.timeout(60):
            while len(values) < expected:
                batch = await consumer.getmany(tp, timeout_ms=500)
                values.extend(m.value for m in batch.get(tp, []))
        # A row published twice would arrive right behind the others.
        values.extend(m.value for m in (await consumer.getmany(tp, timeout_ms=1500)).get(tp, []))
        return values
    finally:
        await consumer.stop()


async def _scenario(dsn: str, bootstrap: str) -> list[bytes]:
    run = uuid.uuid4().hex[:8]
    schema, topic = f"relay_{run}", f"test.relay.{run}"
    await ensure_topics(bootstrap, [TopicSpec(topic, 1, retention_ms=3_600_000)])
    setup = await asyncpg.connect(dsn)
    await setup.execute(f"CREATE SCHEMA {schema}")
    await setup.execute(outbox_ddl(schema))
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=6)
    producers = [new_producer(bootstrap, f"relay-{n}") for n in range(2)]
    for producer in producers:
        await producer.start()
    # Relay A is handed every row; relay B only sweeps (it starts with a sweep pending).
    handed, sweeper = (OutboxRelay(pool, schema, p, batch=50) for p in producers)
    tasks = [
        asyncio.create_task(handed.run(idle_seconds=0.05)),
        asyncio.create_task(sweeper.run(idle_seconds=0.05)),
    ]
    try:
        for start in range(0, ROWS, 20):
            items = [Outgoing(topic, "k", str(n).encode()) for n in range(start, start + 20)]
            async with pool.acquire() as conn, conn.transaction():
                committed = await write_outbox(conn, schema, items)
            handed.kick(committed)
            sweeper.kick()
        values = await _published(bootstrap, topic, ROWS)
        left: Any = await setup.fetchval(f"SELECT count(*) FROM {schema}.outbox")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for producer in producers:
            await producer.stop()
        await pool.close()
        await setup.execute(f"DROP SCHEMA {schema} CASCADE")
        await setup.close()
    assert left == 0, "every published row is deleted from the outbox"
    return values


def test_two_relays_publish_each_committed_row_once(stack) -> None:
    values = asyncio.run(_scenario(stack.dsn, stack.bootstrap))

    numbers = [int(v) for v in values]
    assert sorted(numbers) == list(range(ROWS)), "each row exactly once"
