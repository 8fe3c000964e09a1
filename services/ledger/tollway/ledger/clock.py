"""The ledger's clock as events: a tick into every partition of the topic it consumes.

Hold expiry must not read the wall clock inside a projection (a replay would expire other
holds). Instead this loop reads the clock once per tick and publishes it, with an explicit
partition, to each partition of gw.usage; the consumer that owns the partition expires its own
accounts' overdue holds when the tick arrives, at a fixed place in the log.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
import structlog
from aiokafka.errors import KafkaError

from tollway.events import topics
from tollway.events.envelope import encode, make, utcnow
from tollway.events.ledger import ClockTicked
from tollway.ledger import finance_store

if TYPE_CHECKING:
    from datetime import timedelta

    from aiokafka import AIOKafkaProducer

log = structlog.get_logger(__name__)


async def applied_requests(pool: asyncpg.Pool, group: str) -> dict[int, int]:
    """Per gw.requests partition, the offset before which the ledger has applied every record."""
    rows = await pool.fetch(finance_store.STORED_OFFSETS, group)
    return {
        int(r["partition"]): int(r["next_offset"]) for r in rows if r["topic"] == topics.REQUESTS
    }


async def tick_once(
    producer: AIOKafkaProducer, topic: str, grace: timedelta, applied: dict[int, int]
) -> int:
    """Publish one tick per partition of ``topic``; return how many were sent.

    ``applied`` (read before the clock) bounds which requests' holds the tick may expire.
    """
    partitions = sorted(await producer.partitions_for(topic))
    now = utcnow()
    for partition in partitions:
        tick = ClockTicked(
            partition=partition,
            partitions=len(partitions),
            expire_before=now - grace,
            requests_before=applied.get(partition, 0),
        )
        await producer.send_and_wait(
            topic, value=encode(make(tick, occurred_at=now)), partition=partition
        )
    return len(partitions)


async def run_clock(  # noqa: PLR0913, PLR0917 - the clock's wiring
    producer: AIOKafkaProducer,
    pool: asyncpg.Pool,
    group: str,
    topic: str,
    interval: float,
    grace: timedelta,
) -> None:
    """Tick every ``interval`` seconds until cancelled; a failed tick is simply the next one."""
    while True:
        try:
            await tick_once(producer, topic, grace, await applied_requests(pool, group))
        except (KafkaError, OSError, asyncpg.PostgresError) as exc:
            log.warning("clock_tick_failed", error=type(exc).__name__)
        await asyncio.sleep(interval)
