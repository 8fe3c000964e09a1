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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from tollway.events import topics
from tollway.events.envelope import UnknownEventTypeError, decode
from tollway.ledger import finance_store, spine
from tollway.ledger.handlers import LedgerHandler
from tollway.runtime.consumer import Record
from tollway.runtime.migrations import apply_migrations

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger(__name__)

INPUTS = (topics.REQUESTS, topics.USAGE)
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


async def end_offsets(bootstrap: str, names: tuple[str, ...]) -> Offsets:
    """The current end (next offset) of every partition of ``names``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [
            TopicPartition(name, p)
            for name in names
            for p in sorted(
                consumer.partitions_for_topic(name) or await _partitions(consumer, name)
            )
        ]
        ends = await consumer.end_offsets(tps)
        return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, name: str) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public call
    return consumer.partitions_for_topic(name) or set()


async def read_log(
    bootstrap: str, ends: Offsets, progress: Callable[[str, int, int], None] | None = None
) -> dict[tuple[str, int], list[Any]]:
    """Every message from offset 0 up to ``ends``, per partition."""
    out: dict[tuple[str, int], list[Any]] = {key: [] for key in ends}
    wanted = {TopicPartition(t, p): end for (t, p), end in ends.items() if end > 0}
    total, done = sum(wanted.values()), 0
    if not wanted:
        return out
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        await consumer.seek_to_beginning(*wanted)
        while wanted:
            batch = await consumer.getmany(*wanted, timeout_ms=500, max_records=20_000)
            for tp, messages in batch.items():
                keep = [m for m in messages if m.offset < wanted.get(tp, 0)]
                out[(tp.topic, tp.partition)].extend(keep)
                done += len(keep)
                if messages and messages[-1].offset + 1 >= wanted.get(tp, 0):
                    consumer.pause(tp)
                    wanted.pop(tp, None)
            if progress is not None:
                progress("read", done, total)
    finally:
        await consumer.stop()
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
        merged = spine.merge(reqs, usage, journal, lambda r: r.envelope.id)
        order.extend(merged.order)
        diverged += merged.diverged
        poison += bad_r + bad_u
    return order, diverged, poison


async def apply_records(
    pool: asyncpg.Pool,
    records: list[Record],
    batch: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> int:
    """Run ``records`` through the live handler, ``batch`` per transaction; return poison count."""
    handler = LedgerHandler()
    failed = 0
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        async with pool.acquire() as conn, conn.transaction():
            failed += await _apply_chunk(conn, handler, chunk)
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
) -> ReplayResult:
    """Rebuild the ledger into ``database`` from the topics; return counts, speed and digest."""
    inputs = ends or await end_offsets(bootstrap, INPUTS)
    journal_ends = await end_offsets(bootstrap, (topics.LEDGER_EVENTS,))
    messages = await read_log(bootstrap, {**inputs, **journal_ends}, progress)
    order, diverged, poison = apply_order(messages, journal_spine(messages))
    target = await fresh_database(dsn, database)
    pool = await asyncpg.create_pool(target, min_size=1, max_size=2)
    try:
        started = time.perf_counter()
        poison += await apply_records(pool, order, batch, progress)
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
