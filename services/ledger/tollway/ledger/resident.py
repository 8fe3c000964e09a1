"""The ledger's state kept in memory per owned partition, across batches.

gw.requests and gw.usage are co-partitioned by billing account, so partition N of both is one
set of accounts with one writer. For each partition it owns, the ledger keeps a
:class:`Memory`: the fold's :class:`~tollway.ledger.fold.State` (buckets, balances, open holds,
receipts in progress, budgets, tasks and their usage, idempotency keys and price versions
looked up, entries reversals named) and what of it is known (which accounts
and requests were loaded). A batch decides over it without reading Postgres again.

What the memory holds is always what Postgres holds as of the offsets this consumer last
stored, because it only ever changes with a commit:

- a handler call folds into its own layer (``ChainMap`` over the partition's memory); the layer
  joins the transaction's layers when the call returns, and is dropped when it raises (a poison
  record applied alone in a savepoint leaves nothing in memory either);
- :meth:`Resident.commit` (the consumer committed the batch) folds the transaction's layers
  into the partitions' memory; :meth:`Resident.rollback` (the transaction failed, or was
  fenced) drops them and the memory of every partition the batch touched, which is then
  loaded again from Postgres;
- records applied per event (top-ups, corrections, prices, definitions of budgets and tasks:
  their use cases write to Postgres directly) reset their partition's layer to an empty one,
  loaded again from Postgres inside the same transaction;
- a partition assigned is loaded in bulk from the projections in the snapshot its stored
  offsets are read from; a partition revoked is forgotten.

Requests without an open hold are evicted at commit (a later record of one loads it again), so
memory holds the accounts and the requests in flight, and the few idempotency keys, price
versions and reversed entries operators' commands looked up. Nothing here does IO.
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from tollway.ledger import domain
from tollway.ledger.fold import State

if TYPE_CHECKING:
    from collections.abc import Iterable, MutableMapping


@dataclass(slots=True)
class Memory:
    """One partition's state and what of it is known.

    ``accounts``: the accounts known (present: their buckets, balances, budgets with their
    usage, and tasks are in ``state``); ``requests``: the requests known (present: their holds,
    receipt and budget usage rows, if any, are in ``state``). The values are unused (False).
    """

    state: State = field(default_factory=State)
    accounts: MutableMapping[str, bool] = field(default_factory=dict)
    requests: MutableMapping[str, bool] = field(default_factory=dict)


# Every field of the fold's State is a mapping layered the same way.
_STATE_FIELDS = tuple(f.name for f in fields(State))


def _maps(memory: Memory) -> tuple[MutableMapping[Any, Any], ...]:
    """Every map of the memory: the state's (each of its fields), then what is known."""
    s = memory.state
    return (*(getattr(s, name) for name in _STATE_FIELDS), memory.accounts, memory.requests)


def child(memory: Memory) -> Memory:
    """A layer over ``memory``: reads fall through, writes stay in the layer."""
    *state_maps, accounts, requests = (ChainMap({}, m) for m in _maps(memory))
    state = State(**dict(zip(_STATE_FIELDS, state_maps, strict=True)))
    return Memory(state, accounts, requests)


def _top(mapping: MutableMapping[Any, Any]) -> MutableMapping[Any, Any]:
    return mapping.maps[0] if isinstance(mapping, ChainMap) else mapping


def absorb(into: Memory, layer: Memory) -> None:
    """Write ``layer``'s own changes into ``into`` (``layer`` must be a child of it)."""
    for target, source in zip(_maps(into), _maps(layer), strict=True):
        target.update(_top(source))


def _touched(layer: Memory) -> set[str]:
    """Requests a layer loaded or changed."""
    s = layer.state
    return (
        set(_top(layer.requests))
        | set(_top(s.holds))
        | set(_top(s.receipts))
        | set(_top(s.request_usage))
    )


def _evict(memory: Memory, requests: Iterable[str], balances: Iterable[tuple[str, str]]) -> None:
    """Forget requests without an open hold, and balances that are not a known bucket's."""
    s = memory.state
    for request_id in requests:
        if not any(h.status == "open" for h in s.holds.get(request_id, ())):
            s.holds.pop(request_id, None)
            s.receipts.pop(request_id, None)
            s.request_usage.pop(request_id, None)
            memory.requests.pop(request_id, None)
    for key in balances:
        if not _kept_balance(memory, key[0]):
            s.balances.pop(key, None)


