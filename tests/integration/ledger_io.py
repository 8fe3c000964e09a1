"""Direct access to the real broker and database for ledger tests: publish raw envelopes, read
the ledger's tables. Helpers only; every assertion lives in the tests.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from tollway.events.envelope import Envelope, encode, make
from tollway.events.gateway import Candidate, RequestFinished, RequestReceived
from tollway.events.pricing import Price, Usage

CHANNEL = Candidate(
    channel_id="openai-direct",
    channel="openai-direct",
    brand="openai",
    route_type="direct",
    bucket="credit",
    upstream_model="gpt-4o-mini-2024-07-18",
    price=Price(input=150_000, output=600_000),
)


async def publish_async(bootstrap: str, envelopes: list[Envelope[Any]], topic: str) -> None:
    """Publish ``envelopes`` keyed by their account, in order, and wait for the acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=encode(e), key=e.payload.account_id.encode())
            for e in envelopes
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def publish(bootstrap: str, envelopes: list[Envelope[Any]], topic: str) -> None:
    """Synchronous :func:`publish_async`."""
    asyncio.run(publish_async(bootstrap, envelopes, topic))


async def _fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of ``sql`` as dicts."""
    return asyncio.run(_fetch(dsn, sql, *args))


def fetchval(dsn: str, sql: str, *args: Any) -> Any:
    """The first column of the first row, or None."""
    rows = fetch(dsn, sql, *args)
    return next(iter(rows[0].values())) if rows else None


def balance(dsn: str, account_id: str, bucket: str = "credit") -> int:
    """The bucket's available balance (its ledger account)."""
    value = fetchval(
        dsn,
        "SELECT amount FROM ledger.balances WHERE account = $1",
        f"{account_id}/{bucket}",
    )
    return int(value or 0)


def journal_types(dsn: str, request_id: str) -> list[str]:
    """Journal event types of one request, in journal order."""
    rows = fetch(
        dsn,
        "SELECT type FROM ledger.journal"
        " WHERE body -> 'payload' ->> 'request_id' = $1 ORDER BY seq",
        request_id,
    )
    return [r["type"] for r in rows]


def request(
    account_id: str, edge_id: str, deadline_in: timedelta, max_output_tokens: int = 1000
) -> Envelope[RequestReceived]:
    """A request as the edge would publish it, with a chosen deadline."""
    request_id = f"req_{uuid.uuid4().hex}"
    return make(
        RequestReceived(
            request_id=request_id,
            edge_id=edge_id,
            account_id=account_id,
            key_id="key_test",
            project_id="proj_test",
            catalog_model="gpt-4o-mini",
            body={},
            plan=[CHANNEL],
            estimated_input_tokens=100,
            max_output_tokens=max_output_tokens,
            deadline_at=datetime.now(UTC) + deadline_in,
        )
    )


def served(req: RequestReceived, hold_id: str, usage: Usage) -> Envelope[RequestFinished]:
    """The router's RequestFinished for a request served by :data:`CHANNEL`."""
    return make(
        RequestFinished(
            request_id=req.request_id,
            account_id=req.account_id,
            hold_id=hold_id,
            served_attempt=1,
            served_channel_id=CHANNEL.channel_id,
            served_bucket="credit",
            usage=usage,
            price=CHANNEL.price,
            status=200,
            attempts=1,
        )
    )
