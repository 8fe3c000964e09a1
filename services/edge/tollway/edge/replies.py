"""The reply topic of one edge instance: answers for its in-flight requests, matched by request id.

An inbox is registered before the request is published, so a fast answer is never missed. A
plain request gets one reply; a streamed one gets its chunks in order, then its end. The
consumer reads every partition from the end: replies for requests this process did not send
(a previous incarnation's) are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from tollway.events.envelope import Envelope, Payload, UnknownEventTypeError, decode
from tollway.runtime.kafka import IDLE_POLL_MS, consumer_options, partitions_of

if TYPE_CHECKING:
    from collections.abc import Iterator

log = structlog.get_logger(__name__)


class ReplyHub:
    """Routes reply envelopes to the coroutine waiting for them."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        """Listen on ``topic``."""
        self._topic = topic
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            **consumer_options(),
            auto_offset_reset="latest",
        )
        self._waiting: dict[str, asyncio.Queue[Envelope[Payload]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.ready = False

    async def start(self) -> None:
        """Assign every partition at its end and start reading."""
        await self._consumer.start()
        tps = await partitions_of(self._consumer, self._topic)
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())
        self.ready = True

    async def stop(self) -> None:
        """Stop reading; waiting requests are failed by their own deadlines."""
        self.ready = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    @contextlib.contextmanager
    def expect(self, request_id: str) -> Iterator[asyncio.Queue[Envelope[Payload]]]:
        """Receive ``request_id``'s replies, in arrival order, for the duration of the block."""
        inbox: asyncio.Queue[Envelope[Payload]] = asyncio.Queue()
        self._waiting[request_id] = inbox
        try:
            yield inbox
        finally:
            self._waiting.pop(request_id, None)

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=500)
            for messages in batch.values():
                for message in messages:
                    self._deliver(message.key, message.value)

    def _deliver(self, key: bytes | None, value: bytes) -> None:
        request_id = key.decode() if key else ""
        inbox = self._waiting.get(request_id)
        if inbox is None:
            return
        try:
            inbox.put_nowait(decode(value))
        except (UnknownEventTypeError, ValidationError, ValueError) as exc:
            log.exception("reply_undecodable", request_id=request_id, error=type(exc).__name__)
