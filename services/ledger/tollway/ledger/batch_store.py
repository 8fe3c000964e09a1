"""Bulk load and write-behind of a folded batch (:mod:`tollway.ledger.fold`).

A batch's state is read in a handful of statements (one per table, every account and request of
the batch at once) and its effects are written back with one multi-row statement per table, all
in the consumer's batch transaction: journal, postings, balances, holds and receipts commit with
the consumer's offsets and outbox rows, or not at all. The append-only triggers of the journal
and postings still guard every row (they are inserts only).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from tollway.events.gateway import (
    AdjustmentRequested,
    ReversalRequested,
    TopUpRequested,
)
from tollway.events.ledger import Posting
from tollway.events.routing import PriceTableChangeRequested
from tollway.ledger import cost_store, domain, fold_topup, recon_store
from tollway.ledger.expiry import partition_of
from tollway.ledger.fold import Effects, Hold, Original, PriceVersion, State
from tollway.ledger.fold_limits import BudgetUsage, UsageRow
from tollway.ledger.limits_domain import Budget, TaskRule
from tollway.ledger.receipt_model import ReceiptRow
from tollway.ledger.resident import Memory

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, MutableMapping

    import asyncpg

    from tollway.events.envelope import Payload

SELECT_BUCKETS = "SELECT account_id, bucket, unit FROM ledger.buckets WHERE account_id = ANY($1)"
SELECT_BALANCES = "SELECT account, unit, amount FROM ledger.balances WHERE account = ANY($1)"
SELECT_HOLDS = """
SELECT hold_id, request_id, account_id, bucket, unit, amount, status, deadline_at, opened_at,
       closed_at, request_offset
FROM ledger.holds WHERE request_id = ANY($1)
"""
SELECT_RECEIPTS = """
SELECT request_id, account_id, key_id, project_id, task_id, catalog_model, created_at,
       body::text AS body
FROM ledger.receipts WHERE request_id = ANY($1)
"""
# Limits (:mod:`tollway.ledger.fold_limits`): the accounts' budgets and tasks, every usage row
# of those budgets, and the usage rows of the batch's requests.
SELECT_BUDGETS = """
SELECT budget_id, account_id, name, scope, scope_id, time_window, timezone, unit, bucket, amount,
       mode
FROM ledger.budgets WHERE account_id = ANY($1) ORDER BY budget_id
"""
SELECT_TASKS = """
SELECT task_id, account_id, status, route_types, fallback, stopped_by
FROM ledger.tasks WHERE account_id = ANY($1)
"""
SELECT_BUDGET_USAGE = """
SELECT budget_id, hold_id, request_id, at, held, spent, channels
FROM ledger.budget_usage WHERE budget_id = ANY($1)
"""
SELECT_REQUEST_USAGE = """
SELECT budget_id, hold_id, request_id, at, held, spent, channels
FROM ledger.budget_usage WHERE request_id = ANY($1)
"""
# A partition's accounts (every account with a bucket; filtered by its key's partition) and
# the requests in flight among them, loaded when the partition is assigned.
SELECT_ACCOUNTS = "SELECT DISTINCT account_id FROM ledger.buckets"
SELECT_OPEN_REQUESTS = """
SELECT DISTINCT request_id FROM ledger.holds WHERE status = 'open' AND account_id = ANY($1)
"""

INSERT_JOURNAL = """
INSERT INTO ledger.journal (event_id, type, account_id, cause_id, occurred_at, body)
SELECT e, t, a, c, o, b::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])
    WITH ORDINALITY AS u(e, t, a, c, o, b, n)
ORDER BY n
"""
INSERT_POSTINGS = """
INSERT INTO ledger.postings (event_id, account, unit, amount)
SELECT e, a, u, m FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
    WITH ORDINALITY AS p(e, a, u, m, n)
ORDER BY n
"""
# Balances move once per (account, unit) per batch, in key order (no lock-order deadlock).
MOVE_BALANCES = """
INSERT INTO ledger.balances AS b (account, unit, amount)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
ON CONFLICT (account, unit) DO UPDATE SET amount = b.amount + EXCLUDED.amount
"""
INSERT_HOLDS = """
INSERT INTO ledger.holds
    (hold_id, request_id, account_id, bucket, unit, amount, status, deadline_at, opened_at,
     closed_at, request_offset)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
    $7::text[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::bigint[])
