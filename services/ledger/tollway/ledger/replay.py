"""Rebuild every ledger projection from the retained topics into a fresh database.

Reads gw.requests and gw.usage (the inputs) and ledger.events (the journal) from offset 0,
orders the inputs the way the live ledger applied them (:mod:`tollway.ledger.spine`), and runs
them through the same :class:`~tollway.ledger.handlers.LedgerHandler` the live consumer uses,
in batches, into a database created for the purpose. Nothing is published. The result carries
the state digest, so a replay can be compared with the live ledger byte for byte.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from tollway.events import topics
from tollway.events.envelope import UnknownEventTypeError, decode
from tollway.events.ledger import ClockTicked
from tollway.ledger import finance_store, spine
from tollway.ledger.handlers import LedgerHandler
from tollway.runtime.consumer import Record
from tollway.runtime.migrations import apply_migrations

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger(__name__)

INPUTS = (topics.REQUESTS, topics.USAGE)
TICK = ClockTicked.TYPE
Offsets = dict[tuple[str, int], int]


@dataclass
class ReplayResult:
    """What a replay did and the state it left."""

    database: str
    events: int
    seconds: float
    diverged: int
    poison: int
    digest: str
    tables: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        """Applied input events per second of the apply phase."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def target_dsn(dsn: str, database: str) -> str:
    """The same server as ``dsn``, another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def fresh_database(dsn: str, database: str) -> str:
    """Drop and create ``database`` next to the live one, with the ledger schema migrated."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    target = target_dsn(dsn, database)
    conn = await asyncpg.connect(target)
    try:
        await apply_migrations(conn, "ledger", "tollway.ledger")
    finally:
        await conn.close()
    return target


async def partitions_of(bootstrap: str, names: tuple[str, ...]) -> list[TopicPartition]:
    """Every partition of ``names`` (the services create these topics when they start)."""
    # The producer's partitions_for asks the broker for a topic's metadata (public API).
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        return [
            TopicPartition(name, p)
            for name in names
            for p in sorted(await producer.partitions_for(name))
        ]
    finally:
        await producer.stop()


@dataclass
class _Cursor:
    """Where one partition's read stops: a known end, a later event, or silence."""

    stop_at: int | None
    until: datetime
    idle_since: float = field(default_factory=time.monotonic)

    def keep(self, message: Any) -> bool:
        if self.stop_at is not None:
            return bool(message.offset < self.stop_at)
        try:
            data = orjson.loads(message.value) if message.value else {}
        except orjson.JSONDecodeError:
            return True  # a poison message: kept, so the replay skips it like the live ledger
        occurred = data.get("occurred_at", "") if isinstance(data, dict) else ""
        return not (isinstance(occurred, str) and occurred > self.until.isoformat())


