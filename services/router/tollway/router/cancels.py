"""Client disconnects, broadcast on gw.cancels: every router instance reads every partition.

The instance serving the request stops its upstream call; the others ignore the message. A
cancel may arrive before the authorization does (the client left while the ledger was deciding),
so recently cancelled ids are remembered and a later ``watch`` starts already cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import TYPE_CHECKING

import structlog
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from tollway.events import topics
from tollway.events.envelope import UnknownEventTypeError, decode
from tollway.events.gateway import RequestCancelled
from tollway.runtime.kafka import IDLE_POLL_MS, consumer_options, partitions_of

if TYPE_CHECKING:
    from collections.abc import Iterator

log = structlog.get_logger(__name__)


class Cancels:
    """Cancellation flags of the requests this instance is serving."""

    def __init__(self, remember: int = 10_000) -> None:
        """Remember up to ``remember`` cancelled ids nobody was watching yet."""
        self._watching: dict[str, asyncio.Event] = {}
        self._early: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    @contextlib.contextmanager
    def watch(self, request_id: str) -> Iterator[asyncio.Event]:
        """An event set when the client of ``request_id`` goes away."""
        event = asyncio.Event()
        if request_id in self._early:
            del self._early[request_id]
            event.set()
        self._watching[request_id] = event
        try:
            yield event
        finally:
            self._watching.pop(request_id, None)

    def cancel(self, request_id: str) -> None:
        """Flag ``request_id`` (or remember it for a watch still to come)."""
        event = self._watching.get(request_id)
        if event is not None:
            event.set()
            return
        self._early[request_id] = None
        if len(self._early) > self._remember:
            self._early.popitem(last=False)


async def listen(bootstrap: str, cancels: Cancels) -> None:
    """Read gw.cancels from its end, forever, flagging each cancelled request."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        **consumer_options(),
    )
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topics.CANCELS)
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        while True:
            batch = await consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=500)
            for messages in batch.values():
                for message in messages:
                    _apply(cancels, message.value)
    finally:
        await consumer.stop()


def _apply(cancels: Cancels, value: bytes) -> None:
    try:
        env = decode(value)
    except (UnknownEventTypeError, ValidationError, ValueError) as exc:
        log.warning("cancel_undecodable", error=type(exc).__name__)
        return
    if isinstance(env.payload, RequestCancelled):
        log.info("request_cancelled", request_id=env.payload.request_id)
        cancels.cancel(env.payload.request_id)
