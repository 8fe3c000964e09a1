"""Consumes gw.authorized with many requests in flight, committing offsets in order.

The router has no database effects, so it is at-least-once: an offset is committed only after
every message before it on the partition has published its usage events and reply. A crash
redelivers the uncommitted tail; the events it re-emits carry the same derived ids and the
ledger applies them once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka.structs import OffsetAndMetadata
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from tollway.events import topics
from tollway.events.envelope import UnknownEventTypeError, decode
from tollway.events.gateway import RequestAuthorized
from tollway.runtime.tracing import headers_out, span_from

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from tollway.router.handlers import Router

log = structlog.get_logger(__name__)


class _PartitionProgress:
    """Offsets in flight on one partition; yields the next offset safe to commit."""

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self.done_max = -1

    def committable(self) -> int | None:
        if self.pending:
            return min(self.pending)
        return self.done_max + 1 if self.done_max >= 0 else None


class RecentIds:
    """The last ``size`` event ids seen, so a redelivered authorization is not served twice.

    The outbox relay may publish a row again after a partial failure; the ledger dedupes
    usage by id, but a second upstream call would still cost the operator money.
    """

    def __init__(self, size: int = 100_000) -> None:
        """Remember up to ``size`` ids."""
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, event_id: str) -> bool:
        """Record ``event_id``; False when it was already seen."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


class RouterWorker:
    """Pulls authorized requests and runs each as its own task, bounded by ``max_in_flight``."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        router: Router,
        max_in_flight: int,
    ) -> None:
        """Wire the worker."""
        self._consumer = consumer
        self._producer = producer
        self._router = router
        self._slots = asyncio.Semaphore(max_in_flight)
        self._progress: dict[TopicPartition, _PartitionProgress] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen = RecentIds()

    async def run(self) -> None:
        """Consume until cancelled; commits run every 100 ms."""
        committer = asyncio.create_task(self._commit_loop())
        try:
            while True:
                batch = await self._consumer.getmany(timeout_ms=100, max_records=200)
                for tp, messages in batch.items():
                    for message in messages:
                        await self._slots.acquire()
                        self._start(tp, message)
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer

    def _start(self, tp: TopicPartition, message: Any) -> None:
        progress = self._progress.setdefault(tp, _PartitionProgress())
        progress.pending.add(message.offset)
        task = asyncio.create_task(self._handle(tp, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, tp: TopicPartition, message: Any) -> None:
        try:
            await self._process(message)
        finally:
            progress = self._progress[tp]
            progress.pending.discard(message.offset)
            progress.done_max = max(progress.done_max, message.offset)
            self._slots.release()

    async def _process(self, message: Any) -> None:
        try:
            env = decode(message.value)
        except (UnknownEventTypeError, ValidationError, ValueError) as exc:
            await self._dead_letter(message, exc)
            return
        if not isinstance(env.payload, RequestAuthorized) or not self._seen.first_time(env.id):
            return
        structlog.contextvars.bind_contextvars(
            request_id=env.payload.request.request_id, task_id=env.trace.task_id
        )
        # The trace context travels in the authorization's headers; usage and reply carry it on.
        with span_from(f"process {message.topic}", message.headers, SpanKind.CONSUMER):
            emits = await self._router.execute(env)  # type: ignore[arg-type]
            trace_headers = list(headers_out())
            futures = [
                await self._producer.send(
                    o.topic,
                    value=o.value,
                    key=o.key.encode(),
                    headers=[*o.headers, *trace_headers],
                )
                for o in emits
            ]
        await asyncio.gather(*futures)

    async def _dead_letter(self, message: Any, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        log.error("dead_lettered", topic=message.topic, offset=message.offset, reason=reason)
        await self._producer.send_and_wait(
            topics.dlq_topic(message.topic),
            value=message.value,
            key=message.key,
            headers=[("x-dlq-reason", reason.encode("ascii", "replace"))],
        )

    async def _commit_loop(self) -> None:
        committed: dict[TopicPartition, int] = {}
        while True:
            await asyncio.sleep(0.1)
            offsets = {}
            for tp, progress in self._progress.items():
                offset = progress.committable()
                if offset is not None and committed.get(tp) != offset:
                    offsets[tp] = OffsetAndMetadata(offset, "")
            if offsets:
                try:
                    await self._consumer.commit(offsets)
                    committed.update({tp: om.offset for tp, om in offsets.items()})
                except Exception as exc:  # noqa: BLE001 - a rebalance; the next loop retries
                    log.warning("commit_failed", error=type(exc).__name__)
