"""The router's view of channels: base URL, adapter, secret, timeout.

Cached from Postgres and refreshed periodically; one pooled keep-alive HTTP client per channel
with a concurrency cap.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
import httpx
import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from tollway.events import topics
from tollway.router import reported_cost
from tollway.router.secrets import open_secret
from tollway.runtime.kafka import IDLE_POLL_MS, consumer_options, partitions_of
from tollway.runtime.sealing import SecretKeyError, key_id_of

if TYPE_CHECKING:
    from tollway.events.envelope import Envelope
    from tollway.events.routing import ChannelHealthChanged
    from tollway.router.reported_cost import CostReader
    from tollway.runtime.sealing import KeyRing

log = structlog.get_logger(__name__)

UPSERT_HEALTH = """
INSERT INTO router.channel_health AS h
    (channel_id, state, reason, error_rate, samples, p50_latency_ms, router_id, changed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (channel_id) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason,
    error_rate = EXCLUDED.error_rate, samples = EXCLUDED.samples,
    p50_latency_ms = EXCLUDED.p50_latency_ms, router_id = EXCLUDED.router_id,
    changed_at = EXCLUDED.changed_at
WHERE h.changed_at <= EXCLUDED.changed_at
"""
INSERT_HEALTH_EVENT = """
INSERT INTO router.channel_health_events
    (event_id, channel_id, from_state, to_state, reason, error_rate, router_id, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING
"""
MISS_REFRESH_SECONDS = 0.2
SELECT_CHANNELS = """
SELECT id, name, base_url, adapter, secret, timeout_ms, max_concurrency, enabled,
       reported_cost_path
FROM router.channels
"""


@dataclass
class Channel:
    """Connection details of one upstream channel. The secret never leaves this process."""

    id: str
    name: str
    base_url: str
    adapter: str
    secret: str
    timeout_ms: int
    max_concurrency: int
    enabled: bool
    client: httpx.AsyncClient = field(repr=False)
    slots: asyncio.Semaphore = field(repr=False)
    # Where the upstream's answer says what the call cost (None: ``usage.cost``).
    reported_cost_path: str | None = None

    @property
    def cost_reader(self) -> CostReader:
        """Reads the cost this channel's upstream reports."""
        return reported_cost.reader(self.id, self.reported_cost_path)


class ChannelCache:
    """Channels by id; ``refresh`` reloads rows and keeps clients of unchanged channels."""

    def __init__(self, pool: asyncpg.Pool, ring: KeyRing | None = None) -> None:
        """Read channels through ``pool``; their secrets are opened with ``ring``."""
        self._pool = pool
        self._ring = ring
        self._channels: dict[str, Channel] = {}
        self._next_miss_refresh = 0.0

    def get(self, channel_id: str) -> Channel | None:
        """The channel, or None when unknown or disabled."""
        channel = self._channels.get(channel_id)
        return channel if channel is not None and channel.enabled else None

    async def lookup(self, channel_id: str) -> Channel | None:
        """Like :meth:`get`, but an unknown id reloads first (rate-limited).

        The edge plans from Postgres, so a request can name a channel an operator added a moment
        ago, before this cache heard of it; reloading then beats failing the attempt.
        """
        if channel_id not in self._channels and time.monotonic() >= self._next_miss_refresh:
            self._next_miss_refresh = time.monotonic() + MISS_REFRESH_SECONDS
            try:
                await self.refresh()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("channel_refresh_failed", error=type(exc).__name__)
        return self.get(channel_id)

    async def refresh(self) -> None:
        """Reload every channel row."""
        rows = await self._pool.fetch(SELECT_CHANNELS)
        fresh: dict[str, Channel] = {}
        for row in rows:
            secret = self._secret(row["id"], row["secret"])
            if secret is None:
                continue
            old = self._channels.get(row["id"])
            same = old is not None and (old.base_url, old.timeout_ms, old.max_concurrency) == (
                row["base_url"],
                row["timeout_ms"],
                row["max_concurrency"],
            )
            client = old.client if same and old else _client(row["base_url"], row["timeout_ms"])
            slots = old.slots if same and old else asyncio.Semaphore(row["max_concurrency"])
            fresh[row["id"]] = Channel(
                **{**dict(row), "secret": secret}, client=client, slots=slots
            )
        stale = [
            c.client
            for k, c in self._channels.items()
            if k not in fresh or fresh[k].client is not c.client
        ]
        self._channels = fresh
        for client in stale:
            await client.aclose()

    def _secret(self, channel_id: str, stored: str) -> str | None:
        """The secret in clear, or None (the channel is left out) when it cannot be opened."""
        try:
            if self._ring is None:
                return open_secret_without_ring(stored)
            return open_secret(self._ring, channel_id, stored)
        except SecretKeyError as exc:
            log.warning("channel_secret_unreadable", channel_id=channel_id, error=str(exc))
            return None

    async def save_health(self, env: Envelope[ChannelHealthChanged]) -> None:
        """Keep a circuit transition for the admin API (the event itself goes to Kafka)."""
        h = env.payload
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    UPSERT_HEALTH,
                    h.channel_id,
                    h.to_state,
                    h.reason,
                    h.error_rate,
                    h.samples,
                    h.p50_latency_ms,
                    h.router_id,
                    env.occurred_at,
                )
                await conn.execute(
                    INSERT_HEALTH_EVENT,
                    env.id,
                    h.channel_id,
                    h.from_state,
                    h.to_state,
                    h.reason,
                    h.error_rate,
                    h.router_id,
                    env.occurred_at,
                )
        except (OSError, asyncpg.PostgresError) as exc:
            # Health is advisory: failing to record it must not fail the request.
            log.warning("channel_health_not_saved", error=type(exc).__name__)

    async def run(self, every_seconds: float) -> None:
        """Refresh forever (until cancelled)."""
        while True:
            await asyncio.sleep(every_seconds)
            try:
                await self.refresh()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("channel_refresh_failed", error=type(exc).__name__)

    async def close(self) -> None:
        """Close every HTTP client."""
        for channel in self._channels.values():
            await channel.client.aclose()


def open_secret_without_ring(stored: str) -> str:
    """A value in clear when no key is configured; a sealed one cannot be opened."""
    if key_id_of(stored) is not None:
        raise SecretKeyError("sealed, and no key is configured")
    return stored


def _client(base_url: str, timeout_ms: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        timeout=httpx.Timeout(timeout_ms / 1000, connect=min(5.0, timeout_ms / 1000)),
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
    )


async def follow_changes(cache: ChannelCache, bootstrap: str) -> None:
    """Reload the cache as soon as an operator's route-tree change is announced.

    Advisory: the timer in :meth:`ChannelCache.run` reloads anyway, so a broken connection only
    delays a change; it is retried and never stops the router.
    """
    while True:
        try:
            await _follow(cache, bootstrap)
        except KafkaError as exc:
            log.warning("route_changes_unreadable", error=type(exc).__name__)
            await asyncio.sleep(1)


async def _follow(cache: ChannelCache, bootstrap: str) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        **consumer_options(),
    )
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topics.ROUTE_CONFIG)
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)  # only changes from now on: the cache is fresh
        while True:
            batch = await consumer.getmany(timeout_ms=IDLE_POLL_MS)
            if not any(batch.values()):
                continue
            try:
                await cache.refresh()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("channel_refresh_failed", error=type(exc).__name__)
            else:
                log.info("route_tree_reloaded", changes=sum(map(len, batch.values())))
    finally:
        await consumer.stop()
