"""Finance's checks of the live ledger: the invariants, and live state = a replay of the log.

Each check is a fact with the offending count, so an operator sees what broke, not only that
something did. Reading the wall clock is fine here: this judges the projections, it is not one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from tollway.ledger import finance_store, replay

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass
class Check:
    """One invariant and whether it held."""

    name: str
    ok: bool
    detail: str


@dataclass
class Verification:
    """All checks, and the replay they compared against."""

    checks: list[Check] = field(default_factory=list)
    live_digest: str = ""
    replay_result: replay.ReplayResult | None = None

    @property
    def ok(self) -> bool:
        """Every check held."""
        return all(c.ok for c in self.checks)


async def invariant_checks(conn: asyncpg.Connection, grace: timedelta) -> list[Check]:
    """Zero-sum per unit, balances = Σ postings, holds closed or open within their deadline."""
    unbalanced = await finance_store.unbalanced_events(conn)
    totals = {u: t for u, t in (await finance_store.unit_totals(conn)).items() if t != 0}
    drift = await finance_store.balance_drift(conn)
    overdue = await finance_store.overdue_holds(conn, datetime.now(UTC) - grace)
    inconsistent = await finance_store.inconsistent_holds(conn)
    return [
        Check("zero_sum_per_event", unbalanced == 0, f"{unbalanced} events do not balance"),
        Check("zero_sum_per_unit", not totals, f"non-zero unit totals: {totals or 'none'}"),
        Check("balance_equals_postings", drift == 0, f"{drift} accounts drift from postings"),
        Check(
            "holds_end",
            not overdue,
            f"{len(overdue)} open holds past deadline + grace"
            + (f" (oldest {overdue[0]['hold_id']})" if overdue else ""),
        ),
        Check("hold_rows_consistent", inconsistent == 0, f"{inconsistent} inconsistent holds"),
    ]


@dataclass
class Snapshot:
    """The live ledger at one instant: its stored offsets, state digest and last outbox row."""

    offsets: replay.Offsets
    tables: dict[str, tuple[int, str]]
    outbox_seq: int


async def snapshot(conn: asyncpg.Connection, group: str) -> Snapshot:
    """Offsets and digest read in one repeatable-read transaction.

    They describe the same state, so the comparison holds while the live ledger keeps consuming.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        offsets = await finance_store.stored_offsets(conn, group)
        tables = await finance_store.table_digests(conn)
        outbox_seq = await finance_store.outbox_last_seq(conn)
    return Snapshot(offsets, tables, outbox_seq)


async def wait_journal_published(
    conn: asyncpg.Connection, through_seq: int, wait_seconds: float
) -> bool:
    """Wait until the outbox rows up to ``through_seq`` are on ledger.events (the spine)."""
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if not await finance_store.outbox_pending_through(conn, through_seq):
            return True
        await asyncio.sleep(0.2)
    return False


async def verify(  # noqa: PLR0913 - the command's options
    dsn: str,
    bootstrap: str,
    *,
    database: str,
    group: str,
    grace: timedelta,
    progress: Callable[[str, int, int], None] | None = None,
    wait_seconds: float = 60.0,
) -> Verification:
    """Run every check, replay the log into ``database`` and compare digests."""
    result = Verification()
    conn = await asyncpg.connect(dsn)
    try:
        result.checks = await invariant_checks(conn, grace)
        live = await snapshot(conn, group)
        published = await wait_journal_published(conn, live.outbox_seq, wait_seconds)
    finally:
        await conn.close()
    result.checks.append(
        Check("journal_published", published, "the journal of the compared state is on the log")
    )
    replayed = await replay.replay(dsn, bootstrap, database, ends=live.offsets, progress=progress)
    result.live_digest = finance_store.combine(live.tables)
    result.replay_result = replayed
    differing = [t for t in live.tables if live.tables[t] != replayed.tables.get(t)]
    detail = f"differing projections: {differing or 'none'}"
    if differing:
        detail += "\n" + "\n".join(await examples(dsn, replayed.database, differing))
    result.checks.append(
        Check("live_digest_equals_replay", result.live_digest == replayed.digest, detail)
    )
    return result


async def examples(dsn: str, database: str, tables: list[str]) -> list[str]:
    """A few differing rows per table, live against the replay."""
    live = await asyncpg.connect(dsn)
    other = await asyncpg.connect(replay.target_dsn(dsn, database))
    try:
        return [
            line
            for table in tables
            for line in await finance_store.row_differences(live, other, table)
        ]
    finally:
        await live.close()
        await other.close()
