"""The ledger's clock ticks only when an open hold is due, and a commit wakes it.

Postgres and Kafka are replaced by fakes that answer the two reads the clock makes (the open
holds, the stored offsets) and record the ticks it sends.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from tollway.events import topics
from tollway.events.envelope import decode, utcnow
from tollway.ledger.clock import Clock
from tollway.ledger.store import OPEN_HOLDS_DUE
from tollway.runtime import metrics

if TYPE_CHECKING:
    from tollway.events.ledger import ClockTicked

GRACE = timedelta(seconds=30)


class FakePool:
    """The ledger's tables as far as the clock reads them."""

    def __init__(self, deadlines: list[datetime]) -> None:
        self.deadlines = deadlines
        self.looks = 0

    async def fetchrow(self, sql: str) -> dict[str, Any]:
        assert sql == OPEN_HOLDS_DUE
        self.looks += 1
        return {"open": len(self.deadlines), "earliest": min(self.deadlines, default=None)}

    async def fetch(self, _sql: str, _group: str) -> list[dict[str, Any]]:
        return [{"topic": topics.REQUESTS, "partition": p, "next_offset": 7} for p in (0, 1)]


class FakeProducer:
    """Two partitions; keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, ClockTicked]] = []

    async def partitions_for(self, _topic: str) -> set[int]:
        return {0, 1}

    async def send_and_wait(self, topic: str, *, value: bytes, partition: int) -> None:
        assert topic == topics.USAGE
        self.sent.append((partition, cast("ClockTicked", decode(value).payload)))


def _clock(pool: FakePool, producer: FakeProducer, tick: float = 1.0, beat: float = 60.0) -> Clock:
    return Clock(
        cast("Any", producer),
        cast("Any", pool),
        "ledger",
        topics.USAGE,
        tick_seconds=tick,
        grace=GRACE,
        heartbeat_seconds=beat,
    )


def _gauge() -> float:
    return float(metrics.OPEN_HOLDS._value.get())  # the gauge's current value


def test_no_open_hold_sends_no_tick_and_waits_a_heartbeat() -> None:
    pool, producer = FakePool([]), FakeProducer()
    assert asyncio.run(_clock(pool, producer).look()) == 60.0
    assert producer.sent == []
    assert _gauge() == 0


def test_a_hold_not_yet_due_is_looked_at_again_when_it_will_be() -> None:
    pool, producer = FakePool([utcnow() + timedelta(seconds=10) - GRACE]), FakeProducer()
    wait = asyncio.run(_clock(pool, producer).look())
    assert producer.sent == []
    assert 9.0 < wait <= 10.1
    assert _gauge() == 1


def test_a_due_hold_ticks_every_partition_past_its_deadline() -> None:
    deadline = utcnow() - GRACE - timedelta(seconds=1)
    pool, producer = FakePool([deadline, deadline + timedelta(hours=1)]), FakeProducer()
    assert asyncio.run(_clock(pool, producer).look()) == 1.0
    assert [p for p, _ in producer.sent] == [0, 1]
    for partition, tick in producer.sent:
        assert (tick.partition, tick.partitions, tick.requests_before) == (partition, 2, 7)
        assert tick.expire_before > deadline  # the tick expires that hold
    assert _gauge() == 2


def test_a_commit_wakes_the_clock_before_its_heartbeat() -> None:
    async def scenario() -> list[int]:
        pool, producer = FakePool([]), FakeProducer()
        clock = _clock(pool, producer, tick=0.05, beat=600.0)
        task = asyncio.create_task(clock.run())
        await asyncio.sleep(0.2)
        idle_looks = pool.looks
        pool.deadlines.append(datetime(2020, 1, 1, tzinfo=UTC))  # placed overdue
        clock.nudge()
        for _ in range(100):
            if producer.sent:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        return [idle_looks, len(producer.sent)]

    idle_looks, sent = asyncio.run(scenario())
    assert idle_looks == 1  # nothing due: one look, then asleep until nudged
    assert sent == 2
