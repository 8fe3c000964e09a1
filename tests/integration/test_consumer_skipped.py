"""Skipped records wait for no transaction of their own, yet their offsets are stored.

A group that names the event types it handles skips the others. A batch of only skipped records
has no effect to make durable, so the consumer keeps its offsets in memory: they are stored with
the next batch that has effects, or on their own once the stream goes quiet. Either way the
stored offset reaches the end of the log, and a handled record among skipped ones is applied
exactly once.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from tests.integration.consumer_kit import SeenHandler, create_schema, topup
from tollway.events.gateway import TopUpRequested
from tollway.events.topics import TopicSpec
from tollway.runtime.consumer import TransactionalConsumer
from tollway.runtime.kafka import ensure_topics, new_producer

pytestmark = pytest.mark.integration


def _other(n: int) -> bytes:
    return b'{"id": "other-%d", "type": "not.handled.here", "version": 1}' % n


async def _stored(conn: asyncpg.Connection, schema: str) -> int | None:
    value: int | None = await conn.fetchval(f"SELECT next_offset FROM {schema}.consumer_offsets")
    return value


async def _wait_stored(conn: asyncpg.Connection, schema: str, expected: int) -> None:
    async with asyncio.timeout(30):
        while await _stored(conn, schema) != expected:
            await asyncio.sleep(0.05)


async def _scenario(dsn: str, bootstrap: str) -> tuple[list[str], int | None, int | None]:
    run = uuid.uuid4().hex[:8]
    schema, topic = f"skipped_{run}", f"test.skipped.{run}"
    await ensure_topics(bootstrap, [TopicSpec(topic, 1, retention_ms=3_600_000)])
    setup = await asyncpg.connect(dsn)
    await create_schema(setup, schema)
    producer = new_producer(bootstrap, "skipped-test")
    await producer.start()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    consumer = TransactionalConsumer(
        pool=pool,
        schema=schema,
        bootstrap=bootstrap,
        group_id=f"skipped-{run}",
        topics=[topic],
        handler=SeenHandler(schema),
        event_types={TopUpRequested.TYPE},
    )
    task = asyncio.create_task(consumer.run())
    try:
        # Skipped records only: stored once the stream is quiet.
        for n in range(5):
            await producer.send_and_wait(topic, _other(n), key=b"acct")
        await _wait_stored(setup, schema, 5)
        after_skipped = await _stored(setup, schema)
        # A handled record between skipped ones: applied once, and the offset reaches the end.
        for value in (_other(5), topup("a"), _other(6), _other(7)):
            await producer.send_and_wait(topic, value, key=b"acct")
        await _wait_stored(setup, schema, 9)
        seen = [r["idem"] for r in await setup.fetch(f"SELECT idem FROM {schema}.seen")]
        at_end = await _stored(setup, schema)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await pool.close()
        await setup.execute(f"DROP SCHEMA {schema} CASCADE")
        await setup.close()
    return seen, after_skipped, at_end


def test_skipped_records_offsets_are_stored_when_quiet_and_handled_ones_applied_once(stack) -> None:
    seen, after_skipped, at_end = asyncio.run(_scenario(stack.dsn, stack.bootstrap))

    assert after_skipped == 5, "a quiet stream stores the offsets of what it skipped"
    assert seen == ["a"], "the handled record is applied exactly once"
    assert at_end == 9
