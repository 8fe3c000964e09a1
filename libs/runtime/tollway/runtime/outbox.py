"""The transactional outbox.

Events a consumer must emit are inserted in the same Postgres transaction as its effects and
published by the relay after commit.

A crash between commit and publish leaves the rows in place; the relay publishes them on the
next start. Consumers downstream deduplicate by event id, so a row published twice (crash after
send, before delete) has one effect.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
import structlog
from aiokafka.errors import KafkaError

from tollway.events.envelope import Envelope, encode

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish after commit."""

    topic: str
    key: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def of(cls, topic: str, key: str, envelope: Envelope[Any]) -> Outgoing:
        """Wrap an envelope bound for ``topic`` under partition key ``key``."""
        return cls(topic, key, encode(envelope))


def outbox_ddl(schema: str) -> str:
    """DDL for a service's outbox table (used by its migrations)."""
    return (
        f"CREATE TABLE {schema}.outbox (seq bigserial PRIMARY KEY, topic text NOT NULL,"
        " key bytea, value bytea NOT NULL, headers jsonb NOT NULL DEFAULT '[]')"
    )


async def write_outbox(conn: asyncpg.Connection, schema: str, items: list[Outgoing]) -> None:
    """Insert ``items`` in order; call inside the transaction that makes their cause durable."""
    if not items:
        return
    await conn.executemany(
        f"INSERT INTO {schema}.outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4::jsonb)",  # noqa: S608 - schema is a constant
        [
            (
                o.topic,
                o.key.encode(),
                o.value,
                orjson.dumps([[k, v.decode("latin-1")] for k, v in o.headers]).decode(),
            )
            for o in items
        ],
    )


class OutboxRelay:
    """Publishes a schema's outbox rows in order, then deletes them; one batch at a time."""

    def __init__(
        self, pool: asyncpg.Pool, schema: str, producer: AIOKafkaProducer, batch: int = 2000
    ) -> None:
        """Relay rows of ``schema.outbox`` through ``producer``."""
        self._pool = pool
        self._schema = schema
        self._producer = producer
        self._batch = batch
        self._kick = asyncio.Event()
        self._select = (
            f"SELECT seq, topic, key, value, headers FROM {schema}.outbox"  # noqa: S608
            " ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
        )
        self._delete = f"DELETE FROM {schema}.outbox WHERE seq = ANY($1::bigint[])"  # noqa: S608

    def kick(self) -> None:
        """Wake the relay: new rows were committed."""
        self._kick.set()

    async def run(self, idle_seconds: float = 0.5) -> None:
        """Publish until cancelled; polls every ``idle_seconds`` when nobody kicks."""
        delay = 0.05
        while True:
            try:
                sent = await self.publish_pending()
            except (KafkaError, OSError, asyncpg.PostgresError) as exc:
                # Rows stay in the outbox (the transaction rolled back): publish them later.
                log.warning("outbox_publish_failed", schema=self._schema, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            if sent < self._batch:
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), idle_seconds)

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows; return how many were sent."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(self._select, self._batch)
            if not rows:
                return 0
            futures = [
                await self._producer.send(
                    r["topic"],
                    value=bytes(r["value"]),
                    key=bytes(r["key"]) if r["key"] is not None else None,
                    headers=[(k, v.encode("latin-1")) for k, v in _headers(r["headers"])],
                )
                for r in rows
            ]
            await asyncio.gather(*futures)
            await conn.execute(self._delete, [r["seq"] for r in rows])
        log.info(
            "outbox_published",
            schema=self._schema,
            count=len(rows),
            topics=sorted({r["topic"] for r in rows}),
        )
        return len(rows)


def _headers(raw: Any) -> list[tuple[str, str]]:
    data = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    return [(str(k), str(v)) for k, v in data]
