"""The order a replay applies input events in: the live ledger's own order, read off its journal.

The ledger consumes two topics (gw.requests and gw.usage, partition N of each on one consumer).
Kafka orders each partition but not the two against each other, and a decision depends on that
interleaving: a request authorized before or after an earlier request settled sees another
balance. The journal (ledger.events, keyed by account) records, per account, the order in
which the live ledger applied the events that moved its money (each journal event names its
``cause_id``). A replay therefore merges the two partitions so that, for every account, causes
come in that recorded order; events that caused nothing may go anywhere their own partition
allows, and requests go first when both are free (a request precedes everything it causes).

A clock tick that expired nothing goes as early as its partition allows: applied earlier it
sees fewer holds (holds are placed from gw.requests, closed only from gw.usage, whose order is
fixed), so it still expires nothing, whereas applied later than live it could expire a hold
placed after its deadline. A tick that expired something is a cause and waits for its turn.

Pure: no IO. If the journal and the inputs disagree (a journal lost, inputs that were never
applied live), the merge cannot follow it and falls back to requests-first; it counts those
steps so the caller can report them.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

T = TypeVar("T")


@dataclass
class Spine:
    """Per account, the ids of the input events that caused its journal events, in order."""

    expected: dict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))
    accounts_of: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def from_journal(cls, events: Iterable[tuple[str, str]]) -> Spine:
        """Build from ``(account_id, cause_id)`` pairs in journal order (duplicates removed)."""
        spine = cls()
        for account, cause in events:
            if account not in spine.accounts_of[cause]:
                spine.accounts_of[cause].add(account)
                spine.expected[account].append(cause)
        return spine

    def ready(self, event_id: str) -> bool:
        """True unless a journal account still waits for an earlier cause before this one."""
        return all(
            not self.expected[a] or self.expected[a][0] == event_id
            for a in self.accounts_of.get(event_id, ())
        )

    def consume(self, event_id: str) -> None:
        """Mark ``event_id`` applied."""
        for account in self.accounts_of.get(event_id, ()):
            queue = self.expected[account]
            if queue and queue[0] == event_id:
                queue.popleft()


@dataclass
class Merged(Generic[T]):
    """The merged order and how many steps could not follow the journal."""

    order: list[T]
    diverged: int


def merge(
    requests: Sequence[T],
    usage: Sequence[T],
    spine: Spine,
    event_id: Callable[[T], str],
    early: Callable[[T], bool] = lambda _: False,
) -> Merged[T]:
    """Interleave one partition of each topic the way the live ledger did.

    ``early`` marks usage events that go before a ready request (clock ticks).
    """
    order: list[T] = []
    seen: set[str] = set()
    i = j = diverged = 0
    while i < len(requests) or j < len(usage):
        r = requests[i] if i < len(requests) else None
        u = usage[j] if j < len(usage) else None
        u_ready = u is not None and (event_id(u) in seen or spine.ready(event_id(u)))
        if u is not None and u_ready and early(u):
            pick, j = u, j + 1
        elif r is not None and (event_id(r) in seen or spine.ready(event_id(r))):
            pick, i = r, i + 1
        elif u is not None and u_ready:
            pick, j = u, j + 1
        elif r is not None:
            pick, i, diverged = r, i + 1, diverged + 1
        else:
            assert u is not None  # the loop condition guarantees one side is left
            pick, j, diverged = u, j + 1, diverged + 1
        seen.add(event_id(pick))
        spine.consume(event_id(pick))
        order.append(pick)
    return Merged(order, diverged)
