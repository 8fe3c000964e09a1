"""Composition root of the limits service: consumer, relay, cool-down sweeper, webhooks.

The consumer is the exactly-once one the ledger uses: windows, breakers, alert throttles and
webhook deliveries change in the same transaction as the stored Kafka offsets, and the breaker
records and alerts it emits leave through the outbox. Nothing here moves money.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from tollway.events import topics
from tollway.events.limits import BreakerTripped
from tollway.events.logging import configure_logging
from tollway.limits import breakers
from tollway.limits.alerts import AlertPolicy
from tollway.limits.domain import Limits, RatePolicy, RelativePolicy
from tollway.limits.handlers import HANDLED, LimitsHandler, VelocityPolicy
from tollway.limits.lag import watch_lag
from tollway.limits.settings import LimitsSettings
from tollway.limits.webhooks import DeliveryPolicy, WebhookDispatcher
from tollway.runtime.consumer import TransactionalConsumer
from tollway.runtime.db import create_pool
from tollway.runtime.kafka import ensure_topics, new_producer
from tollway.runtime.metrics import start_observability
from tollway.runtime.migrations import apply_migrations
from tollway.runtime.outbox import OutboxRelay
from tollway.runtime.service import run, run_until_signalled

if TYPE_CHECKING:
    import asyncpg

log = structlog.get_logger(__name__)

INPUTS = (topics.REQUESTS, topics.USAGE, topics.LEDGER_EVENTS, topics.BREAKERS)


def handler_from(settings: LimitsSettings) -> LimitsHandler:
    """The consumer's rules, fixed from settings at start."""
    defaults = Limits(
        tokens_per_minute=settings.tokens_per_minute,
        spend_micro_per_minute=settings.spend_micro_per_minute,
        relative_factor=settings.relative_factor,
        cooldown_seconds=settings.cooldown_seconds,
    )
    relative = RelativePolicy(settings.relative_min_hours, settings.relative_floor_tokens)
    alert_policy = AlertPolicy(
        errors=RatePolicy(settings.error_rate, settings.error_min_attempts),
        fallbacks=RatePolicy(settings.fallback_rate, settings.fallback_min_requests),
        route_spend_micro_per_minute=settings.route_spend_micro_per_minute,
        mix_shift=settings.mix_shift,
        mix_min_requests=settings.mix_min_requests,
    )
    return LimitsHandler(VelocityPolicy(defaults, relative), alert_policy)


async def sweep_forever(pool: asyncpg.Pool, relay: OutboxRelay, every: float) -> None:
    """Close breakers whose cool-down ended (the wall clock only says when to look).

    Sleeps until the earliest open breaker's cool-down ends, or until this service commits
    new events (a trip among them), and at least ``every`` seconds between looks.
    """
    wake = asyncio.Event()
    relay.on_commit(wake.set)
    while True:
        wake.clear()
        if await breakers.sweep(pool, datetime.now(UTC)):
            relay.kick()
        wait = breakers.IDLE_SWEEP_SECONDS
        due = await breakers.next_due(pool)
        if due is not None:
            wait = min(wait, (due - datetime.now(UTC)).total_seconds())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), max(every, wait))
        await asyncio.sleep(every)  # a burst of commits is one look, not one per commit


async def serve(settings: LimitsSettings) -> None:
    """Run the limits service until SIGTERM."""
    pool = await create_pool(
        settings.database_url, name="limits", min_size=2, max_size=settings.pool_size
    )
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, "limits", "tollway.limits")
        await ensure_topics(
            settings.kafka_bootstrap_servers, topics.core_topics(settings.topic_partitions)
        )
        producer = new_producer(settings.kafka_bootstrap_servers, "limits")
        await producer.start()
        try:
            relay = OutboxRelay(pool, "limits", producer)
            dispatcher = WebhookDispatcher(
                pool,
                DeliveryPolicy(
                    settings.webhook_signing_key,
                    settings.webhook_max_attempts,
                    settings.webhook_timeout_seconds,
                    settings.webhook_backoff_seconds,
                ),
            )
            relay.on_commit(dispatcher.kick)  # alerts' deliveries commit with them
            consumer = TransactionalConsumer(
                pool=pool,
                schema="limits",
                bootstrap=settings.kafka_bootstrap_servers,
                group_id=settings.group_id,
                topics=list(INPUTS),
                handler=handler_from(settings),
                relay=relay,
                max_records=settings.batch_size,
                # The ledger owns gw.requests and gw.usage and dead-letters their poison.
                dead_letters=False,
                # Breaker trips are not handled here but counted (tollway_events_applied).
                event_types=[kind.TYPE for kind in (*HANDLED, BreakerTripped)],
            )
            log.info("limits_started", group=settings.group_id)
            await run_until_signalled(
                relay.run(),
                consumer.run(),
                sweep_forever(pool, relay, settings.sweep_seconds),
                dispatcher.run(),
                watch_lag(
                    pool,
                    settings.kafka_bootstrap_servers,
                    relay,
                    settings.lag_alert_records,
                    settings.lag_check_seconds,
                ),
            )
        finally:
            await producer.stop()
    finally:
        await pool.close()


def main() -> None:
    """Entry point: ``python -m tollway.limits``."""
    settings = LimitsSettings()
    configure_logging("limits", settings.log_level, settings.log_json)
    start_observability("limits", settings.metrics_port)
    run(serve(settings))
