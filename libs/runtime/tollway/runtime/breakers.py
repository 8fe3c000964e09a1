"""Every process's view of the velocity breakers: the compacted ``limits.breakers`` topic, folded.

Edges and routers read the whole topic from the beginning without a consumer group, so each
instance holds the latest record of every breaker and a restart rebuilds the same view. A
breaker is open while its latest record is a ``BreakerTripped`` whose ``until`` lies ahead:
enforcement ends on time even if the cool-down's ``BreakerReset`` is still on its way.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from tollway.events import topics
from tollway.events.envelope import Envelope, Payload, UnknownEventTypeError, decode
from tollway.events.limits import BreakerReset, BreakerTripped, breaker_key
from tollway.runtime.kafka import IDLE_POLL_MS, consumer_options, partitions_of

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

log = structlog.get_logger(__name__)


@dataclass
class BreakerBoard:
    """The latest breaker record per scope (pure: no IO, time passed in)."""

    latest: dict[str, Envelope[Payload]] = field(default_factory=dict)

    def apply(self, env: Envelope[Payload]) -> None:
        """Fold one record; records of other types are ignored."""
        p = env.payload
        if isinstance(p, BreakerTripped | BreakerReset):
            self.latest[breaker_key(p.scope, p.scope_id)] = env

    def open_for(
        self, scopes: Iterable[tuple[str, str | None]], now: datetime
    ) -> BreakerTripped | None:
        """The first open breaker among ``scopes`` (``(scope, id)``; a ``None`` id is skipped)."""
        for scope, scope_id in scopes:
            if scope_id is None:
                continue
            env = self.latest.get(breaker_key(scope, scope_id))
            tripped = env.payload if env is not None else None
            if isinstance(tripped, BreakerTripped) and tripped.until > now:
                return tripped
        return None

    def records(self) -> list[Envelope[Payload]]:
        """Every breaker's latest record, newest first."""
        return sorted(self.latest.values(), key=lambda e: e.occurred_at, reverse=True)


def request_scopes(
    account_id: str, key_id: str | None, project_id: str | None, task_id: str | None
) -> list[tuple[str, str | None]]:
    """The scopes a call belongs to, most specific first."""
    return [("task", task_id), ("key", key_id), ("project", project_id), ("account", account_id)]


class BreakerView:
    """Reads ``limits.breakers`` into a :class:`BreakerBoard` until stopped."""

    def __init__(self, bootstrap: str, topic: str = topics.BREAKERS) -> None:
        """Read ``topic`` on the cluster at ``bootstrap``."""
        self.board = BreakerBoard()
        self._topic = topic
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            **consumer_options(),
        )
        self._task: asyncio.Task[None] | None = None
        self.ready = False

    async def start(self, catch_up_seconds: float = 30.0) -> None:
        """Assign every partition from the beginning and read up to the current end first."""
        await self._consumer.start()
        tps = await partitions_of(self._consumer, self._topic)
        # The ends first: once assigned, the consumer's fetch waits at the broker for records,
        # and a broker answers one connection's requests in order.
        ends: dict[TopicPartition, int] = await self._consumer.end_offsets(tps)
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        async with asyncio.timeout(catch_up_seconds):
            while await _behind(self._consumer, ends):
                await self._poll(100)
        self._task = asyncio.create_task(self._run())
        self.ready = True
        log.info("breakers_loaded", count=len(self.board.latest))

    async def stop(self) -> None:
        """Stop reading."""
        self.ready = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            await self._poll(IDLE_POLL_MS)

    async def _poll(self, timeout_ms: int) -> None:
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=1000)
        for messages in batch.values():
            for message in messages:
                self._apply_raw(message)

    def _apply_raw(self, message: Any) -> None:
        if message.value is None:  # a tombstone: nothing to fold
            return
        try:
            env = decode(message.value)
        except (UnknownEventTypeError, ValidationError, ValueError) as exc:
            log.warning(
                "breaker_record_undecodable", offset=message.offset, error=type(exc).__name__
            )
            return
        self.board.apply(env)
        log.info("breaker_seen", type=env.type, key=message.key.decode() if message.key else None)


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False
