"""The exactly-once batch consumer.

Kafka offsets live in Postgres, in the same transaction as the effects they cover (ARCHITECTURE
invariant 4).

For each batch: one transaction drops the records below each partition's stored offset (a
redelivery already applied them), lets the handler write its effects and outbox rows, then
advances the stored offsets of all the batch's partitions in one statement - each only from the
value this consumer last read or wrote (fencing). A zombie that lost the partition meanwhile
finds another value there, and its whole transaction rolls back. The consumer remembers the
offsets it stored, so a batch costs no read of them; on (re)assignment, and after being fenced,
it reads them from Postgres and seeks there, never to Kafka's committed ones, so ``kill -9`` at
any moment neither loses nor repeats an effect.

A record that cannot be decoded, or whose handling fails with a non-infrastructure error, is a
poison message: it goes to ``<topic>.dlq`` (via the outbox, so that too is exactly once) with the
reason, and the partition keeps moving.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import asyncpg
import orjson
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from pydantic import ValidationError

from tollway.events.envelope import (
    Envelope,
    Payload,
    UnknownEventTypeError,
    decode_data,
    encode,
)
from tollway.events.topics import DLQ_SUFFIX, dlq_topic
from tollway.runtime import metrics
from tollway.runtime.kafka import IDLE_POLL_MS, consumer_options
from tollway.runtime.outbox import Outgoing, write_outbox
from tollway.runtime.tracing import TRACE_HEADERS, with_causes

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

    from tollway.runtime.outbox import OutboxRelay

log = structlog.get_logger(__name__)

RETRYABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


@dataclass(frozen=True, slots=True)
class Record:
    """A decoded message and where it came from."""

    topic: str
    partition: int
    offset: int
    key: str | None
    envelope: Envelope[Payload]
    # The bytes as consumed: a dead letter keeps them (a decoded envelope re-encoded as its
    # declared ``Payload`` base would lose the payload's fields).
    raw: bytes | None = None


class BatchHandler(Protocol):
    """Applies records inside the caller's transaction; returns what to publish after commit."""

    async def __call__(self, conn: asyncpg.Connection, records: Sequence[Record]) -> list[Outgoing]:
        """Apply ``records`` in order."""
        ...


@runtime_checkable
class PartitionState(Protocol):
    """A handler that keeps state in memory per partition across batches.

    The consumer tells it what its memory may hold: a partition assigned (called inside the
    repeatable-read snapshot its stored offsets are read in, so what it loads is the state
    those offsets describe), a partition revoked, a batch's transaction committed or failed
    (fenced, retried, poisoned: anything the batch folded must then be forgotten).
    """

    async def assigned(
        self,
        conn: asyncpg.Connection,
        partitions: Collection[TopicPartition],
        counts: Mapping[str, int],
    ) -> None:
        """``partitions`` are this consumer's now (``counts``: partitions per topic, 0 unknown)."""
        ...

    def revoked(self, partitions: Collection[TopicPartition]) -> None:
        """``partitions`` are no longer this consumer's."""
        ...

    def committed(self) -> None:
        """The batch the handler was last called for committed."""
        ...

    def rolled_back(self) -> None:
        """The batch the handler was last called for did not commit."""
        ...


# How long the offsets of records skipped without effect may stay unstored (see ``_skipped``).
SKIPPED_STORE_SECONDS = 1.0
# No record for this long: the stream is quiet (skipped records' offsets are then stored).
QUIET_MS = 100


class _PoisonInBatchError(Exception):
    """A record of the batch failed: apply the batch again, each record in a savepoint."""


class FencedError(RuntimeError):
    """Another consumer advanced a partition's stored offset first; re-seek and go on."""

    def __init__(self, partitions: list[TopicPartition]) -> None:
        """``partitions``: every partition the refused store covered, to read again."""
        super().__init__(", ".join(str(tp) for tp in partitions))
        self.partitions = partitions


