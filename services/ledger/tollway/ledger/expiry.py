"""Where the ledger's clock expires holds: which partition's tick owns an account.

The ledger's clock is an event (``ClockTicked``) published into every partition of gw.usage,
so expiry happens at a fixed place in each partition's log: a replay of the same log expires
exactly the same holds, at the same event time (ARCHITECTURE invariants 5 and 7). Expiry and
extension are decided in the fold (:mod:`tollway.ledger.fold_expiry`).
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_of(account_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives an account key (murmur2, like Java)."""
    hashed: int = murmur2(account_id.encode())
    return (hashed & 0x7FFFFFFF) % partitions