"""
UPDATE_HOLDS = """
UPDATE ledger.holds h SET status = u.status, closed_at = u.closed_at, deadline_at = u.deadline_at
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
    AS u(hold_id, status, closed_at, deadline_at)
WHERE h.hold_id = u.hold_id
"""
INSERT_RECEIPTS = """
INSERT INTO ledger.receipts
    (request_id, account_id, key_id, project_id, task_id, catalog_model, status, created_at, body)
SELECT r, a, k, p, t, m, s, c, b::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::timestamptz[], $9::text[]) AS u(r, a, k, p, t, m, s, c, b)
"""
# A row's channels travel as one string joined by the unit separator (unnest cannot take an
# array of arrays of different lengths); no channel id contains it.
_SEPARATOR = "\x1f"
INSERT_USAGE = """
INSERT INTO ledger.budget_usage (budget_id, hold_id, request_id, at, held, spent, channels)
SELECT b, h, r, a, hd, s, string_to_array(c, chr(31))
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[], $6::bigint[],
    $7::text[]) AS u(b, h, r, a, hd, s, c)
"""
UPDATE_USAGE = """
UPDATE ledger.budget_usage g SET held = u.held, spent = u.spent
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
    AS u(budget_id, hold_id, held, spent)
WHERE g.budget_id = u.budget_id AND g.hold_id = u.hold_id
"""
# The first limit that refused one of a task's calls (a task keeps its first).
TASK_STOPS = """
UPDATE ledger.tasks t SET stopped_by = u.stopped_by
FROM unnest($1::text[], $2::text[], $3::text[]) AS u(task_id, account_id, stopped_by)
WHERE t.task_id = u.task_id AND t.account_id = u.account_id AND t.stopped_by IS NULL
"""
# Definitions: who has the budget ids and task ids a run's definitions name.
SELECT_BUDGET_OWNERS = "SELECT budget_id, account_id FROM ledger.budgets WHERE budget_id = ANY($1)"
SELECT_TASK_OWNERS = "SELECT task_id, account_id FROM ledger.tasks WHERE task_id = ANY($1)"
# A budget id never moves to another account (the fold checked; the store keeps the guard).
UPSERT_BUDGETS = """
INSERT INTO ledger.budgets AS b (budget_id, account_id, name, scope, scope_id, time_window,
    timezone, unit, bucket, amount, mode, set_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::timestamptz[])
ON CONFLICT (budget_id) DO UPDATE SET name = EXCLUDED.name, scope = EXCLUDED.scope,
    scope_id = EXCLUDED.scope_id, time_window = EXCLUDED.time_window,
    timezone = EXCLUDED.timezone, unit = EXCLUDED.unit, bucket = EXCLUDED.bucket,
    amount = EXCLUDED.amount, mode = EXCLUDED.mode, set_at = EXCLUDED.set_at
WHERE b.account_id = EXCLUDED.account_id
"""
# A removed budget's usage rows stay: they are history.
DELETE_BUDGETS = """
DELETE FROM ledger.budgets b USING unnest($1::text[], $2::text[]) AS u(budget_id, account_id)
WHERE b.budget_id = u.budget_id AND b.account_id = u.account_id
"""
INSERT_TASKS = """
INSERT INTO ledger.tasks (task_id, account_id, project_id, key_id, name, route_types, fallback,
    status, opened_at)
SELECT t, a, p, k, n, string_to_array(r, chr(31)), f, 'open', o
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::timestamptz[]) AS u(t, a, p, k, n, r, f, o)
ON CONFLICT DO NOTHING
"""
CLOSE_TASKS = """
UPDATE ledger.tasks t SET status = 'closed', closed_at = u.at, close_reason = u.reason
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS u(task_id, account_id, at,
    reason)
