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
# Accounts whose requests the fold leaves to the per-event use cases: those with budgets or
# task envelopes, and requests whose holds count against a budget.
SELECT_LIMITED = """
SELECT 'account' AS kind, account_id AS id FROM ledger.budgets WHERE account_id = ANY($1)
UNION SELECT 'request', request_id FROM ledger.budget_usage WHERE request_id = ANY($2)
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
UPDATE_RECEIPTS = """
UPDATE ledger.receipts r SET status = u.status, body = u.body::jsonb
FROM unnest($1::text[], $2::text[], $3::text[]) AS u(request_id, status, body)
WHERE r.request_id = u.request_id
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
    limited_accounts, limited_requests = (
        await limited(conn, new_accounts, existing) if new_accounts or existing else (set(), set())
    )
    state.units.update(loaded.units)
    state.balances.update(loaded.balances)
    state.holds.update(loaded.holds)
    state.receipts.update(loaded.receipts)
    for a in new_accounts:
        memory.accounts[a] = a in limited_accounts
    for r in new_requests:
        memory.requests[r] = r in limited_requests


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
