"""Consumes gw.authorized with many requests in flight, committing offsets in order.

The router has no database effects, so it is at-least-once: an offset is committed only after
every message before it on the partition has published its usage events and reply, acknowledged
by the broker. An upstream call that was made must be billed, so those events are published
again and again, with backoff, until the broker takes them (a broker outage only delays them);
until then the offset does not move. A crash redelivers the uncommitted tail; the events it
re-emits carry the same derived ids and the ledger applies them once.

Stream frames are the exception: they are for a client waiting now, so a frame the broker
refuses is dropped (the client sees a cut stream), never retried after the fact.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from tollway.events import topics
from tollway.events.envelope import UnknownEventTypeError, decode
from tollway.events.gateway import RequestAuthorized
from tollway.runtime.kafka import IDLE_POLL_MS
from tollway.runtime.outbox import Outgoing
from tollway.runtime.tracing import headers_out, span_from

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from tollway.router.handlers import Router

log = structlog.get_logger(__name__)

# What a publish fails with while the broker is down or restarting.
PUBLISH_ERRORS = (KafkaError, OSError, asyncio.TimeoutError)
# Backoff between publish attempts of events that must not be lost.
RETRY_FIRST_S, RETRY_MAX_S = 0.05, 2.0
# Commits gather the progress of this long: one commit covers many finished requests.
COMMIT_EVERY_S = 0.1


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
        # Set when a message finished: the committer sleeps while nothing did.
        self._progressed = asyncio.Event()

    async def run(self) -> None:
        """Consume until cancelled; commits follow finished messages, at most every 100 ms."""
        committer = asyncio.create_task(self._commit_loop())
        try:
            while True:
                batch = await self._consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=200)
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
        except asyncio.CancelledError:
            # Shutting down: the offset stays pending, so a restart redelivers the message.
            self._slots.release()
            raise
        except Exception as exc:  # a bug: dead-lettered, so it cannot stall the partition
            log.exception("authorization_failed", topic=message.topic, offset=message.offset)
            try:
                await self._dead_letter(message, exc)
            except asyncio.CancelledError:
                self._slots.release()
                raise
        progress = self._progress[tp]
        progress.pending.discard(message.offset)
        progress.done_max = max(progress.done_max, message.offset)
        self._progressed.set()
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
        frames: list[asyncio.Future[Any]] = []
        # The trace context travels in the authorization's headers; usage and reply carry it on.
        with span_from(f"process {message.topic}", message.headers, SpanKind.CONSUMER):
            trace_headers = list(headers_out())

            async def sink(out: Outgoing) -> None:
                # Enqueued, not awaited: frames leave at once and keep their order per partition.
                try:
                    frames.append(await self._send(out, trace_headers))
                except PUBLISH_ERRORS as exc:
                    log.warning("stream_frame_dropped", error=type(exc).__name__)

            emits = await self._router.execute(env, sink)  # type: ignore[arg-type]
        for failed in await asyncio.gather(*frames, return_exceptions=True):
            if isinstance(failed, BaseException):
                log.warning("stream_frame_dropped", error=type(failed).__name__)
        await self._publish_until_acked(emits, trace_headers)

    async def _send(self, out: Outgoing, trace_headers: list[Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self._producer.send(
            out.topic, value=out.value, key=out.key.encode(), headers=[*out.headers, *trace_headers]
        )
        return future

    async def _publish_until_acked(self, emits: list[Outgoing], trace_headers: list[Any]) -> None:
        """Publish the reply and usage events, all of them again after any failure.

        Sent again as a whole and in order: the ledger applies an event id once, and an attempt
        never arrives after the finish that counts it.
        """
        delay = RETRY_FIRST_S
        while True:
            try:
                sent = [await self._send(out, trace_headers) for out in emits]
                await asyncio.gather(*sent)
            except PUBLISH_ERRORS as exc:
                log.warning("publish_retry", error=type(exc).__name__, events=len(emits))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            else:
                return

    async def _dead_letter(self, message: Any, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        log.error("dead_lettered", topic=message.topic, offset=message.offset, reason=reason)
        dead = Outgoing(
            topics.dlq_topic(message.topic),
            message.key.decode() if message.key is not None else "",
            message.value,
            (("x-dlq-reason", reason.encode("ascii", "replace")),),
        )
        await self._publish_until_acked([dead], [])

    async def _commit_loop(self) -> None:
        committed: dict[TopicPartition, int] = {}
        while True:
            await self._progressed.wait()
            await asyncio.sleep(COMMIT_EVERY_S)
            self._progressed.clear()  # progress made from here on triggers the next commit
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
                    self._progressed.set()