WHERE t.task_id = u.task_id AND t.account_id = u.account_id AND t.status = 'open'
"""
UPDATE_RECEIPTS = """
UPDATE ledger.receipts r SET status = u.status, body = u.body::jsonb
FROM unnest($1::text[], $2::text[], $3::text[]) AS u(request_id, status, body)
WHERE r.request_id = u.request_id
"""


async def load(
    conn: asyncpg.Connection, accounts: Collection[str], requests: Collection[str]
) -> State:
    """The state a batch over ``accounts`` and ``requests`` decides on, in four statements."""
    state = State()
    for r in await conn.fetch(SELECT_BUCKETS, list(accounts)) if accounts else ():
        state.units[(r["account_id"], r["bucket"])] = r["unit"]
    names = [domain.bucket_account(a, b) for a, b in state.units]
    names += [source(a) for a in accounts for source in SOURCES]
    for r in await conn.fetch(SELECT_BALANCES, names) if names else ():
        state.balances[(r["account"], r["unit"])] = int(r["amount"])
    if not requests:
        return state
    by_request: dict[str, list[Hold]] = defaultdict(list)
    for r in await conn.fetch(SELECT_HOLDS, list(requests)):
        by_request[r["request_id"]].append(Hold(**dict(r)))
    state.holds = {k: tuple(sorted(v, key=lambda h: h.hold_id)) for k, v in by_request.items()}
    for r in await conn.fetch(SELECT_RECEIPTS, list(requests)):
        fields = dict(r)
        fields["body"] = orjson.loads(fields["body"])
        state.receipts[r["request_id"]] = ReceiptRow(**fields)
    return state


async def fill(
    conn: asyncpg.Connection, memory: Memory, accounts: Collection[str], requests: Collection[str]
) -> None:
    """Load into ``memory`` the accounts and requests it does not know yet (in bulk)."""
    new_accounts = sorted({a for a in accounts if a not in memory.accounts})
    new_requests = sorted({r for r in requests if r not in memory.requests})
    if not new_accounts and not new_requests:
        return
    state = memory.state
    if new_requests:
        # A request without a receipt has no holds and no budget usage either (they are
        # written together): new requests, the usual case, cost this one statement.
        for r in await conn.fetch(SELECT_RECEIPTS, new_requests):
            fields = dict(r)
            fields["body"] = orjson.loads(fields["body"])
            state.receipts[r["request_id"]] = ReceiptRow(**fields)
    existing = [r for r in new_requests if r in state.receipts]
    loaded = await load(conn, new_accounts, existing) if new_accounts or existing else State()
    state.units.update(loaded.units)
    state.balances.update(loaded.balances)
    state.holds.update(loaded.holds)
    state.receipts.update(loaded.receipts)
    await _fill_limits(conn, state, new_accounts, existing)
    # The flags once said "left to the per-event use cases"; the fold now covers everything.
    for a in new_accounts:
        memory.accounts[a] = False
    for r in new_requests:
        memory.requests[r] = False


def _usage_row(r: asyncpg.Record) -> UsageRow:
    return UsageRow(
        r["budget_id"],
        r["hold_id"],
        r["request_id"],
        r["at"],
        int(r["held"]),
        int(r["spent"]),
        tuple(r["channels"]),
    )


async def _fill_limits(
    conn: asyncpg.Connection, state: State, accounts: list[str], requests: list[str]
) -> None:
    """The accounts' budgets, tasks and budget usage; the requests' usage rows."""
    if accounts:
        await _fill_budgets(conn, state, accounts)
        for r in await conn.fetch(SELECT_TASKS, accounts):
            state.tasks[(r["account_id"], r["task_id"])] = TaskRule(
                r["task_id"], r["status"], tuple(r["route_types"]), r["fallback"], r["stopped_by"]
            )
    if requests:
        by_request: dict[str, list[UsageRow]] = defaultdict(list)
        for r in await conn.fetch(SELECT_REQUEST_USAGE, requests):
            by_request[r["request_id"]].append(_usage_row(r))
        for request_id, request_rows in by_request.items():
            state.request_usage[request_id] = tuple(sorted(request_rows, key=lambda u: u.key))


async def _fill_budgets(conn: asyncpg.Connection, state: State, accounts: list[str]) -> None:
    """The accounts' budgets (an empty tuple: none) and every usage row of each."""
    by_account: dict[str, list[Budget]] = defaultdict(list)
    for r in await conn.fetch(SELECT_BUDGETS, accounts):
        fields = dict(r)
        account = fields.pop("account_id")
        fields["window"] = fields.pop("time_window")
        by_account[account].append(Budget(**fields))
    rows: dict[str, dict[str, UsageRow]] = {}
    for a in accounts:
        state.budgets[a] = tuple(by_account.get(a, ()))
        rows.update((b.budget_id, {}) for b in state.budgets[a])
    for r in await conn.fetch(SELECT_BUDGET_USAGE, list(rows)) if rows else ():
        rows[r["budget_id"]][r["hold_id"]] = _usage_row(r)
    for budget_id, by_hold in rows.items():
        state.usage[budget_id] = BudgetUsage(by_hold)


