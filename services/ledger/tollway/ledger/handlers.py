"""The ledger's use cases, one per input event type: load -> decide -> append.

Called by the exactly-once consumer inside its batch transaction. Emitted events take ids
derived from their cause and the cause's ``occurred_at``, never the wall clock, so replaying the
same log reproduces the same journal byte for byte (ARCHITECTURE invariant 5).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import structlog

from tollway.events.envelope import Envelope, Payload
from tollway.events.gateway import (
    AttemptFinished,
    CostRerateRequested,
    HoldExtensionRequested,
    RequestFinished,
    RequestReceived,
    RerateRequested,
)
from tollway.events.ledger import (
    ClockTicked,
)
from tollway.events.recon import InvoiceLineImported
from tollway.ledger import (
    batch_store,
    cost_rerating,
    expiry,
    fold,
    fold_expiry,
    fold_inputs,
    fold_limits,
    fold_usage,
    recon_apply,
    rerating,
    store,
)
from tollway.ledger.resident import Call, Memory, Resident
from tollway.runtime.outbox import Outgoing

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    import asyncpg
    from aiokafka import TopicPartition

    from tollway.runtime.consumer import Record

log = structlog.get_logger(__name__)


class LedgerHandler:
    """Applies gw.requests and gw.usage records; returns the events to publish after commit.

    Runs of requests, attempts, finishes, hold extensions, budget and task definitions,
    top-ups, reversals, adjustments and price changes are folded in memory
    (:mod:`tollway.ledger.fold`) over the state of their partition and written back with
    multi-row statements; a clock tick is folded on its own. The other records (re-ratings,
    invoice imports) go through their use cases one at a time, after which their partition's
    state is read again from Postgres (inside the same transaction), so each sees the other's
    effects.

    ``resident``: keep each partition's state in memory across batches
    (:mod:`tollway.ledger.resident`); the consumer then tells the handler when a batch
    commits or fails, and which partitions it is assigned or loses. Without it every call
    loads what it needs from Postgres.
    """

    def __init__(
        self, recon_policy: recon_apply.ReconPolicy | None = None, *, resident: bool = False
    ) -> None:
        """``recon_policy``: when an imported invoice's drift raises an alert.

        ``resident``: see the class docstring.
        """
        self._recon = recon_policy or recon_apply.ReconPolicy()
        self._resident = Resident() if resident else None
        self._call: Call = Resident().call()

    async def __call__(self, conn: asyncpg.Connection, records: Sequence[Record]) -> list[Outgoing]:
        """Apply each record once (duplicates by event id are skipped)."""
        fresh = await store.mark_applied(conn, [(r.envelope.id, r.envelope.type) for r in records])
        todo: list[Record] = []
        for record in records:
            env = record.envelope
            if env.id not in fresh:
                log.info("duplicate_skipped", event_id=env.id, type=env.type)
                continue
            fresh.discard(env.id)  # a second copy in this batch is a duplicate too
            todo.append(record)
        owner = self._resident or Resident()
        # A call that raises leaves its layers behind: nothing it folded reaches memory.
        self._call = owner.call()
        out: list[Outgoing] = []
        for (_, folded), group in itertools.groupby(todo, key=_partition_and_kind):
            run = list(group)
            out.extend(await (self._fold_run(conn, run) if folded else self._one_by_one(conn, run)))
        owner.returned(self._call)
        return out

    # --- the consumer's partition-state hooks (:class:`tollway.runtime.consumer.PartitionState`)

    async def assigned(
        self,
        conn: asyncpg.Connection,
        partitions: Collection[TopicPartition],
        counts: Mapping[str, int],
    ) -> None:
        """Load assigned partitions in bulk, in the snapshot their stored offsets were read in."""
        if self._resident is None:
            return
        numbers = {tp.partition: counts.get(tp.topic, 0) for tp in partitions}
        self._resident.drop(numbers)
        for partition, count in sorted(numbers.items()):
            if count > 0:
                memory = await batch_store.load_partition(conn, partition, count)
                self._resident.install(partition, memory)

    def revoked(self, partitions: Collection[TopicPartition]) -> None:
        """Forget revoked partitions (their next owner loads them from Postgres)."""
        if self._resident is not None:
            self._resident.drop({tp.partition for tp in partitions})

    def committed(self) -> None:
        """The batch committed: what it folded is the partitions' state."""
        if self._resident is not None:
            self._resident.commit()

    def rolled_back(self) -> None:
        """The batch failed: drop its state (loaded again from Postgres when next needed)."""
        if self._resident is not None:
            self._resident.rollback()

    def forget(self) -> None:
        """Forget every partition's state (before applying a log to another database)."""
        if self._resident is not None:
            self._resident.clear()

    def memory(self, partition: int) -> Memory | None:
        """A partition's committed in-memory state (None when not loaded)."""
        return None if self._resident is None else self._resident.committed(partition)

    # --- applying runs -------------------------------------------------------------------------

    async def _fold_run(self, conn: asyncpg.Connection, run: list[Record]) -> list[Outgoing]:
        out: list[Outgoing] = []
        # A tick is decided alone: the holds it may expire include the ones placed just
        # before it, which the run written before it put in Postgres.
        for ticks, pieces in itertools.groupby(run, key=_is_tick):
            piece = list(pieces)
            for tick in piece if ticks else ():
                out.extend(await self._tick(conn, tick))
            if not ticks:
                effects = await _fold(conn, piece, self._call.memory(piece[0].partition))
                out.extend(effects.outgoing)
                out.extend(await recon_apply.response_alerts(conn, effects.recon, self._recon))
        return out

    async def _tick(self, conn: asyncpg.Connection, record: Record) -> list[Outgoing]:
        """Expire the partition's overdue holds in the fold (read first, decide, write)."""
        env = cast("Envelope[ClockTicked]", record.envelope)
        tick = env.payload
        due = [
            h
            for h in await store.expirable_holds(conn, tick.expire_before, tick.requests_before)
            if expiry.partition_of(h["account_id"], tick.partitions) == tick.partition
        ]
        # Taken before the early return: a failed batch drops every partition it called on.
        memory = self._call.memory(record.partition)
        if not due:
            return []
        requests = {h["request_id"] for h in due}
        await batch_store.fill(conn, memory, {h["account_id"] for h in due}, requests)
        state = memory.state
        held = {h.hold_id: h for r in requests for h in state.holds.get(r, ())}
        decision = fold_expiry.decide_tick(state, env, [held[h["hold_id"]] for h in due])
        effects = fold.Effects()
        fold.evolve(state, effects, decision)
        await batch_store.write(conn, state, effects)
        log.info("holds_expired", count=len(due), partition=tick.partition)
        return effects.outgoing

    async def _one_by_one(self, conn: asyncpg.Connection, run: list[Record]) -> list[Outgoing]:
        """Apply each record on its own, its partition's state read again from Postgres after.

        Records of the fold's types are folded alone over their partition's state read again
        from Postgres (how a subclass that folds nothing in runs applies them).
        """
        out: list[Outgoing] = []
        for folded, group in itertools.groupby(run, key=_foldable_type):
            part = list(group)
            if folded:
                for record in part:
                    self._call.forget(record.partition)
                    out.extend(await self._fold_alone(conn, record))
                continue
            async with store.receipt_batch(conn):
                for record in part:
                    out.extend(await self._apply(conn, record))
        # The use cases wrote to Postgres directly: the partition's state is read again.
        for partition in {r.partition for r in run}:
            self._call.forget(partition)
        return out

    async def _fold_alone(self, conn: asyncpg.Connection, record: Record) -> list[Outgoing]:
        if _is_tick(record):
            return await self._tick(conn, record)
        effects = await _fold(conn, [record], self._call.memory(record.partition))
        alerts = await recon_apply.response_alerts(conn, effects.recon, self._recon)
        return [*effects.outgoing, *alerts]

    async def _apply(self, conn: asyncpg.Connection, record: Record) -> list[Outgoing]:
        env = record.envelope
        if isinstance(env.payload, InvoiceLineImported):
            line = cast("Envelope[InvoiceLineImported]", env)
            return await recon_apply.import_line(conn, line, self._recon)
        use_case = _USE_CASES.get(type(env.payload))
        if use_case is not None:
            return await use_case(conn, env)
        log.info("event_ignored", type=env.type)
        return []


