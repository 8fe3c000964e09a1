"""Composition root of the limits service.

So far it follows ``gw.usage`` and keeps a per-key token tally per minute (logged as facts);
budget windows, velocity breakers and alerts grow here. It is a FastStream application: its
subscriber acknowledges after the handler returns, and nothing it does moves money.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import structlog
from faststream import FastStream
from faststream.kafka import KafkaBroker

from tollway.events import topics
from tollway.events.envelope import UnknownEventTypeError, decode
from tollway.events.gateway import AttemptFinished
from tollway.events.logging import configure_logging
from tollway.events.settings import CommonSettings
from tollway.runtime.kafka import ensure_topics
from tollway.runtime.metrics import start_observability

log = structlog.get_logger(__name__)


class TokenTally:
    """Tokens per (key scope, minute), from attempt events' own timestamps."""

    def __init__(self) -> None:
        """Start empty."""
        self.by_minute: dict[tuple[str, str], int] = defaultdict(int)

    def add(self, account_id: str, minute: str, tokens: int) -> int:
        """Count ``tokens`` and return the minute's running total."""
        self.by_minute[(account_id, minute)] += tokens
        return self.by_minute[(account_id, minute)]


def build(settings: CommonSettings) -> FastStream:
    """The FastStream app: one subscriber on gw.usage."""
    broker = KafkaBroker(settings.kafka_bootstrap_servers, logger=None)
    tally = TokenTally()

    @broker.subscriber(topics.USAGE, group_id="limits", auto_offset_reset="earliest")
    async def on_usage(raw: bytes) -> None:
        try:
            env = decode(raw)
        except (UnknownEventTypeError, ValueError):
            return
        if isinstance(env.payload, AttemptFinished):
            minute = env.occurred_at.strftime("%Y-%m-%dT%H:%M")
            total = tally.add(env.payload.account_id, minute, env.payload.usage.total_tokens)
            log.debug(
                "usage_counted", account_id=env.payload.account_id, minute=minute, tokens=total
            )

    app = FastStream(broker)

    @app.on_startup
    async def _topics() -> None:
        await ensure_topics(
            settings.kafka_bootstrap_servers, topics.core_topics(settings.topic_partitions)
        )

    return app


def main() -> None:
    """Entry point: ``python -m tollway.limits``."""
    settings = CommonSettings()
    configure_logging("limits", settings.log_level, settings.log_json)
    start_observability("limits", settings.metrics_port)
    app: Any = build(settings)
    asyncio.run(app.run())