async def fill_names(
    conn: asyncpg.Connection, memory: Memory, budget_ids: Collection[str], task_ids: Collection[str]
) -> None:
    """Who has the budget ids and task ids a run's definitions name, read now.

    Ids are global: another partition's account may have taken one. Budget ids new to
    ``memory`` bring their usage rows (a budget set again counts its old rows).
    """
    state = memory.state
    if budget_ids:
        owners = dict(await conn.fetch(SELECT_BUDGET_OWNERS, sorted(budget_ids)))
        for budget_id in budget_ids:
            state.budget_owners[budget_id] = owners.get(budget_id)
        unknown = sorted(b for b in budget_ids if b not in state.usage)
        rows: dict[str, dict[str, UsageRow]] = {b: {} for b in unknown}
        for r in await conn.fetch(SELECT_BUDGET_USAGE, unknown) if unknown else ():
            rows[r["budget_id"]][r["hold_id"]] = _usage_row(r)
        for budget_id, by_hold in rows.items():
            state.usage[budget_id] = BudgetUsage(by_hold)
    if task_ids:
        owners = dict(await conn.fetch(SELECT_TASK_OWNERS, sorted(task_ids)))
        for task_id in task_ids:
            state.task_owners[task_id] = owners.get(task_id)


async def load_partition(conn: asyncpg.Connection, partition: int, partitions: int) -> Memory:
    """A partition's accounts and requests in flight, read in bulk (on assignment)."""
    accounts = [
        r["account_id"]
        for r in await conn.fetch(SELECT_ACCOUNTS)
        if partition_of(r["account_id"], partitions) == partition
    ]
    requests = [r["request_id"] for r in await conn.fetch(SELECT_OPEN_REQUESTS, accounts)]
    memory = Memory()
    await fill(conn, memory, accounts, requests)
    return memory


async def write(conn: asyncpg.Connection, state: State, effects: Effects) -> None:
    """Write a folded batch: one multi-row statement per table it changed."""
    await _journal(conn, effects)
    await _write_inputs(conn, effects)  # after their journal rows (price versions refer to them)
    await cost_store.insert(conn, effects.costs)  # after their journal rows (foreign key)
    await _holds(conn, effects)
    await _receipts(conn, state, effects)
    await recon_store.insert_attempts(conn, effects.recon)
    await _limits(conn, effects)


async def _journal(conn: asyncpg.Connection, effects: Effects) -> None:
    if not effects.journal:
        return
    rows = [(env, message.value.decode()) for env, message in effects.journal]
    for env, _ in rows:
        domain.check_balanced(getattr(env.payload, "postings", ()))
    await conn.execute(
        INSERT_JOURNAL,
        [env.id for env, _ in rows],
        [env.type for env, _ in rows],
        [env.payload.account_id for env, _ in rows],
        [env.payload.cause_id for env, _ in rows],
        [env.occurred_at for env, _ in rows],
        [raw for _, raw in rows],
    )
    postings = [(env.id, p) for env, _ in rows for p in getattr(env.payload, "postings", ())]
    if not postings:
        return
    await conn.execute(
        INSERT_POSTINGS,
        [e for e, _ in postings],
        [p.account for _, p in postings],
        [p.unit for _, p in postings],
        [p.amount for _, p in postings],
    )
    moves: dict[tuple[str, str], int] = defaultdict(int)
    for _, p in postings:
        moves[(p.account, p.unit)] += p.amount
    keys = sorted(moves)
    await conn.execute(
        MOVE_BALANCES, [a for a, _ in keys], [u for _, u in keys], [moves[k] for k in keys]
    )


async def _holds(conn: asyncpg.Connection, effects: Effects) -> None:
    if effects.opened:
        hs = list(effects.opened.values())
        await conn.execute(
            INSERT_HOLDS,
            [h.hold_id for h in hs],
            [h.request_id for h in hs],
            [h.account_id for h in hs],
            [h.bucket for h in hs],
            [h.unit for h in hs],
            [h.amount for h in hs],
            [h.status for h in hs],
            [h.deadline_at for h in hs],
            [h.opened_at for h in hs],
            [h.closed_at for h in hs],
            [h.request_offset for h in hs],
        )
    if effects.changed:
        hs = list(effects.changed.values())
        await conn.execute(
            UPDATE_HOLDS,
            [h.hold_id for h in hs],
            [h.status for h in hs],
            [h.closed_at for h in hs],
            [h.deadline_at for h in hs],
        )