_FOLDED = (
    RequestReceived,
    AttemptFinished,
    RequestFinished,
    ClockTicked,
    HoldExtensionRequested,
    *fold_limits.DEFINITIONS,
    *fold_inputs.FOLDED,
)


def _foldable_type(record: Record) -> bool:
    return isinstance(record.envelope.payload, _FOLDED)


def _accounts_and_requests(run: list[Record]) -> tuple[set[str], set[str]]:
    """The accounts and requests a run's records name (a price change names neither)."""
    payloads = [r.envelope.payload for r in run]
    accounts = {a for p in payloads if (a := getattr(p, "account_id", None)) is not None}
    requests = {r for p in payloads if (r := getattr(p, "request_id", None)) is not None}
    return accounts, requests


def _is_tick(record: Record) -> bool:
    return isinstance(record.envelope.payload, ClockTicked)


def _partition_and_kind(record: Record) -> tuple[int, bool]:
    return record.partition, _foldable_type(record)


def decide(state: fold.State, record: Record) -> fold.Decision:
    """The fold's decision for one record of a folded run."""
    env: Envelope[Any] = record.envelope
    if isinstance(env.payload, RequestReceived):
        return fold.decide_request(state, env, record.offset)
    if isinstance(env.payload, AttemptFinished):
        return fold_usage.decide_attempt(state, env)
    if isinstance(env.payload, HoldExtensionRequested):
        return fold_expiry.decide_extension(state, env)
    if isinstance(env.payload, fold_limits.DEFINITIONS):
        return fold.Decision(defined=fold_limits.decide_definition(state, env))
    inputs = fold_inputs.decide(state, env)
    if inputs is not None:
        return inputs
    return fold_usage.decide_finish(state, env)


async def _fold(conn: asyncpg.Connection, run: list[Record], memory: Memory) -> fold.Effects:
    """Fold every record over the partition's state (loading what it lacks), write at once."""
    accounts, requests = _accounts_and_requests(run)
    await batch_store.fill(conn, memory, accounts, requests)
    payloads = [r.envelope.payload for r in run]
    budget_ids, task_ids = fold_limits.named(payloads)
    if budget_ids or task_ids:
        await batch_store.fill_names(conn, memory, budget_ids, task_ids)
    await batch_store.fill_inputs(conn, memory, payloads)
    state = memory.state
    effects = fold.Effects()
    for record in run:
        decision = decide(state, record)
        if not decision.steps and isinstance(record.envelope.payload, RequestFinished):
            log.warning("finish_without_open_hold", request_id=record.envelope.payload.request_id)
        fold.evolve(state, effects, decision)
    await batch_store.write(conn, state, effects)
    return effects


UseCase = Callable[["asyncpg.Connection", Envelope[Any]], Awaitable[list[Outgoing]]]

# One use case per input event type.
_USE_CASES: dict[type[Payload], UseCase] = {
    RerateRequested: rerating.rerate_account,
    CostRerateRequested: cost_rerating.rerate_costs,
}
