"""A record whose handling fails does not take its batch with it.

The consumer applies a batch in one transaction without savepoints; when one record fails, the
whole transaction is rolled back and the batch applied again record by record. Every good record
of the batch must then be applied exactly once, its outbox messages published once, and only the
failing record dead-lettered.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.integration.consumer_kit import SeenHandler, create_schema, topup
from tollway.events.envelope import decode
from tollway.events.topics import TopicSpec, dlq_topic
from tollway.runtime.consumer import TransactionalConsumer
from tollway.runtime.kafka import ensure_topics, new_producer, partitions_of
from tollway.runtime.outbox import OutboxRelay

pytestmark = pytest.mark.integration

POISON = "poison"


async def _read_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen: list[Any] = []
        async with asyncio.timeout(60):
            while len(seen) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                seen.extend(m for msgs in batch.values() for m in msgs)
        # Anything published twice would arrive right behind: read a little longer.
        batch = await consumer.getmany(timeout_ms=1000)
        seen.extend(m for msgs in batch.values() for m in msgs)
        return seen
    finally:
        await consumer.stop()


async def _scenario(dsn: str, bootstrap: str) -> tuple[list[str], list[Any], list[Any], int]:
    run = uuid.uuid4().hex[:8]
    schema, topic, echo = f"poison_{run}", f"test.poison.{run}", f"test.poison-echo.{run}"
    await ensure_topics(
        bootstrap,
        [TopicSpec(name, 1, retention_ms=3_600_000) for name in (topic, echo, dlq_topic(topic))],
    )
    setup = await asyncpg.connect(dsn)
    await create_schema(setup, schema)
    keys = ["a", "b", POISON, "c", "d"]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        # One send per record, flushed together: the consumer sees them in one batch.
        futures = [
            await producer.send(
                topic,
                key=b"acct",
                value=topup(key),
            )
            for key in keys
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    out_producer = new_producer(bootstrap, "poison-test")
    await out_producer.start()
    handler = SeenHandler(schema, echo_topic=echo, poison=POISON)
    relay = OutboxRelay(pool, schema, out_producer)
    consumer = TransactionalConsumer(
        pool=pool,
        schema=schema,
        bootstrap=bootstrap,
        group_id=f"poison-{run}",
        topics=[topic],
        handler=handler,
        relay=relay,
    )
    tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(relay.run())]
    try:
        echoed = await _read_all(bootstrap, echo, expected=len(keys) - 1)
        dead = await _read_all(bootstrap, dlq_topic(topic), expected=1)
        rows = await setup.fetch(f"SELECT idem FROM {schema}.seen ORDER BY idem")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await out_producer.stop()
        await pool.close()
        await setup.execute(f"DROP SCHEMA {schema} CASCADE")
        await setup.close()
    return [r["idem"] for r in rows], echoed, dead, handler.calls


def test_a_failing_record_is_dead_lettered_and_the_rest_of_its_batch_applied_once(stack) -> None:
    seen, echoed, dead, calls = asyncio.run(_scenario(stack.dsn, stack.bootstrap))

    # The poison's own insert was rolled back with it; every other record was applied once.
    assert seen == ["a", "b", "c", "d"]
    echoed_keys = sorted(decode(m.value).payload.idempotency_key for m in echoed)  # type: ignore[attr-defined]
    assert echoed_keys == ["a", "b", "c", "d"], "each good record's message is published once"
    assert len(dead) == 1
    assert b"poison" in dead[0].value
    assert calls > 1, "the batch was applied again record by record after the failure"