async def _receipts(conn: asyncpg.Connection, state: State, effects: Effects) -> None:
    if effects.new_receipts:
        rs = [state.receipts[rid] for rid in sorted(effects.new_receipts)]
        await conn.execute(
            INSERT_RECEIPTS,
            [r.request_id for r in rs],
            [r.account_id for r in rs],
            [r.key_id for r in rs],
            [r.project_id for r in rs],
            [r.task_id for r in rs],
            [r.catalog_model for r in rs],
            [r.status for r in rs],
            [r.created_at for r in rs],
            [orjson.dumps(r.body).decode() for r in rs],
        )
    if effects.changed_receipts:
        rs = [state.receipts[rid] for rid in sorted(effects.changed_receipts)]
        await conn.execute(
            UPDATE_RECEIPTS,
            [r.request_id for r in rs],
            [r.status for r in rs],
            [orjson.dumps(r.body).decode() for r in rs],
        )


async def _limits(conn: asyncpg.Connection, effects: Effects) -> None:
    """Definitions, budget usage rows (new and changed) and task stops."""
    await _definitions(conn, effects)
    if effects.usage_new:
        rs = list(effects.usage_new.values())
        await conn.execute(
            INSERT_USAGE,
            [r.budget_id for r in rs],
            [r.hold_id for r in rs],
            [r.request_id for r in rs],
            [r.at for r in rs],
            [r.held for r in rs],
            [r.spent for r in rs],
            [_SEPARATOR.join(r.channels) for r in rs],
        )
    if effects.usage_changed:
        rs = list(effects.usage_changed.values())
        await conn.execute(
            UPDATE_USAGE,
            [r.budget_id for r in rs],
            [r.hold_id for r in rs],
            [r.held for r in rs],
            [r.spent for r in rs],
        )
    if effects.task_stops:
        stops = sorted(effects.task_stops.items())
        await conn.execute(
            TASK_STOPS,
            [task_id for (task_id, _), _ in stops],
            [account_id for (_, account_id), _ in stops],
            [message for _, message in stops],
        )


async def _definitions(conn: asyncpg.Connection, effects: Effects) -> None:
    """Budgets set and removed (each id's last change), tasks opened, then tasks closed."""
    changes = sorted(effects.budget_changes.values(), key=lambda c: c.budget_id)
    removed = [c for c in changes if c.budget is None]
    if removed:
        await conn.execute(
            DELETE_BUDGETS, [c.budget_id for c in removed], [c.account_id for c in removed]
        )
    budgets = [(c, c.budget) for c in changes if c.budget is not None]
    if budgets:
        await conn.execute(
            UPSERT_BUDGETS,
            [b.budget_id for _, b in budgets],
            [c.account_id for c, _ in budgets],
            [b.name for _, b in budgets],
            [b.scope for _, b in budgets],
            [b.scope_id for _, b in budgets],
            [b.window for _, b in budgets],
            [b.timezone for _, b in budgets],
            [b.unit for _, b in budgets],
            [b.bucket for _, b in budgets],
            [b.amount for _, b in budgets],
            [b.mode for _, b in budgets],
            [c.at for c, _ in budgets],
        )
    if effects.tasks_opened:
        ts = list(effects.tasks_opened.values())
        await conn.execute(
            INSERT_TASKS,
            [t.task_id for t in ts],
            [t.account_id for t in ts],
            [t.project_id for t in ts],
            [t.key_id for t in ts],
            [t.name for t in ts],
            [_SEPARATOR.join(t.route_types) for t in ts],
            [t.fallback for t in ts],
            [t.opened_at for t in ts],
        )
    if effects.tasks_closed:
        cs = list(effects.tasks_closed.values())
        await conn.execute(
            CLOSE_TASKS,
            [c.task_id for c in cs],
            [c.account_id for c in cs],
            [c.at for c in cs],
            [c.reason for c in cs],
        )


# --- top-ups, corrections, price changes ---------------------------------------------------------

# Each known account's balances include its top-up and adjustment sources (a credit's range).
SOURCES = (domain.topup_source, domain.adjustment_source)

