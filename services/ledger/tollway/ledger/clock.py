"""The ledger's clock as events: a tick into every partition of the topic it consumes.

Hold expiry must not read the wall clock inside a projection (a replay would expire other
holds). Instead this loop reads the clock and publishes it, with an explicit partition, to each
partition of gw.usage; the consumer that owns the partition expires its own accounts' overdue
holds when the tick arrives, at a fixed place in the log.

A tick is only worth writing when a hold can expire by it, so the clock ticks only then: it
looks at the open holds (how many, and the earliest deadline) and ticks when that deadline plus
the grace has passed, again every ``tick_seconds`` while one stays due; otherwise it sleeps
until that deadline, or until the ledger commits (a new hold may be due sooner), or a long
heartbeat. An idle ledger then writes nothing and reads Postgres once a heartbeat. Which holds a
tick expires is the fold's business and unchanged; only when ticks are written differs, and
replay reads the ticks from the log whoever wrote them and whenever.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import asyncpg
import structlog
from aiokafka.errors import KafkaError

from tollway.events import topics
from tollway.events.envelope import encode, make, utcnow
from tollway.events.ledger import ClockTicked
from tollway.ledger import finance_store, store
from tollway.runtime import metrics

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from aiokafka import AIOKafkaProducer

log = structlog.get_logger(__name__)

# Looks just after a deadline plus the grace, not at it (a tick expires holds strictly before).
DUE_MARGIN_SECONDS = 0.01


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


class Clock:
    """Ticks gw.usage when an open hold is due to expire; wakes on the ledger's commits.

    ``nudge`` is cheap and synchronous: the outbox relay calls it whenever the ledger hands over
    committed rows (a batch that placed holds among them). Looks are at least ``tick_seconds``
    apart, so a burst of commits is one look. Each look also sets the open-holds gauge.
    """

    def __init__(  # noqa: PLR0913 - the clock's wiring
        self,
        producer: AIOKafkaProducer,
        pool: asyncpg.Pool,
        group: str,
        topic: str,
        *,
        tick_seconds: float,
        grace: timedelta,
        heartbeat_seconds: float,
    ) -> None:
        """Wire the clock; nothing is read or sent until :meth:`run`."""
        self._producer = producer
        self._pool = pool
        self._group = group
        self._topic = topic
        self._tick_seconds = tick_seconds
        self._grace = grace
        self._heartbeat = max(heartbeat_seconds, tick_seconds)
        self._wake = asyncio.Event()

    def nudge(self) -> None:
        """The ledger committed: a hold due sooner than the clock knew may exist now."""
        self._wake.set()

    async def look(self) -> float:
        """Tick if an open hold is due; return how many seconds until the next look is needed."""
        row = await self._pool.fetchrow(store.OPEN_HOLDS_DUE)
        metrics.OPEN_HOLDS.set(row["open"] if row is not None else 0)
        earliest = row["earliest"] if row is not None else None
        if earliest is None:
            return self._heartbeat
        due: datetime = earliest + self._grace
        wait = (due - utcnow()).total_seconds()
        if wait >= 0:
            # A tick expires holds whose deadline is strictly before its time minus the grace.
            return min(self._heartbeat, wait + DUE_MARGIN_SECONDS)
        # Read after the holds: a hold seen above was committed with its request's offset, so
        # the tick's ``requests_before`` covers it.
        applied = await applied_requests(self._pool, self._group)
        await tick_once(self._producer, self._topic, self._grace, applied)
        return self._tick_seconds

    async def run(self) -> None:
        """Look, then sleep until due, nudged or a heartbeat, until cancelled.

        While a hold stays due (its tick not consumed yet) the clock ticks every
        ``tick_seconds``, as a failed look is retried after ``tick_seconds``.
        """
        while True:
            self._wake.clear()  # a commit during the look is seen by the wait below
            try:
                wait = await self.look()
            except (KafkaError, OSError, asyncpg.PostgresError) as exc:
                log.warning("clock_tick_failed", error=type(exc).__name__)
                wait = self._tick_seconds
            await asyncio.sleep(min(wait, self._tick_seconds))
            if wait > self._tick_seconds:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait - self._tick_seconds)
