"""The transactional outbox.

Events a consumer must emit are inserted in the same Postgres transaction as its effects and
published by the relay after commit.

A crash between commit and publish leaves the rows in place; the relay publishes them on the
next start. Consumers downstream deduplicate by event id, so a row published twice (crash after
send, before delete) has one effect.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
import structlog
from aiokafka.errors import KafkaError

from tollway.events.envelope import Envelope, encode
from tollway.runtime import metrics

if TYPE_CHECKING:
    from collections.abc import Callable

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


async def write_outbox(
    conn: asyncpg.Connection, schema: str, items: list[Outgoing]
) -> list[tuple[int, Outgoing]]:
    """Insert ``items`` in order; call inside the transaction that makes their cause durable.

    Returns each item with its ``seq``, for :meth:`OutboxRelay.kick` to publish from memory once
    the transaction has committed. One statement whatever the number of items.
    """
    if not items:
        return []
    seqs = await conn.fetch(
        f"INSERT INTO {schema}.outbox (topic, key, value, headers)"  # noqa: S608 - schema is a constant
        " SELECT t, k, v, h FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::jsonb[])"
        " WITH ORDINALITY AS u(t, k, v, h, n) ORDER BY n RETURNING seq",
        [o.topic for o in items],
        [o.key.encode() for o in items],
        [o.value for o in items],
        [_encode_headers(o.headers) for o in items],
    )
    # Rows are inserted in ``n`` order and seq is a sequence, so ascending seq is item order.
    return list(zip(sorted(r["seq"] for r in seqs), items, strict=True))


def _encode_headers(headers: tuple[tuple[str, bytes], ...]) -> str:
    return orjson.dumps([[k, v.decode("latin-1")] for k, v in headers]).decode()


class OutboxRelay:
    """Publishes a schema's committed outbox rows in order, then deletes them.

    Two ways in. The fast one: a writer hands its committed rows over with :meth:`kick`, and the
    relay claims them (a ``DELETE ... RETURNING`` that skips rows someone else holds), publishes
    them from memory and commits the delete once the broker acknowledged them: no second read of
    the row, and the delete's commit is not waited for on disk (a lost delete only republishes a
    row, which consumers deduplicate by event id). The sweep: rows nobody handed over (written
    before a restart, by a failed publish, or by a writer that kicks without rows) are read from the
    table in ``seq`` order. Both run on one task, so this relay never publishes out of order.
    """

    def __init__(
        self, pool: asyncpg.Pool, schema: str, producer: AIOKafkaProducer, batch: int = 2000
    ) -> None:
        """Relay rows of ``schema.outbox`` through ``producer``."""
        self._pool = pool
        self._schema = schema
        self._producer = producer
        self._batch = batch
        self._kick = asyncio.Event()
        self._handed: collections.deque[tuple[int, Outgoing]] = collections.deque()
        self._sweep = True  # rows may be left from before this process started
        # Called whenever a writer hands committed rows over: whatever else reacts to this
        # schema's new events (a sweeper, a dispatcher) sleeps until then.
        self._listeners: list[Callable[[], None]] = []
        self._select = (
            f"SELECT seq, topic, key, value, headers FROM {schema}.outbox"  # noqa: S608
            " ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
        )
        self._delete = f"DELETE FROM {schema}.outbox WHERE seq = ANY($1::bigint[])"  # noqa: S608
        self._claim = (
            f"DELETE FROM {schema}.outbox WHERE seq IN (SELECT seq FROM {schema}.outbox"  # noqa: S608
            " WHERE seq = ANY($1::bigint[]) FOR UPDATE SKIP LOCKED) RETURNING seq"
        )

    def kick(self, committed: list[tuple[int, Outgoing]] | None = None) -> None:
        """Wake the relay: ``committed`` rows (from :func:`write_outbox`), or some to sweep."""
        if committed is None:
            self._sweep = True
        else:
            self._handed.extend(committed)
            for listener in self._listeners:
                listener()
        self._kick.set()

    def on_commit(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (synchronously, cheap) each time committed rows are handed over."""
        self._listeners.append(listener)

    async def run(self, idle_seconds: float = 30.0) -> None:
        """Publish until cancelled; sweeps the table every ``idle_seconds`` when nobody kicks.

        Rows this relay was handed, and rows of a failed publish or from before this process
        started, never wait for that sweep; it only finds rows another process left behind (a
        replica that died before publishing), so it need not be frequent.
        """
        delay = 0.05
        while True:
            # Cleared before publishing: a kick that arrives meanwhile is seen on the next turn.
            self._kick.clear()
            try:
                more = await self.publish_pending()
            except (KafkaError, OSError, asyncpg.PostgresError) as exc:
                # Rows stay in the outbox (the transaction rolled back): the sweep publishes them.
                log.warning("outbox_publish_failed", schema=self._schema, error=repr(exc))
                self._handed.clear()
                self._sweep = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            if not more:
                try:
                    await asyncio.wait_for(self._kick.wait(), idle_seconds)
                except TimeoutError:
                    self._sweep = True

    async def publish_pending(self) -> bool:
        """Publish one batch (swept rows first); return whether more may be waiting."""
        if self._sweep:
            sent = await self._publish_swept()
            if sent >= self._batch:
                return True
            self._sweep = False
        if self._handed:
            await self._publish_handed()
        return bool(self._handed) or self._sweep

    async def _publish_handed(self) -> None:
        batch = [self._handed.popleft() for _ in range(min(self._batch, len(self._handed)))]
        started = time.perf_counter()
        async with self._pool.acquire() as conn:
            # Opened by hand: BEGIN and the setting share one round trip (asyncpg's
            # transaction() sends BEGIN on its own).
            await conn.execute("BEGIN; SET LOCAL synchronous_commit = off")
            try:
                seqs = [seq for seq, _ in batch]
                claimed = {r["seq"] for r in await conn.fetch(self._claim, seqs)}
                # A row another relay's sweep holds is that relay's to publish.
                mine = [o for seq, o in batch if seq in claimed]
                await self._send([(o.topic, o.key.encode(), o.value, o.headers) for o in mine])
            except BaseException:
                # The claim is undone and the rows stay for the sweep; a broken connection
                # has rolled back already, and the original error is the one to report.
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
        metrics.OUTBOX_PUBLISH_SECONDS.labels(self._schema).observe(time.perf_counter() - started)

    async def _publish_swept(self) -> int:
        started = time.perf_counter()
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(self._select, self._batch)
            if not rows:
                return 0
            await self._send(
                [
                    (
                        r["topic"],
                        bytes(r["key"]) if r["key"] is not None else None,
                        bytes(r["value"]),
                        tuple((k, v.encode("latin-1")) for k, v in _headers(r["headers"])),
                    )
                    for r in rows
                ]
            )
            await conn.execute(self._delete, [r["seq"] for r in rows])
        seqs = {r["seq"] for r in rows}
        # Rows handed over and swept meanwhile are published: do not send them twice.
        self._handed = collections.deque(h for h in self._handed if h[0] not in seqs)
        metrics.OUTBOX_PUBLISH_SECONDS.labels(self._schema).observe(time.perf_counter() - started)
        log.info("outbox_swept", schema=self._schema, count=len(rows))
        return len(rows)

    async def _send(
        self, messages: list[tuple[str, bytes | None, bytes, tuple[tuple[str, bytes], ...]]]
    ) -> None:
        futures = [
            await self._producer.send(topic, value=value, key=key, headers=list(headers))
            for topic, key, value, headers in messages
        ]
        await asyncio.gather(*futures)


def _headers(raw: Any) -> list[tuple[str, str]]:
    data = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    return [(str(k), str(v)) for k, v in data]
