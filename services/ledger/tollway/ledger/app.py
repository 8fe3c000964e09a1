"""Composition root of the ledger: settings -> pool -> migrations -> producer, relay, consumer."""

from __future__ import annotations

from datetime import timedelta

import structlog

from tollway.events import topics
from tollway.events.logging import configure_logging
from tollway.ledger.clock import Clock
from tollway.ledger.crash_pause import pause_hook
from tollway.ledger.handlers import LedgerHandler
from tollway.ledger.recon import parse_threshold
from tollway.ledger.recon_apply import ReconPolicy
from tollway.ledger.settings import LedgerSettings
from tollway.runtime.consumer import TransactionalConsumer
from tollway.runtime.db import create_pool
from tollway.runtime.kafka import ensure_topics, new_producer
from tollway.runtime.metrics import start_observability
from tollway.runtime.migrations import apply_migrations
from tollway.runtime.outbox import OutboxRelay
from tollway.runtime.service import run, run_until_signalled, tune_gc

log = structlog.get_logger(__name__)


async def serve(settings: LedgerSettings) -> None:
    """Run the ledger until SIGTERM."""
    pool = await create_pool(
        settings.database_url, name="ledger", min_size=2, max_size=settings.pool_size
    )
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, "ledger", "tollway.ledger")
        await ensure_topics(
            settings.kafka_bootstrap_servers, topics.core_topics(settings.topic_partitions)
        )
        producer = new_producer(settings.kafka_bootstrap_servers, "ledger")
        await producer.start()
        try:
            relay = OutboxRelay(pool, "ledger", producer)
            consumer = TransactionalConsumer(
                pool=pool,
                schema="ledger",
                bootstrap=settings.kafka_bootstrap_servers,
                group_id=settings.group_id,
                topics=[topics.REQUESTS, topics.USAGE],
                handler=LedgerHandler(
                    ReconPolicy(parse_threshold(settings.recon_drift_threshold)), resident=True
                ),
                relay=relay,
                max_records=settings.batch_size,
                mid_batch=pause_hook(settings.crash_pause_file, settings.crash_pause_min_records),
            )
            log.info("ledger_started", group=settings.group_id)
            clock = Clock(
                producer,
                pool,
                settings.group_id,
                topics.USAGE,
                tick_seconds=settings.tick_seconds,
                grace=timedelta(seconds=settings.hold_grace_seconds),
                heartbeat_seconds=settings.clock_heartbeat_seconds,
            )
            relay.on_commit(clock.nudge)  # a batch that placed holds wakes the clock
            await run_until_signalled(relay.run(), consumer.run(), clock.run())
        finally:
            await producer.stop()
    finally:
        await pool.close()


def main() -> None:
    """Entry point: ``python -m tollway.ledger``."""
    settings = LedgerSettings()
    configure_logging("ledger", settings.log_level, settings.log_json)
    start_observability("ledger", settings.metrics_port)
    tune_gc()
    run(serve(settings))
