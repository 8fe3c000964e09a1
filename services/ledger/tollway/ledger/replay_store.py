"""Postgres side of a replay: the bulk write of the fold, and the path for records it skips.

:func:`write` puts what :class:`~tollway.ledger.replay_fold.Folder` holds into the fresh
database in one transaction: ``COPY`` for the new rows (journal, postings, holds, receipts,
applied events), one multi-row statement each for balances, changed holds and receipts, costs
and reconciliation rows. The append-only triggers still see every row.

:func:`apply_alone` is the narrow path for the records the fold does not decide yet (budgets and
tasks, top-ups, corrections, prices, ...): what the fold holds is written first, the record is
applied by the live handler's use case in its own transaction, and what it touched is read back
(:func:`touched`, :func:`read_back`). It goes away once the fold decides every input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from tollway.events.gateway import RerateRequested, ReversalRequested
from tollway.events.ledger import ClockTicked
from tollway.ledger import batch_store, cost_store, domain, recon_apply, recon_store

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from tollway.ledger.handlers import LedgerHandler
    from tollway.ledger.replay_fold import Folder
    from tollway.runtime.consumer import Record

JOURNAL = ("event_id", "type", "account_id", "cause_id", "occurred_at", "body")
POSTINGS = ("event_id", "account", "unit", "amount")
HOLDS = (
    "hold_id",
    "request_id",
    "account_id",
    "bucket",
    "unit",
    "amount",
    "status",
    "deadline_at",
    "opened_at",
    "closed_at",
    "request_offset",
)
RECEIPTS = (
    "request_id",
    "account_id",
    "key_id",
    "project_id",
    "task_id",
    "catalog_model",
    "status",
    "created_at",
    "body",
)
APPLIED = ("event_id", "type")
# Corrections that annotate receipts of requests settled long ago (any of the account's).
_EDITS_RECEIPTS = (ReversalRequested, RerateRequested)


async def _copy(
    conn: asyncpg.Connection, table: str, columns: tuple[str, ...], rows: list[Any]
) -> None:
    if rows:
        await conn.copy_records_to_table(table, schema_name="ledger", columns=columns, records=rows)


async def write(
    conn: asyncpg.Connection,
    folder: Folder,
    policy: recon_apply.ReconPolicy | None = None,
    step: Callable[[int], None] | None = None,
) -> None:
    """Write everything the fold holds, in one transaction; ``step(n)`` after each of 9 parts."""
    pending = folder.pending
    effects = pending.effects
    parts: list[Callable[[], Any]] = [
        lambda: _copy(conn, "journal", JOURNAL, pending.journal),
        lambda: _copy(conn, "postings", POSTINGS, pending.postings),
        lambda: _balances(conn, pending.moves),
        lambda: cost_store.insert(conn, effects.costs),  # after their journal rows (foreign key)
        lambda: _copy(conn, "holds", HOLDS, [_hold(h) for h in effects.opened.values()]),
        lambda: _changed_holds(conn, folder),
        lambda: _receipts(conn, folder),
        lambda: recon_store.insert_attempts(conn, effects.recon),
        lambda: _copy(conn, "applied_events", APPLIED, pending.applied),
    ]
    async with conn.transaction():
        for n, part in enumerate(parts, 1):
            await part()
            if step is not None:
                step(n)
        await recon_apply.response_alerts(conn, effects.recon, policy or recon_apply.ReconPolicy())
    folder.written()


PARTS = 9


def _hold(h: Any) -> tuple[Any, ...]:
    return tuple(getattr(h, c) for c in HOLDS)


async def _balances(conn: asyncpg.Connection, moves: dict[tuple[str, str], int]) -> None:
    keys = sorted(k for k, v in moves.items() if v)
    if keys:
        await conn.execute(
            batch_store.MOVE_BALANCES,
            [a for a, _ in keys],
            [u for _, u in keys],
            [moves[k] for k in keys],
        )


async def _changed_holds(conn: asyncpg.Connection, folder: Folder) -> None:
    hs = list(folder.pending.effects.changed.values())
    if hs:
        await conn.execute(
            batch_store.UPDATE_HOLDS,
            [h.hold_id for h in hs],
            [h.status for h in hs],
            [h.closed_at for h in hs],
            [h.deadline_at for h in hs],
        )


async def _receipts(conn: asyncpg.Connection, folder: Folder) -> None:
    effects, receipts = folder.pending.effects, folder.state.receipts
    new = [receipts[r] for r in sorted(effects.new_receipts)]
    await _copy(
        conn,
        "receipts",
        RECEIPTS,
        [
            (
                r.request_id,
                r.account_id,
                r.key_id,
                r.project_id,
                r.task_id,
                r.catalog_model,
                r.status,
                r.created_at,
                orjson.dumps(r.body).decode(),
            )
            for r in new
        ],
    )
    changed = [receipts[r] for r in sorted(effects.changed_receipts)]
    if changed:
        await conn.execute(
            batch_store.UPDATE_RECEIPTS,
            [r.request_id for r in changed],
            [r.status for r in changed],
            [orjson.dumps(r.body).decode() for r in changed],
        )


# --- the records the fold does not decide yet ----------------------------------------------------


async def apply_alone(conn: asyncpg.Connection, handler: LedgerHandler, record: Record) -> bool:
    """Apply ``record`` with the live handler in its own transaction; False when it failed.

    A record that fails has no effect (the live consumer dead-lettered it).
    """
    try:
        async with conn.transaction():
            await handler(conn, [record])
    except (asyncpg.PostgresConnectionError, OSError):
        raise
    except Exception:  # noqa: BLE001 - a poison record, as live
        return False
    return True


def touched(folder: Folder, record: Record) -> tuple[set[str], set[str], set[str]]:
    """What the use case of ``record`` may change: (accounts, requests, accounts' requests).

    The third: accounts any of whose requests it may change (corrections annotate old
    receipts). Read before the record is applied (a tick's due holds are closed after).
    """
    p = record.envelope.payload
    if isinstance(p, ClockTicked):
        due = folder.due(p)
        return {h.account_id for h in due}, {h.request_id for h in due}, set()
    account = getattr(p, "account_id", None)
    accounts = {account} if isinstance(account, str) else set()
    request = getattr(p, "request_id", None)
    requests = {request} if isinstance(request, str) else set()
    return accounts, requests, accounts if isinstance(p, _EDITS_RECEIPTS) else set()


# Which of the accounts and requests a replay reads back budgets or tasks limit: their records
# go through the live handler (the replay's fold state holds no budgets, tasks or usage).
SELECT_LIMITED = """
SELECT 'account' AS kind, account_id AS id FROM ledger.budgets WHERE account_id = ANY($1)
UNION SELECT 'request', request_id FROM ledger.budget_usage WHERE request_id = ANY($2)
"""


async def limited(
    conn: asyncpg.Connection, accounts: Collection[str], requests: Collection[str]
) -> tuple[set[str], set[str]]:
    """(accounts with budgets or tasks, requests counted against a budget) among those given."""
    rows = await conn.fetch(SELECT_LIMITED, list(accounts), list(requests))
    return (
        {r["id"] for r in rows if r["kind"] == "account"},
        {r["id"] for r in rows if r["kind"] == "request"},
    )


async def read_back(
    conn: asyncpg.Connection, folder: Folder, accounts: Collection[str], requests: Collection[str]
) -> None:
    """Read ``accounts`` and ``requests`` from Postgres into the fold's state (a few queries)."""
    if not accounts and not requests:
        return
    loaded = await batch_store.load(conn, list(accounts), list(requests))
    limited_accounts, limited_requests = await limited(conn, accounts, requests)
    folder.reload(
        {
            a: (
                {k: u for k, u in loaded.units.items() if k[0] == a},
                {
                    k: v
                    for k, v in loaded.balances.items()
                    if any(k[0] == domain.bucket_account(a, b) for (x, b) in loaded.units if x == a)
                },
                a in limited_accounts,
            )
            for a in accounts
        },
        {
            r: (loaded.holds.get(r, ()), loaded.receipts.get(r), r in limited_requests)
            for r in requests
        },
    )
