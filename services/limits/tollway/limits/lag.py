"""Consumer and projection lag, raised as ``consumer_lag_records`` alerts.

How far the ledger's and this service's offsets (stored with their effects) trail the log.

Lag is an observation of now, not a fold of events: the wall clock dates these alerts and their
ids are fresh. Each group alerts at most once per ``window`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from tollway.events.envelope import make
from tollway.events.limits import Alert
from tollway.limits import alerts, store
from tollway.runtime.kafka import partitions_of
from tollway.runtime.outbox import write_outbox

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tollway.runtime.outbox import OutboxRelay

log = structlog.get_logger(__name__)

# group -> (schema that stores its offsets, topics it consumes)
WATCHED: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "ledger": ("ledger", ("gw.requests", "gw.usage")),
    "limits": ("limits", ("gw.requests", "gw.usage", "ledger.events", "limits.breakers")),
}


async def group_lag(
    pool: asyncpg.Pool, consumer: AIOKafkaConsumer, schema: str, group: str, names: tuple[str, ...]
) -> int:
    """Records in ``names`` the group has not applied yet (per its offsets in Postgres)."""
    tps = [tp for t in names for tp in await partitions_of(consumer, t)]
    if not tps:
        return 0
    ends = await consumer.end_offsets(tps)
    try:
        stored = await store.stored_offsets(pool, schema, group)
    except asyncpg.UndefinedTableError:  # that service has not migrated here
        return 0
    return sum(max(0, end - stored.get((tp.topic, tp.partition), 0)) for tp, end in ends.items())


async def check_once(
    pool: asyncpg.Pool, consumer: AIOKafkaConsumer, threshold: int, window: int
) -> int:
    """Raise an alert for every group behind by more than ``threshold`` records."""
    raised = 0
    for group, (schema, names) in WATCHED.items():
        lag = await group_lag(pool, consumer, schema, group, names)
        if lag <= threshold:
            continue
        now = datetime.now(UTC)
        alert = Alert(
            scope="consumer",
            scope_id=group,
            metric="consumer_lag_records",
            value=lag,
            threshold=threshold,
            window_seconds=window,
            window_end=now,
            message=f"Consumer group {group} is {lag} records behind the log.",
        )
        async with pool.acquire() as conn, conn.transaction():
            if not await store.claim_alert(conn, "consumer", group, alert.metric, now, window):
                continue
            message = await alerts.publish_envelope(conn, make(alert, occurred_at=now))
            await write_outbox(conn, "limits", [message])
        raised += 1
    return raised


async def watch_lag(
    pool: asyncpg.Pool, bootstrap: str, relay: OutboxRelay, threshold: int, every: float
) -> None:
    """Check every ``every`` seconds until cancelled."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        while True:
            with contextlib.suppress(OSError, KafkaError, asyncpg.PostgresError):
                await consumer.topics()
                if await check_once(pool, consumer, threshold, window=300):
                    relay.kick()
            await asyncio.sleep(every)
    finally:
        await consumer.stop()