SELECT_TOPUP_KEYS = """
SELECT t.account_id, t.idempotency_key, t.fingerprint
FROM unnest($1::text[], $2::text[]) AS k(account_id, idempotency_key)
JOIN ledger.topups t USING (account_id, idempotency_key)
"""
SELECT_CORRECTION_KEYS = """
SELECT c.account_id, c.idempotency_key, c.fingerprint
FROM unnest($1::text[], $2::text[]) AS k(account_id, idempotency_key)
JOIN ledger.corrections c USING (account_id, idempotency_key)
"""
# The entries reversals name, with what earlier reversals and re-ratings did to each.
SELECT_ORIGINALS = """
SELECT j.event_id, j.type, j.account_id,
       j.body -> 'payload' ->> 'request_id' AS request_id,
       j.body -> 'payload' ->> 'bucket' AS bucket,
       (SELECT coalesce(sum(c.amount), 0) FROM ledger.corrections c
        WHERE c.original_event_id = j.event_id)::bigint AS reversed,
       (SELECT coalesce(sum(x.amount), 0) FROM ledger.rerates x
        WHERE x.original_event_id = j.event_id)::bigint AS rerated
FROM ledger.journal j WHERE j.event_id = ANY($1)
"""
SELECT_ORIGINAL_POSTINGS = """
SELECT event_id, account, unit, amount FROM ledger.postings WHERE event_id = ANY($1)
ORDER BY event_id, seq
"""
SELECT_PRICE_VERSIONS = """
SELECT channel_id, max(version) AS version FROM ledger.price_versions
WHERE channel_id = ANY($1) GROUP BY channel_id
"""
INSERT_BUCKETS = """
INSERT INTO ledger.buckets (account_id, bucket, unit)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
"""
INSERT_TOPUPS = """
INSERT INTO ledger.topups (account_id, idempotency_key, fingerprint, event_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
"""
INSERT_CORRECTIONS = """
INSERT INTO ledger.corrections
    (account_id, idempotency_key, fingerprint, event_id, original_event_id, amount)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])
"""
INSERT_PRICE_VERSIONS = """
INSERT INTO ledger.price_versions
    (channel_id, version, price_input, price_output, price_cached_input, event_id, changed_at,
     price_cache_write, price_cache_write_1h, price_reasoning, cost_currency, cost_input,
     cost_output, cost_cached_input, cost_cache_write, cost_cache_write_1h, cost_reasoning,
     cost_per_request)
SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[],
    $6::text[], $7::timestamptz[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[],
    $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[],
    $18::bigint[])
"""


@dataclass(frozen=True, slots=True)
class Wants:
    """What top-ups, corrections and price changes decide on, besides their accounts' buckets.

    ``topup_keys``/``correction_keys``: (account, idempotency key); ``originals``: journal
    entries reversals name; ``channels``: channels whose price changes.
    """

    topup_keys: frozenset[tuple[str, str]] = frozenset()
    correction_keys: frozenset[tuple[str, str]] = frozenset()
    originals: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()

    @classmethod
    def of(cls, payloads: Iterable[Payload]) -> Wants:
        """What deciding ``payloads`` reads (a top-up refused for its names reads nothing)."""
        topups, corrections, originals, channels = set(), set(), set(), set()
        for p in payloads:
            if isinstance(p, TopUpRequested) and fold_topup.wants_key(p):
                topups.add((p.account_id, p.idempotency_key))
            elif isinstance(p, ReversalRequested | AdjustmentRequested):
                corrections.add((p.account_id, p.idempotency_key))
                if isinstance(p, ReversalRequested):
                    originals.add(p.original_event_id)
            elif isinstance(p, PriceTableChangeRequested):
                channels.add(p.channel_id)
        return cls(
            frozenset(topups), frozenset(corrections), frozenset(originals), frozenset(channels)
        )


async def fill_inputs(conn: asyncpg.Connection, memory: Memory, payloads: list[Payload]) -> None:
    """Load what the top-ups, corrections and price changes among ``payloads`` decide on.

    Their accounts' buckets and balances (sources included) come with :func:`fill`; here, what
    ``memory`` does not know yet of :class:`Wants`, then the receipts of the requests whose
    charges reversals name.
    """
    wants = Wants.of(payloads)
    if wants == _NOTHING:
        return
    await load_inputs(conn, memory.state, wants)
    # An original stays in memory; its request (settled, so evicted at commit) may not.
    named = (memory.state.originals.get(o) for o in wants.originals)
    requests = {o.request_id for o in named if o is not None and o.request_id}
    if requests:
        await fill(conn, memory, (), requests)


