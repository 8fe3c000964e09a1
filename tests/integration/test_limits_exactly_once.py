"""The limits service counts every usage event exactly once: redelivered duplicates and a
kill -9 in the middle of a stream neither lose nor double-count tokens in its windows."""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from tests.conftest import wait_for
from tollway.events import topics
from tollway.events.envelope import Envelope, Trace, encode, make
from tollway.events.gateway import AttemptFinished, Candidate
from tollway.events.pricing import Price, Usage

pytestmark = pytest.mark.integration

CANDIDATE = Candidate(
    channel_id="bench-none",
    channel="bench-none",
    brand="openai",
    route_type="direct",
    bucket="credit",
    upstream_model="m",
    price=Price(input=1, output=1),
)


def attempt(account: str, key_id: str, tokens: int) -> Envelope[AttemptFinished]:
    request_id = f"req_{uuid.uuid4()}"
    payload = AttemptFinished(
        request_id=request_id,
        account_id=account,
        attempt=1,
        candidate=CANDIDATE,
        outcome="ok",
        latency_ms=1,
        usage=Usage(input_tokens=tokens),
        key_id=key_id,
        project_id=f"proj-{key_id}",
    )
    return make(payload, trace=Trace(request_id=request_id))


async def _publish(bootstrap: str, envelopes: list[Envelope[Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topics.USAGE, value=encode(e), key=e.payload.account_id.encode())
            for e in envelopes
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _fetchval(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def counted(stack: Any, key_id: str) -> int:
    sql = (
        "SELECT COALESCE(sum(amount), 0) FROM limits.window_slots"
        " WHERE scope = 'key' AND scope_id = $1 AND metric = 'tokens'"
    )
    return int(asyncio.run(_fetchval(stack.dsn, sql, key_id)))


def applied(stack: Any, ids: list[str]) -> int:
    sql = "SELECT count(*) FROM limits.applied_events WHERE event_id = ANY($1::text[])"
    return int(asyncio.run(_fetchval(stack.dsn, sql, ids)))


def test_a_redelivered_usage_event_is_counted_once(stack) -> None:
    account, key_id = f"acct-{uuid.uuid4().hex[:8]}", f"key-{uuid.uuid4().hex[:8]}"
    first, marker = attempt(account, key_id, 100), attempt(account, key_id, 50)

    asyncio.run(_publish(stack.bootstrap, [first, first, marker]))

    wait_for(lambda: applied(stack, [first.id, marker.id]) == 2, what="both events applied")
    assert counted(stack, key_id) == 150


def test_kill_9_of_limits_mid_stream_loses_and_doubles_nothing(stack) -> None:
    account, key_id = f"acct-{uuid.uuid4().hex[:8]}", f"key-{uuid.uuid4().hex[:8]}"
    events = [attempt(account, key_id, 10) for _ in range(200)]
    ids = [e.id for e in events]

    asyncio.run(_publish(stack.bootstrap, events[:100]))
    wait_for(lambda: applied(stack, ids) > 0, what="the limits service to start applying")
    stack.kill("limits", signal.SIGKILL)
    asyncio.run(_publish(stack.bootstrap, events[100:]))
    stack.start_services(("limits",))

    wait_for(lambda: applied(stack, ids) == 200, timeout=120, what="every event applied")
    assert counted(stack, key_id) == 2000
