"""Replay as a pure fold: the whole log over one in-memory state, no database in the loop.

A replay starts from an empty ledger, so everything a decision needs is what the records before
it decided: :class:`Folder` keeps it in one :class:`~tollway.ledger.fold.State` (every
partition's accounts and requests; their keys never collide) and folds each record with the
live ledger's own ``decide``/``evolve`` (:func:`tollway.ledger.handlers.decide`,
:func:`tollway.ledger.fold.evolve`). What the fold wrote is kept compacted in :class:`Pending`
(journal rows, postings, balance moves, holds, receipts, costs) for one bulk write at the end
(:mod:`tollway.ledger.replay_store`).

The fold decides what the live handler folds, under the same conditions: requests without a
task of accounts no budget limits, attempts, finishes of requests no budget counts, extensions,
and clock ticks that expire no budget-counted hold. :meth:`Folder.fold` returns False for any
other record; the caller then applies it with its per-event use case (the one branch that goes
away once the fold decides every input). No IO, no clock.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tollway.events.gateway import (
    AttemptFinished,
    HoldExtensionRequested,
    RequestFinished,
    RequestReceived,
)
from tollway.events.ledger import ClockTicked
from tollway.ledger import domain, fold_expiry
from tollway.ledger.expiry import partition_of
from tollway.ledger.fold import Decision, Effects, Hold, State, evolve
from tollway.ledger.handlers import decide

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from tollway.events.envelope import Envelope
    from tollway.runtime.consumer import Record

JournalRow = tuple[str, str, str, str, "datetime", str]
PostingRow = tuple[str, str, str, int]

# The input types the fold decides (given the conditions above).
FOLDED = (RequestReceived, AttemptFinished, RequestFinished, ClockTicked, HoldExtensionRequested)


@dataclass(slots=True)
class Pending:
    """What the fold wrote and Postgres does not hold yet, compacted for the bulk write.

    ``journal``: (event_id, type, account_id, cause_id, occurred_at, encoded envelope) in
    emission order; ``postings``: (event_id, account, unit, amount) in order; ``moves``: the
    balance change per (account, unit); ``applied``: the input events folded, (id, type), in
    order; ``effects``: holds, receipts, costs and reconciliation rows (journal and messages
    are moved out of it after every record, so nothing holds the envelopes).
    """

    journal: list[JournalRow] = field(default_factory=list)
    postings: list[PostingRow] = field(default_factory=list)
    moves: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    applied: list[tuple[str, str]] = field(default_factory=list)
    effects: Effects = field(default_factory=Effects)

    def __len__(self) -> int:
        """Input events folded since the last write."""
        return len(self.applied)


@dataclass
class Folder:
    """The replay's state: the fold's, plus what it needs to decide without a database.

    ``open``: open holds by id (a tick finds its due holds without reading every request);
    ``limited_accounts``/``limited_requests``: accounts budgets or tasks limit and requests a
    budget counts (their records go through the use cases, as live); ``requests_of``: each
    account's requests in memory; ``stale``: request -> account, for requests a use case may have
    changed in Postgres, to be read back before the fold uses them again.
    """

    state: State = field(default_factory=State)
    pending: Pending = field(default_factory=Pending)
    open: dict[str, Hold] = field(default_factory=dict)
    limited_accounts: set[str] = field(default_factory=set)
    limited_requests: set[str] = field(default_factory=set)
    requests_of: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    stale: dict[str, str] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    poison: int = 0
    _partitions: dict[tuple[str, int], int] = field(default_factory=dict)

    # --- the fold ------------------------------------------------------------------------------

    def fold(self, record: Record) -> bool:
        """Decide ``record`` and fold it in; False when the fold does not decide it (yet).

        A record whose decision raises is poison (the live consumer dead-letters it): it is
        counted and has no effect, and a later copy of its id is tried again, as live.
        """
        env: Envelope[Any] = record.envelope
        if not self.foldable(record):
            return False
        try:
            if isinstance(env.payload, ClockTicked):
                due = self.due(env.payload)
                if any(h.request_id in self.limited_requests for h in due):
                    return False  # holds counted against a budget: the use case expires them
                decision = fold_expiry.decide_tick(self.state, env, due)
            else:
                decision = decide(self.state, record)
            for kind, item in decision.steps:
                if kind == "journal":
                    domain.check_balanced(getattr(item.payload, "postings", ()))
        except Exception:  # noqa: BLE001 - the live consumer dead-lettered it: no effect here either
            self.poison += 1
            return True
        self._evolve(decision)
        self.pending.applied.append((env.id, env.type))
        self.seen.add(env.id)
        return True

    def foldable(self, record: Record) -> bool:
        """Whether the live handler folds ``record`` given what budgets and tasks limit."""
        p = record.envelope.payload
        if isinstance(p, RequestReceived):
            return p.task_id is None and p.account_id not in self.limited_accounts
        if isinstance(p, RequestFinished):
            return (
                p.account_id not in self.limited_accounts
                and p.request_id not in self.limited_requests
            )
        return isinstance(p, FOLDED)

    def due(self, tick: ClockTicked) -> list[Hold]:
        """The open holds ``tick`` expires, in the order ``store.expirable_holds`` reads them."""
        return sorted(
            (
                h
                for h in self.open.values()
                if h.deadline_at < tick.expire_before
                and (
                    tick.requests_before is None
                    or h.request_offset is None
                    or h.request_offset < tick.requests_before
                )
                and self._partition(h.account_id, tick.partitions) == tick.partition
            ),
            key=lambda h: (h.deadline_at, h.hold_id),
        )

    def _partition(self, account_id: str, partitions: int) -> int:
        key = (account_id, partitions)
        found = self._partitions.get(key)
        if found is None:
            found = self._partitions[key] = partition_of(account_id, partitions)
        return found

    def _evolve(self, decision: Decision) -> None:
        pending = self.pending
        effects = pending.effects
        evolve(self.state, effects, decision)
        for env, message in effects.journal:
            p = env.payload
            raw = message.value.decode()
            at = env.occurred_at
            pending.journal.append((env.id, env.type, p.account_id, p.cause_id, at, raw))
            for posting in getattr(p, "postings", ()):
                pending.postings.append((env.id, posting.account, posting.unit, posting.amount))
                pending.moves[(posting.account, posting.unit)] += posting.amount
        effects.journal.clear()
        effects.outgoing.clear()  # nothing is published by a replay
        self._index(decision.holds)
        if decision.new_receipt is not None:
            row = decision.new_receipt
            self.requests_of[row.account_id].add(row.request_id)

    def _index(self, holds: Iterable[Hold]) -> None:
        for h in holds:
            if h.status == "open":
                self.open[h.hold_id] = h
            else:
                self.open.pop(h.hold_id, None)

    # --- what the per-event use cases changed (the branch that goes with them) ----------------

    def written(self) -> None:
        """Everything pending is in Postgres now."""
        self.pending = Pending()

    def needs(self, record: Record) -> set[str]:
        """Stale requests to read back before ``record`` is decided (a tick needs them all)."""
        if not self.stale:
            return set()
        p = record.envelope.payload
        if isinstance(p, ClockTicked):
            return set(self.stale)
        request_id = getattr(p, "request_id", None)
        return {request_id} if request_id in self.stale else set()

    def forget_requests(self, account_id: str) -> None:
        """A use case may have changed any of the account's requests: read them back when used."""
        for request_id in self.requests_of.get(account_id, ()):
            self.stale[request_id] = account_id
            for h in self.state.holds.pop(request_id, ()):
                self.open.pop(h.hold_id, None)
            self.state.receipts.pop(request_id, None)

    def reload(
        self,
        accounts: dict[str, tuple[dict[tuple[str, str], str], dict[tuple[str, str], int], bool]],
        requests: dict[str, tuple[tuple[Hold, ...], Any, bool]],
    ) -> None:
        """Install what Postgres holds for ``accounts`` and ``requests`` (read by the caller).

        ``accounts``: account -> (its bucket units, its bucket balances, limited);
        ``requests``: request -> (its holds, its receipt or None, counted by a budget).
        """
        s = self.state
        for account, (units, balances, limited) in accounts.items():
            s.units.update(units)
            s.balances.update(balances)
            _flag(self.limited_accounts, account, on=limited)
        for request_id, (holds, receipt, limited) in requests.items():
            self.stale.pop(request_id, None)
            for h in s.holds.get(request_id, ()):
                self.open.pop(h.hold_id, None)
            if holds:
                s.holds[request_id] = holds
                self._index(holds)
            else:
                s.holds.pop(request_id, None)
            if receipt is not None:
                s.receipts[request_id] = receipt
                self.requests_of[receipt.account_id].add(request_id)
            else:
                s.receipts.pop(request_id, None)
            _flag(self.limited_requests, request_id, on=limited)


def _flag(flags: set[str], key: str, *, on: bool) -> None:
    if on:
        flags.add(key)
    else:
        flags.discard(key)
