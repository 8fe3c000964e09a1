"""The live alert feed of the operator dashboard: the newest alerts of ``limits.alerts``.

Started on the first operator page that asks for it (an edge nobody watches reads nothing):
reads the topic from the beginning (30 days retained) without a consumer group, like
``tollway alerts tail --follow``, and keeps the newest ``keep`` alerts in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from tollway.events import topics
from tollway.events.envelope import UnknownEventTypeError, decode
from tollway.events.limits import Alert
from tollway.runtime.kafka import IDLE_POLL_MS, consumer_options, partitions_of

if TYPE_CHECKING:
    from tollway.events.envelope import Envelope, Payload

log = structlog.get_logger(__name__)
RETRY_SECONDS = 2.0


class AlertFeed:
    """The newest alerts, newest first, as this edge has read them."""

    def __init__(self, bootstrap: str, keep: int = 200) -> None:
        """Read ``limits.alerts`` on the cluster at ``bootstrap`` once :meth:`start` is called."""
        self._bootstrap = bootstrap
        self._alerts: deque[Envelope[Payload]] = deque(maxlen=keep)
        self._task: asyncio.Task[None] | None = None
        self.reading = False

    def start(self) -> None:
        """Begin reading in the background (a second call does nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop reading."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def apply(self, env: Envelope[Payload]) -> None:
        """Fold one record (anything but an alert is ignored)."""
        if isinstance(env.payload, Alert):
            self._alerts.append(env)

    def latest(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest alerts, newest first, as JSON-ready views."""
        ordered = sorted(self._alerts, key=lambda e: (e.occurred_at, e.id), reverse=True)
        return [_view(e) for e in ordered[:limit]]

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                **consumer_options(),
            )
            try:
                await consumer.start()
                tps = await partitions_of(consumer, topics.ALERTS)
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                self.reading = True
                while True:
                    batch = await consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=1000)
                    for messages in batch.values():
                        for message in messages:
                            self._apply_raw(message.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the feed retries; pages say it is not live
                self.reading = False
                log.warning("alert_feed_interrupted", error=type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                self.reading = False
                with contextlib.suppress(Exception):
                    await consumer.stop()

    def _apply_raw(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            self.apply(decode(value))
        except (UnknownEventTypeError, ValidationError, ValueError):
            return  # not an alert this build understands


def _view(env: Envelope[Payload]) -> dict[str, Any]:
    a: Any = env.payload
    return {
        "id": env.id,
        "occurred_at": env.occurred_at.isoformat(),
        **a.model_dump(mode="json"),
    }
