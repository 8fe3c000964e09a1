"""The ledger's clock as events: a tick into every partition of the topic it consumes.

Hold expiry must not read the wall clock inside a projection (a replay would expire other
holds). Instead this loop reads the clock once per tick and publishes it, with an explicit
partition, to each partition of gw.usage; the consumer that owns the partition expires its own
accounts' overdue holds when the tick arrives, at a fixed place in the log.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog
from aiokafka.errors import KafkaError

from tollway.events.envelope import encode, make, utcnow
from tollway.events.ledger import ClockTicked

if TYPE_CHECKING:
    from datetime import timedelta

    from aiokafka import AIOKafkaProducer

log = structlog.get_logger(__name__)


async def tick_once(producer: AIOKafkaProducer, topic: str, grace: timedelta) -> int:
    """Publish one tick per partition of ``topic``; return how many were sent."""
    partitions = sorted(await producer.partitions_for(topic))
    now = utcnow()
    for partition in partitions:
        tick = ClockTicked(
            partition=partition, partitions=len(partitions), expire_before=now - grace
        )
        await producer.send_and_wait(
            topic, value=encode(make(tick, occurred_at=now)), partition=partition
        )
    return len(partitions)


async def run_clock(
    producer: AIOKafkaProducer, topic: str, interval: float, grace: timedelta
) -> None:
    """Tick every ``interval`` seconds until cancelled; a failed tick is simply the next one."""
    while True:
        try:
            await tick_once(producer, topic, grace)
        except (KafkaError, OSError) as exc:
            log.warning("clock_tick_failed", error=type(exc).__name__)
        await asyncio.sleep(interval)