def offsets_ddl(schema: str) -> str:
    """DDL for a service's consumer offsets table (used by its migrations)."""
    return (
        f"CREATE TABLE {schema}.consumer_offsets (group_id text NOT NULL, topic text NOT NULL,"
        " partition int NOT NULL, next_offset bigint NOT NULL,"
        " PRIMARY KEY (group_id, topic, partition))"
    )


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: TransactionalConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("partitions_revoked", partitions=sorted(str(tp) for tp in revoked))
        self._owner.forget(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._owner.seek_to_stored(list(assigned))


class TransactionalConsumer:
    """Consumes ``topics`` in a group, applying each batch in one Postgres transaction."""

    def __init__(  # noqa: PLR0913 - a composition-root constructor
        self,
        *,
        pool: asyncpg.Pool,
        schema: str,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        handler: BatchHandler,
        relay: OutboxRelay | None = None,
        max_records: int = 500,
        dead_letters: bool = True,
        event_types: Collection[str] | None = None,
        mid_batch: Callable[[asyncpg.Connection, Sequence[Record]], Awaitable[None]] | None = None,
    ) -> None:
        """Wire the consumer; nothing connects until :meth:`run`.

        ``mid_batch``: a test hook run inside each batch's transaction after the handler's
        effects, before the outbox rows and the offsets (crash tests stop the process there).
        """
        self._pool = pool
        self._schema = schema
        self._group = group_id
        self._topics = list(topics)
        self._handler = handler
        self._state = handler if isinstance(handler, PartitionState) else None
        self._relay = relay
        self._max_records = max_records
        # A group reading another service's topic leaves dead-lettering to the topic's owner, so
        # one poison message is one DLQ record; it still logs and skips the message.
        self._dead_letters = dead_letters
        # A group that handles a few types of a busy topic (limits reads every gw.requests
        # record, chat bodies included) skips the others before validating them: their offsets
        # still advance with the batch.
        self._event_types = frozenset(event_types) if event_types is not None else None
        self._mid_batch = mid_batch
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_records,
            **consumer_options(),
            # Range keeps partition N of gw.requests and gw.usage on one consumer: one writer
            # per account across both topics.
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        self._select_offsets = (
            f"SELECT topic, partition, next_offset FROM {schema}.consumer_offsets"  # noqa: S608
            " WHERE group_id = $1 AND topic = ANY($2::text[])"
        )
        # Every partition of a batch in one statement: a row advances only from the offset this
        # consumer expects there (-1: no row yet, so it inserts one). Under READ COMMITTED an
        # update that waited for a concurrent writer re-checks that condition on the new row, so
        # of two consumers racing over one partition exactly one commits. Returns the rows moved.
        self._store_offsets = (
            f"WITH u AS (SELECT * FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[])"  # noqa: S608
            " AS u(topic, partition, expected, next_offset)),"
            f" moved AS (UPDATE {schema}.consumer_offsets o SET next_offset = u.next_offset"
            " FROM u WHERE o.group_id = $1 AND o.topic = u.topic AND o.partition = u.partition"
            " AND o.next_offset = u.expected RETURNING 1),"
            f" created AS (INSERT INTO {schema}.consumer_offsets"
            " (group_id, topic, partition, next_offset)"
            " SELECT $1, topic, partition, next_offset FROM u WHERE expected = -1"
            " ON CONFLICT DO NOTHING RETURNING 1)"
            " SELECT (SELECT count(*) FROM moved) + (SELECT count(*) FROM created)"
        )
        # Next offset per assigned partition, as stored in Postgres (-1: nothing stored yet).
        self._stored: dict[tuple[str, int], int] = {}
        # Past records skipped without any effect (types this group does not handle), not stored
        # yet: they ride along with the next batch that has effects, or are stored on their own
        # when the stream goes quiet or after SKIPPED_STORE_SECONDS. Re-reading them after a
        # crash only skips them again, so they need no transaction (and no fsync) of their own.
        self._skipped: dict[tuple[str, int], int] = {}
        self._skipped_since = 0.0

    async def seek_to_stored(self, partitions: list[TopicPartition]) -> None:
        """Position each assigned partition at the offset stored with the effects."""
        stored = await self.load_stored(partitions)
        for tp in partitions:
            offset = stored[(tp.topic, tp.partition)]
            if offset < 0:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)
        log.info("partitions_assigned", group=self._group, count=len(partitions))

    async def load_stored(
        self, partitions: Collection[TopicPartition]
    ) -> dict[tuple[str, int], int]:
        """Read ``partitions``' stored offsets from Postgres into memory (-1: none stored yet).

        A handler that keeps partition state loads it in the same snapshot.
        """
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await conn.fetch(self._select_offsets, self._group, self._topics)
            if self._state is not None:
                await self._state.assigned(conn, partitions, self._partition_counts())
        stored = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
        for tp in partitions:
            self._stored[(tp.topic, tp.partition)] = stored.get((tp.topic, tp.partition), -1)
            self._skipped.pop((tp.topic, tp.partition), None)
        return self._stored

    def _partition_counts(self) -> dict[str, int]:
        """Partitions per consumed topic, as far as the broker's metadata says (0: unknown)."""
        return {t: len(self._consumer.partitions_for_topic(t) or ()) for t in self._topics}

    def forget(self, partitions: Collection[TopicPartition]) -> None:
        """Drop what this consumer knew of ``partitions``' stored offsets (they were revoked)."""
        if self._state is not None:
            self._state.revoked(partitions)
        for tp in partitions:
            self._stored.pop((tp.topic, tp.partition), None)
            self._skipped.pop((tp.topic, tp.partition), None)

    async def run(self) -> None:
        """Consume until cancelled."""
        self._consumer.subscribe(self._topics, listener=_SeekToStored(self))
        await self._consumer.start()
        try:
            while True:
                batch = await self._consumer.getmany(
                    timeout_ms=self._poll_ms(), max_records=self._max_records
                )
                if batch:
                    await self._apply_with_retry(batch)
                elif self._skipped:
                    await self._apply_with_retry({})  # quiet: store the skipped records' offsets
        finally:
            await self._consumer.stop()

    def _poll_ms(self) -> int:
        """How long the next fetch may block: until records come, or a short quiet spell.

        Skipped records' offsets are stored once the stream is quiet for QUIET_MS; with none
        waiting, an idle consumer blocks until the broker has records for it.
        """
        return QUIET_MS if self._skipped else IDLE_POLL_MS

    async def _apply_with_retry(self, batch: dict[TopicPartition, list[Any]]) -> None:
        delay = 0.05
        if batch:
            metrics.BATCH_RECORDS.labels(self._group).observe(sum(len(m) for m in batch.values()))
        isolate = False
        while True:
            started = time.perf_counter()
            try:
                committed = await self._apply(batch, isolate=isolate)
            except _PoisonInBatchError:
                log.warning("batch_failed_isolating", group=self._group)
                isolate = True
                continue
            except FencedError as exc:
                # Skipped partitions the store carried are read again too: left in memory, a
                # quiet flush would retry the same refused store for ever.
                log.warning("consumer_fenced", group=self._group, partitions=str(exc))
                await self.seek_to_stored(exc.partitions)
                return
            except RETRYABLE as exc:
                log.warning("batch_retry", group=self._group, error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            metrics.BATCH_APPLY_SECONDS.labels(self._group).observe(time.perf_counter() - started)
            if self._relay is not None and committed:
                self._relay.kick(committed)
            return

    async def _apply(
        self, batch: dict[TopicPartition, list[Any]], *, isolate: bool
    ) -> list[tuple[int, Outgoing]]:
        unknown = [tp for tp in batch if (tp.topic, tp.partition) not in self._stored]
        if unknown:
            await self.seek_to_stored(unknown)
            return []  # the fetched records may lie before the stored offsets: fetch again
        fresh: list[Any] = []
        ends: list[tuple[TopicPartition, int, int]] = []
        for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
            stored = self._stored[(tp.topic, tp.partition)]
            msgs = [m for m in batch[tp] if m.offset >= stored]
            fresh.extend(msgs)
            if msgs:
                ends.append((tp, stored, msgs[-1].offset + 1))
        records, outgoing = _decode_all(fresh, self._event_types)
        outgoing = self._owned(outgoing)
        if batch and not records and not outgoing and self._skip(ends):
            self._observe([], ends)
            return []
        ends = self._with_skipped(ends)
        if not ends:
            return []
        try:
            committed = await self._transact(records, fresh, outgoing, ends, isolate=isolate)
        except BaseException:
            # Whatever the handler folded in memory did not commit (a failed COMMIT included).
            if self._state is not None:
                self._state.rolled_back()
            raise
        if self._state is not None:
            self._state.committed()
        for tp, _, next_offset in ends:
            self._stored[(tp.topic, tp.partition)] = next_offset
        self._skipped.clear()
        self._observe(records, ends)
        return committed

    async def _transact(
        self,
        records: list[Record],
        fresh: list[Any],
        outgoing: list[Outgoing],
        ends: list[tuple[TopicPartition, int, int]],
        *,
        isolate: bool,
    ) -> list[tuple[int, Outgoing]]:
        """One transaction: the handler's effects, the outbox rows, the fenced offsets."""
        async with self._pool.acquire() as conn, conn.transaction():
            outgoing = [*outgoing, *await self._handle(conn, records, isolate=isolate)]
            if self._mid_batch is not None:
                await self._mid_batch(conn, records)
            outgoing = with_causes(outgoing, _trace_causes(fresh, records))
            committed = await write_outbox(conn, self._schema, outgoing)
            moved = await conn.fetchval(
                self._store_offsets,
                self._group,
                [tp.topic for tp, _, _ in ends],
                [tp.partition for tp, _, _ in ends],
                [expected for _, expected, _ in ends],
                [next_offset for _, _, next_offset in ends],
            )
            if moved != len(ends):
                raise FencedError([tp for tp, _, _ in ends])
        return committed

    def _skip(self, ends: list[tuple[TopicPartition, int, int]]) -> bool:
        """Remember a batch with nothing to apply; True while its offsets may wait unstored."""
        if not self._skipped:
            self._skipped_since = time.monotonic()
        for tp, _, next_offset in ends:
            self._skipped[(tp.topic, tp.partition)] = next_offset
        return time.monotonic() - self._skipped_since < SKIPPED_STORE_SECONDS

    def _with_skipped(
        self, ends: list[tuple[TopicPartition, int, int]]
    ) -> list[tuple[TopicPartition, int, int]]:
        """``ends`` plus the skipped partitions this batch does not move itself."""
        moving = {(tp.topic, tp.partition) for tp, _, _ in ends}
        extra = [
            (TopicPartition(*key), self._stored[key], next_offset)
            for key, next_offset in self._skipped.items()
            if key not in moving
        ]
        return ends + extra

    def _observe(self, records: list[Record], ends: list[tuple[TopicPartition, int, int]]) -> None:
        """After commit: events applied, how far behind the log end and the newest event."""
        for record in records:
            metrics.EVENTS_APPLIED.labels(self._group, record.envelope.type).inc()
        if records:
            newest = max(r.envelope.occurred_at for r in records)
            metrics.PROJECTION_LAG.labels(self._group).set(
                max(0.0, (datetime.now(UTC) - newest).total_seconds())
            )
        # A partition revoked while its batch was applied has no highwater here any more.
        assigned = self._consumer.assignment()
        for tp, _, next_offset in ends:
            if tp not in assigned:
                continue
            end = self._consumer.highwater(tp)
            if end is not None:
                metrics.CONSUMER_LAG.labels(self._group, tp.topic, tp.partition).set(
                    max(0, end - next_offset)
                )

    async def _handle(
        self, conn: asyncpg.Connection, records: list[Record], *, isolate: bool
    ) -> list[Outgoing]:
        if not records:
            return []
        if not isolate:
            # The whole batch in the batch's own transaction: no savepoint round trips. A failure
            # aborts that transaction; the batch is then applied again record by record.
            try:
                return await self._handler(conn, records)
            except RETRYABLE:
                raise
            except Exception as exc:
                raise _PoisonInBatchError from exc
        out: list[Outgoing] = []
        for record in records:
            try:
                async with conn.transaction():
                    out.extend(await self._handler(conn, [record]))
            except RETRYABLE:
                raise
            except Exception as exc:  # noqa: BLE001 - a poison message must not stop the partition
                out.append(_dead_letter(record.topic, record.key, None, record, exc))
        return self._owned(out)

    def _owned(self, out: list[Outgoing]) -> list[Outgoing]:
        if self._dead_letters:
            return out
        skipped = [o for o in out if o.topic.endswith(DLQ_SUFFIX)]
        for o in skipped:
            log.warning("poison_left_to_owner", group=self._group, dlq=o.topic, key=o.key)
        return [o for o in out if not o.topic.endswith(DLQ_SUFFIX)]


def _decode_all(
    messages: list[Any], event_types: frozenset[str] | None
) -> tuple[list[Record], list[Outgoing]]:
    records: list[Record] = []
    dead: list[Outgoing] = []
    for m in messages:
        key = m.key.decode() if m.key is not None else None
        try:
            data = orjson.loads(m.value or b"")
            if event_types is not None and (
                not isinstance(data, dict) or data.get("type") not in event_types
            ):
                continue  # not one this group handles: skipped before validating it
            envelope = decode_data(data)
        except (UnknownEventTypeError, ValidationError, ValueError) as exc:
            dead.append(_dead_letter(m.topic, key, m.value, None, exc))
            continue
        records.append(Record(m.topic, m.partition, m.offset, key, envelope, m.value))
    return records, dead


def _trace_causes(messages: list[Any], records: list[Record]) -> dict[str, tuple[Any, ...]]:
    """Trace headers of the consumed records by request id (only those that carried any)."""
    by_offset = {
        (m.topic, m.partition, m.offset): tuple(
            (k, v) for k, v in m.headers or () if k in TRACE_HEADERS
        )
        for m in messages
        if m.headers
    }
    causes: dict[str, tuple[Any, ...]] = {}
    for record in records:
        headers = by_offset.get((record.topic, record.partition, record.offset))
        if headers and record.envelope.trace.request_id:
            causes[record.envelope.trace.request_id] = headers
    return causes


def _dead_letter(
    topic: str, key: str | None, raw: bytes | None, record: Record | None, exc: Exception
) -> Outgoing:
    if raw is None and record is not None:
        raw = record.raw if record.raw is not None else encode(record.envelope)
    value = raw or b""
    reason = f"{type(exc).__name__}: {exc}"[:500]
    log.error("dead_lettered", topic=topic, reason=reason)
    metrics.DEAD_LETTERED.labels(topic).inc()
    return Outgoing(
        dlq_topic(topic), key or "", value, (("x-dlq-reason", reason.encode("ascii", "replace")),)
    )