async def read_log(
    bootstrap: str,
    partitions: list[TopicPartition],
    *,
    stop_at: Offsets | None = None,
    idle_seconds: float = 1.5,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[tuple[str, int], list[Any]]:
    """Every message of ``partitions`` from offset 0.

    A partition ends at its ``stop_at`` offset when one is given (the live ledger's stored
    offsets), else at the first event stamped after the read began, or after ``idle_seconds``
    without a message. The broker's high watermark is not trusted: an embedded broker reports
    one per batch, not per record.
    """
    started = datetime.now(UTC)
    cursors = {
        tp: _Cursor(None if stop_at is None else stop_at.get((tp.topic, tp.partition), 0), started)
        for tp in partitions
    }
    out: dict[tuple[str, int], list[Any]] = {(tp.topic, tp.partition): [] for tp in partitions}
    live = {tp for tp, c in cursors.items() if c.stop_at is None or c.stop_at > 0}
    if not live:
        return out
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    await consumer.start()
    try:
        consumer.assign(list(live))
        await consumer.seek_to_beginning(*live)
        done = 0
        while live:
            batch = await consumer.getmany(*live, timeout_ms=200, max_records=20_000)
            now = time.monotonic()
            for tp in list(live):
                cursor, messages = cursors[tp], batch.get(tp, [])
                keep = [m for m in messages if cursor.keep(m)]
                out[(tp.topic, tp.partition)].extend(keep)
                done += len(keep)
                cursor.idle_since = now if messages else cursor.idle_since
                ended = len(keep) < len(messages) or (
                    cursor.stop_at is not None and keep and keep[-1].offset + 1 >= cursor.stop_at
                )
                if ended or now - cursor.idle_since > idle_seconds:
                    consumer.pause(tp)
                    live.discard(tp)
            if progress is not None:
                progress("read", done, 0)
    finally:
        await consumer.stop()
    if progress is not None:
        progress("read", done, done)
    return out


def journal_spine(messages: dict[tuple[str, int], list[Any]]) -> spine.Spine:
    """(account, cause) of every journal event, per account in log order, duplicates dropped."""
    seen: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for key in sorted(k for k in messages if k[0] == topics.LEDGER_EVENTS):
        for m in messages[key]:
            data = orjson.loads(m.value)
            if data["id"] in seen:
                continue  # republished by the outbox relay after a crash
            seen.add(data["id"])
            pairs.append((data["payload"]["account_id"], data["payload"]["cause_id"]))
    return spine.Spine.from_journal(pairs)


def _decode(messages: list[Any]) -> tuple[list[Record], int]:
    records: list[Record] = []
    poison = 0
    for m in messages:
        try:
            env = decode(m.value)
        except (UnknownEventTypeError, ValidationError, ValueError):
            poison += 1  # the live consumer dead-lettered it: no effect either
            continue
        key = m.key.decode() if m.key is not None else None
        records.append(Record(m.topic, m.partition, m.offset, key, env))
    return records, poison


def apply_order(
    messages: dict[tuple[str, int], list[Any]], journal: spine.Spine
) -> tuple[list[Record], int, int]:
    """All input records in the live order; with the divergence and poison counts."""
    partitions = sorted({p for (t, p) in messages if t in INPUTS})
    order: list[Record] = []
    diverged = poison = 0
    for p in partitions:
        reqs, bad_r = _decode(messages.get((topics.REQUESTS, p), []))
        usage, bad_u = _decode(messages.get((topics.USAGE, p), []))
        merged = spine.merge(
            reqs, usage, journal, lambda r: r.envelope.id, lambda r: r.envelope.type == TICK
        )
        order.extend(merged.order)
        diverged += merged.diverged
        poison += bad_r + bad_u
    return order, diverged, poison


async def apply_records(
    pool: asyncpg.Pool,
    records: list[Record],
    batch: int,
    progress: Callable[[str, int, int], None] | None = None,
    handler: LedgerHandler | None = None,
) -> int:
    """Run ``records`` through the live handler, ``batch`` per transaction; return poison count."""
    # The live ledger's handler, keeping its state in memory across chunks: a chunk decides
    # over what the chunks before it left, and only writes (in bulk) to the database.
    handler = handler or LedgerHandler(resident=True)
    handler.forget()  # a fresh database: nothing it knew of another one holds here
    failed = 0
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        try:
            async with pool.acquire() as conn, conn.transaction():
                failed += await _apply_chunk(conn, handler, chunk)
        except BaseException:
            handler.rolled_back()
            raise
        handler.committed()
        if progress is not None:
            progress("apply", start + len(chunk), len(records))
    return failed


async def _apply_chunk(
    conn: asyncpg.Connection, handler: LedgerHandler, chunk: list[Record]
) -> int:
    # Same isolation as the live consumer: a record that fails alone has no effect (the live
    # consumer dead-lettered it), the others apply.
    try:
        async with conn.transaction():
            await handler(conn, chunk)
    except (asyncpg.PostgresConnectionError, OSError):
        raise
    except Exception:  # noqa: BLE001 - isolate the poison record below
        failed = 0
        for record in chunk:
            try:
                async with conn.transaction():
                    await handler(conn, [record])
            except (asyncpg.PostgresConnectionError, OSError):
                raise
            except Exception:  # noqa: BLE001 - the live consumer dead-lettered this one too
                failed += 1
        return failed
    return 0


async def replay(  # noqa: PLR0913 - the command's options
    dsn: str,
    bootstrap: str,
    database: str,
    *,
    ends: Offsets | None = None,
    batch: int = 1000,
    progress: Callable[[str, int, int], None] | None = None,
    handler: LedgerHandler | None = None,
) -> ReplayResult:
    """Rebuild the ledger into ``database`` from the topics; return counts, speed and digest."""
    inputs = await read_log(
        bootstrap, await partitions_of(bootstrap, INPUTS), stop_at=ends, progress=progress
    )
    journal = await read_log(bootstrap, await partitions_of(bootstrap, (topics.LEDGER_EVENTS,)))
    messages = {**inputs, **journal}
    order, diverged, poison = apply_order(messages, journal_spine(messages))
    target = await fresh_database(dsn, database)
    pool = await asyncpg.create_pool(target, min_size=1, max_size=2)
    try:
        started = time.perf_counter()
        poison += await apply_records(pool, order, batch, progress, handler)
        seconds = time.perf_counter() - started
        async with pool.acquire() as conn:
            tables = await finance_store.table_digests(conn)
    finally:
        await pool.close()
    log.info("ledger_replayed", events=len(order), seconds=round(seconds, 3), diverged=diverged)
    return ReplayResult(
        database=database,
        events=len(order),
        seconds=seconds,
        diverged=diverged,
        poison=poison,
        digest=finance_store.combine(tables),
        tables=tables,
    )
