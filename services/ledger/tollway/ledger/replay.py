"""Rebuild every ledger projection from the retained topics into a fresh database.

Reads gw.requests and gw.usage (the inputs) and ledger.events (the journal) from offset 0,
orders the inputs the way the live ledger applied them (:mod:`tollway.ledger.spine`), decodes
each record once and folds them all over one in-memory state with the live ledger's own
``decide``/``evolve`` (:mod:`tollway.ledger.replay_fold`), with no database in the loop; the
journal, postings and projections are then written in bulk into a database created for the
purpose (:mod:`tollway.ledger.replay_store`). Nothing is published. The result carries the state
digest, so a replay can be compared with the live ledger byte for byte.

Records the fold does not decide yet (budgets and tasks, top-ups, corrections, prices) are
applied one at a time by the live handler's use cases, after what the fold holds is written; what
they touched is read back into the fold's state.
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
from tollway.ledger import finance_store, replay_store, spine
from tollway.ledger.handlers import LedgerHandler
from tollway.ledger.replay_fold import Folder
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
    # Wall seconds per phase (decode, fold, write), and this process's CPU seconds in each (on
    # a machine shared with other work the second says what the phase costs by itself).
    phases: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        """Input events per second, end to end: decode, fold and write (``phases`` splits it)."""
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
                # With a known end, silence is a slow broker (a busy machine), not the end: it
                # is waited out far longer before the partition is given up on.
                idle = idle_seconds if cursor.stop_at is None else max(idle_seconds, 30.0)
                if ended or now - cursor.idle_since > idle:
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


async def fold_records(
    conn: asyncpg.Connection,
    records: list[Record],
    progress: Callable[[str, int, int], None] | None = None,
    handler: LedgerHandler | None = None,
) -> Folder:
    """Fold ``records`` over one in-memory state; return it, with what it has not written yet.

    The records the fold does not decide yet go through the live handler's use cases
    (:func:`tollway.ledger.replay_store.apply_alone`): what the fold holds is written first,
    and what the record touched is read back. A log the fold decides whole never waits on the
    database here.
    """
    folder = Folder()
    alone = handler or LedgerHandler()
    for n, record in enumerate(records, 1):
        if record.envelope.id in folder.seen:
            log.info("duplicate_skipped", event_id=record.envelope.id)
        elif (stale := folder.needs(record)) or not folder.fold(record):
            await _apply_alone(conn, folder, alone, record, stale)
        if progress is not None and (n % 4096 == 0 or n == len(records)):
            progress("fold", n, len(records))
    return folder


async def _apply_alone(
    conn: asyncpg.Connection,
    folder: Folder,
    handler: LedgerHandler,
    record: Record,
    stale: set[str],
) -> None:
    """The branch for what the fold does not decide (or needs read back first)."""
    if stale:
        # Only the requests: their accounts were read back right after the use case, and the
        # fold has moved their balances since (in memory, not yet written).
        await replay_store.read_back(conn, folder, (), stale)
        if folder.fold(record):
            return
    if len(folder.pending):
        await replay_store.write(conn, folder)
    accounts, requests, edited = replay_store.touched(folder, record)
    if not await replay_store.apply_alone(conn, handler, record):
        folder.poison += 1
        return
    folder.seen.add(record.envelope.id)
    for account in edited:
        folder.forget_requests(account)
    await replay_store.read_back(conn, folder, accounts, requests)


async def write_out(
    conn: asyncpg.Connection,
    folder: Folder,
    progress: Callable[[str, int, int], None] | None = None,
) -> None:
    """Write what the fold holds into the fresh database, in bulk."""
    total = len(folder.pending)

    def step(part: int) -> None:
        if progress is not None:
            progress("write", total * part // replay_store.PARTS, total)

    await replay_store.write(conn, folder, step=step)


async def replay(  # noqa: PLR0913 - the command's options
    dsn: str,
    bootstrap: str,
    database: str,
    *,
    ends: Offsets | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    handler: LedgerHandler | None = None,
) -> ReplayResult:
    """Rebuild the ledger into ``database`` from the topics; return counts, speed and digest.

    ``handler``: applies the records the fold does not decide yet (the live handler by default).
    """
    inputs = await read_log(
        bootstrap, await partitions_of(bootstrap, INPUTS), stop_at=ends, progress=progress
    )
    journal = await read_log(bootstrap, await partitions_of(bootstrap, (topics.LEDGER_EVENTS,)))
    messages = {**inputs, **journal}
    target = await fresh_database(dsn, database)
    conn = await asyncpg.connect(target)
    try:
        if progress is not None:
            progress("decode", 0, sum(len(m) for m in inputs.values()))
        started, started_cpu = time.perf_counter(), time.process_time()
        order, diverged, poison = apply_order(messages, journal_spine(messages))
        del messages, inputs, journal  # the decoded records are all the fold needs
        if progress is not None:
            progress("decode", len(order), len(order))
        decoded, decoded_cpu = time.perf_counter(), time.process_time()
        folder = await fold_records(conn, order, progress, handler)
        folded, folded_cpu = time.perf_counter(), time.process_time()
        await write_out(conn, folder, progress)
        written, written_cpu = time.perf_counter(), time.process_time()
        tables = await finance_store.table_digests(conn)
    finally:
        await conn.close()
    log.info(
        "ledger_replayed", events=len(order), seconds=round(written - started, 3), diverged=diverged
    )
    return ReplayResult(
        database=database,
        events=len(order),
        seconds=written - started,
        diverged=diverged,
        poison=poison + folder.poison,
        digest=finance_store.combine(tables),
        tables=tables,
        phases={
            "decode": decoded - started,
            "fold": folded - decoded,
            "write": written - folded,
        },
        cpu={
            "decode": decoded_cpu - started_cpu,
            "fold": folded_cpu - decoded_cpu,
            "write": written_cpu - folded_cpu,
        },
    )