_NOTHING = Wants()


async def load_inputs(conn: asyncpg.Connection, state: State, wants: Wants) -> None:
    """Load into ``state`` what it lacks of ``wants``, one statement per kind."""
    await _keys(conn, SELECT_TOPUP_KEYS, state.topup_keys, wants.topup_keys)
    await _keys(conn, SELECT_CORRECTION_KEYS, state.correction_keys, wants.correction_keys)
    new_channels = sorted(c for c in wants.channels if c not in state.price_versions)
    if new_channels:
        found = await conn.fetch(SELECT_PRICE_VERSIONS, new_channels)
        latest = {r["channel_id"]: int(r["version"]) for r in found}
        for channel in new_channels:
            state.price_versions[channel] = latest.get(channel, 0)
    new_originals = sorted(o for o in wants.originals if o not in state.originals)
    if new_originals:
        loaded = await _originals(conn, new_originals)
        for event_id in new_originals:
            state.originals[event_id] = loaded.get(event_id)


async def _keys(
    conn: asyncpg.Connection,
    query: str,
    known: MutableMapping[tuple[str, str], str | None],
    wanted: frozenset[tuple[str, str]],
) -> None:
    new = sorted(k for k in wanted if k not in known)
    if not new:
        return
    rows = await conn.fetch(query, [a for a, _ in new], [k for _, k in new])
    found = {(r["account_id"], r["idempotency_key"]): r["fingerprint"] for r in rows}
    for key in new:
        known[key] = found.get(key)


async def _originals(conn: asyncpg.Connection, event_ids: list[str]) -> dict[str, Original]:
    postings: dict[str, list[Posting]] = defaultdict(list)
    for r in await conn.fetch(SELECT_ORIGINAL_POSTINGS, event_ids):
        postings[r["event_id"]].append(
            Posting(account=r["account"], unit=r["unit"], amount=int(r["amount"]))
        )
    return {
        r["event_id"]: Original(
            event_id=r["event_id"],
            type=r["type"],
            account_id=r["account_id"],
            request_id=r["request_id"],
            bucket=r["bucket"],
            postings=tuple(postings[r["event_id"]]),
            reversed=int(r["reversed"]),
            rerated=int(r["rerated"]),
        )
        for r in await conn.fetch(SELECT_ORIGINALS, event_ids)
    }


async def _write_inputs(conn: asyncpg.Connection, effects: Effects) -> None:
    """Buckets opened, idempotency keys applied, price versions journaled (multi-row each)."""
    if effects.buckets:
        bs = effects.buckets
        await conn.execute(
            INSERT_BUCKETS, [b.account_id for b in bs], [b.bucket for b in bs], [b.unit for b in bs]
        )
    for query, uses in ((INSERT_TOPUPS, effects.topups), (INSERT_CORRECTIONS, effects.corrections)):
        if not uses:
            continue
        columns: list[list[object]] = [
            [u.account_id for u in uses],
            [u.key for u in uses],
            [u.fingerprint for u in uses],
            [u.event_id for u in uses],
        ]
        if query is INSERT_CORRECTIONS:
            columns += [[u.original_event_id for u in uses], [u.amount for u in uses]]
        await conn.execute(query, *columns)
    if effects.prices:
        await conn.execute(INSERT_PRICE_VERSIONS, *_price_columns(effects.prices))


def _price_columns(versions: list[PriceVersion]) -> list[list[object]]:
    """One list per column of ``ledger.price_versions`` (cost columns NULL without a cost)."""
    rows: list[tuple[object, ...]] = []
    for v in versions:
        c, prices, cost = v.changed, v.changed.prices, v.changed.cost
        rows.append(
            (
                c.channel_id,
                c.version,
                prices.input,
                prices.output,
                prices.cached_input,
                v.event_id,
                v.changed_at,
                prices.cache_write,
                prices.cache_write_1h,
                prices.reasoning,
                *(
                    (None,) * 8
                    if cost is None
                    else (
                        cost.currency,
                        cost.input,
                        cost.output,
                        cost.cached_input,
                        cost.cache_write,
                        cost.cache_write_1h,
                        cost.reasoning,
                        cost.per_request,
                    )
                ),
            )
        )
    return [list(column) for column in zip(*rows, strict=True)]
