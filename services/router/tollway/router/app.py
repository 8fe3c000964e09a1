"""Composition root of the router: settings -> pool -> channel cache -> consumer and producer."""

from __future__ import annotations

import os
import random
import sys

import structlog
from aiokafka import AIOKafkaConsumer

from tollway.events import topics
from tollway.events.logging import configure_logging
from tollway.router import cancels
from tollway.router.channels import ChannelCache, follow_changes
from tollway.router.handlers import Circuits, RetryPolicy, Router
from tollway.router.health import HealthBoard, HealthPolicy
from tollway.router.secrets import SecretsNotConfiguredError, check_readable, reseal
from tollway.router.settings import RouterSettings
from tollway.router.worker import RouterWorker
from tollway.runtime.bodies import BodyKeys
from tollway.runtime.breakers import BreakerView
from tollway.runtime.db import create_pool
from tollway.runtime.kafka import consumer_options, ensure_topics, new_producer
from tollway.runtime.metrics import start_observability
from tollway.runtime.migrations import apply_migrations
from tollway.runtime.sealing import KeyRing, SecretKeyError
from tollway.runtime.service import run, run_until_signalled

log = structlog.get_logger(__name__)


async def serve(settings: RouterSettings) -> None:
    """Run the router until SIGTERM."""
    ring = KeyRing.optional(settings.secret_keys.get_secret_value())
    pool = await create_pool(settings.database_url, name="router", min_size=1, max_size=4)
    channels = ChannelCache(pool, ring)
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, "router", "tollway.router")
            await apply_migrations(conn, "bodykeys", "tollway.runtime")
            await check_readable(conn, ring)
            if ring is not None:
                await reseal(conn, ring, clear_only=True)
        await channels.refresh()
        await ensure_topics(
            settings.kafka_bootstrap_servers, topics.core_topics(settings.topic_partitions)
        )
        producer = new_producer(settings.kafka_bootstrap_servers, "router")
        consumer = AIOKafkaConsumer(
            topics.AUTHORIZED,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **consumer_options(),
        )
        breakers = BreakerView(settings.kafka_bootstrap_servers)
        await producer.start()
        await consumer.start()
        await breakers.start()
        try:
            flags = cancels.Cancels()
            router = Router(
                channels,
                RetryPolicy(settings.attempts_per_channel, settings.backoff_ms),
                Circuits(
                    board=HealthBoard(_health_policy(settings)),
                    router_id=settings.instance_id or f"router-{os.getpid()}",
                    on_change=channels.save_health,
                ),
                rng=random.Random(settings.seed),  # noqa: S311 - load spreading, not crypto
                cancels=flags,
                breakers=breakers.board,
                bodies=BodyKeys(pool),
            )
            worker = RouterWorker(consumer, producer, router, settings.max_in_flight)
            log.info("router_started", group=settings.group_id)
            await run_until_signalled(
                worker.run(),
                channels.run(settings.channel_refresh_seconds),
                follow_changes(channels, settings.kafka_bootstrap_servers),
                cancels.listen(settings.kafka_bootstrap_servers, flags),
            )
        finally:
            await breakers.stop()
            await consumer.stop()
            await producer.stop()
    finally:
        await channels.close()
        await pool.close()


def _health_policy(settings: RouterSettings) -> HealthPolicy:
    return HealthPolicy(
        window_seconds=settings.health_window_seconds,
        min_samples=settings.health_min_samples,
        error_rate=settings.health_error_rate,
        consecutive_failures=settings.health_consecutive_failures,
        cool_down_seconds=settings.health_cool_down_seconds,
    )


def main() -> None:
    """Entry point: ``python -m tollway.router``."""
    settings = RouterSettings()
    configure_logging("router", settings.log_level, settings.log_json)
    start_observability("router", settings.metrics_port)
    try:
        run(serve(settings))
    except (SecretsNotConfiguredError, SecretKeyError) as exc:
        log.critical("router_not_started", reason=str(exc))
        sys.exit(f"router: not started: {exc}")