def _kept_balance(memory: Memory, name: str) -> bool:
    """A known bucket's balance, or a known account's top-up or adjustment source."""
    for prefix in _SOURCE_PREFIXES:
        if name.startswith(prefix) and name[len(prefix) :] in memory.accounts:
            return True
    account, _, bucket = name.rpartition("/")
    known = (account, bucket) in memory.state.units
    return known and domain.bucket_account(account, bucket) == name


_SOURCE_PREFIXES = (domain.topup_source(""), domain.adjustment_source(""))


@dataclass(slots=True)
class Call:
    """One handler call's layers, per partition."""

    owner: Resident
    layers: dict[int, Memory] = field(default_factory=dict)
    reset: set[int] = field(default_factory=set)

    def memory(self, partition: int) -> Memory:
        """The partition's memory as this call sees it (its own layer over the batch's)."""
        layer = self.layers.get(partition)
        if layer is None:
            layer = self.layers[partition] = child(self.owner.base(partition))
        return layer

    def forget(self, partition: int) -> None:
        """Records were applied to Postgres directly: what memory held may be stale."""
        self.owner.enter(partition)
        self.layers[partition] = Memory()
        self.reset.add(partition)


class Resident:
    """Committed memory per partition, and the layers of the transaction in progress."""

    def __init__(self) -> None:
        """Nothing known yet: every partition loads from Postgres when first used."""
        self._committed: dict[int, Memory] = {}
        self._txn: dict[int, Memory] = {}
        self._txn_reset: set[int] = set()
        # Bumped whenever a partition's committed memory is dropped or replaced: a transaction
        # whose partition changed under it (revoked, assigned again mid-batch) keeps nothing.
        self._epoch: dict[int, int] = {}
        self._txn_epoch: dict[int, int] = {}

    def call(self) -> Call:
        """Layers for one handler call."""
        return Call(self)

    def base(self, partition: int) -> Memory:
        """What a call's layer of ``partition`` goes over.

        The transaction's layer, else the committed memory (the first call's layer then
        becomes the transaction's), else a new empty memory.
        """
        self.enter(partition)
        layer = self._txn.get(partition)
        if layer is None:
            layer = self._committed.get(partition)
        if layer is None:
            layer = self._txn[partition] = Memory()
            self._txn_reset.add(partition)
        return layer

    def enter(self, partition: int) -> None:
        """The transaction uses ``partition``: note which memory of it the transaction began on."""
        self._txn_epoch.setdefault(partition, self._epoch.get(partition, 0))

    def returned(self, call: Call) -> None:
        """A call returned: its layers join the transaction's."""
        for partition, layer in call.layers.items():
            if partition in call.reset:
                self._txn[partition] = layer
                self._txn_reset.add(partition)
            elif partition in self._txn:
                absorb(self._txn[partition], layer)
            else:
                self._txn[partition] = layer  # over the committed memory: its changes on top

    def commit(self) -> None:
        """The transaction committed: its layers become the partitions' memory."""
        for partition, layer in self._txn.items():
            if self._epoch.get(partition, 0) != self._txn_epoch.get(partition):
                self.drop([partition])  # changed hands meanwhile: loaded again when next used
                continue
            if partition in self._txn_reset:
                memory = self._committed[partition] = layer
            else:
                memory = self._committed[partition]
                absorb(memory, layer)
            _evict(memory, _touched(layer), list(_top(layer.state.balances)))
        self._end()

    def _end(self) -> None:
        self._txn.clear()
        self._txn_reset.clear()
        self._txn_epoch.clear()

    def rollback(self) -> None:
        """The transaction failed: drop its layers and what it touched (loaded again later)."""
        self.drop(list(self._txn))
        self._end()

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget ``partitions`` (revoked, or about to be loaded again)."""
        for partition in partitions:
            self._committed.pop(partition, None)
            self._epoch[partition] = self._epoch.get(partition, 0) + 1

    def clear(self) -> None:
        """Forget every partition."""
        self.drop(list(self._committed))
        self.drop(list(self._txn))
        self._end()

    def install(self, partition: int, memory: Memory) -> None:
        """``memory`` (loaded in bulk) is the partition's committed state."""
        self._committed[partition] = memory
        self._epoch[partition] = self._epoch.get(partition, 0) + 1

    def committed(self, partition: int) -> Memory | None:
        """The partition's committed memory, if any (read-only use: tests, digests)."""
        return self._committed.get(partition)
