"""asyncpg adapter of the limits service: every statement it runs, inside the caller's transaction.

Window slots, baselines and breakers are keyed by event time; pruning is by event time too, so
what a window sums never depends on when the consumer happened to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from tollway.limits.domain import RETAIN_SECONDS, Baseline, may_fire, slot_of

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

MAX_EXAMPLES = 3

MARK_APPLIED = """
INSERT INTO limits.applied_events (event_id, occurred_at) VALUES ($1, $2)
ON CONFLICT DO NOTHING RETURNING 1
"""
# Every count of one event in one statement (one slot: the event's). The rows' keys are
# distinct (see ``add_all``), as one INSERT may not update a row twice.
ADD_TO_SLOTS = """
INSERT INTO limits.window_slots AS w (scope, scope_id, metric, slot, amount, examples)
SELECT s, i, m, $1, a, CASE WHEN e IS NULL THEN '{}'::text[] ELSE ARRAY[e] END
FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[]) AS u(s, i, m, a, e)
ON CONFLICT (scope, scope_id, metric, slot) DO UPDATE SET
    amount = w.amount + EXCLUDED.amount,
    examples = CASE WHEN cardinality(w.examples) < 3 AND cardinality(EXCLUDED.examples) = 1
                    AND NOT EXCLUDED.examples[1] = ANY(w.examples)
               THEN w.examples || EXCLUDED.examples ELSE w.examples END
"""
# One metric's two windows for several scopes; a scope with no slot sums to zero.
WINDOW_SUMS = """
SELECT u.s AS scope, u.i AS scope_id,
       COALESCE(sum(w.amount) FILTER (WHERE w.slot > $4::timestamptz - make_interval(secs => $5)),
                0) AS short,
       COALESCE(sum(w.amount), 0) AS long
FROM unnest($1::text[], $2::text[]) AS u(s, i)
LEFT JOIN limits.window_slots w
  ON w.scope = u.s AND w.scope_id = u.i AND w.metric = $3
 AND w.slot > $4::timestamptz - make_interval(secs => $6) AND w.slot <= $4
GROUP BY u.s, u.i
"""
EXAMPLES = """
SELECT examples FROM limits.window_slots
WHERE scope = $1 AND scope_id = $2 AND metric = ANY($3::text[]) AND slot <= $4
ORDER BY slot DESC LIMIT 3
"""
MIX_SUMS = """
SELECT metric,
       COALESCE(sum(amount) FILTER (WHERE slot > $3::timestamptz - make_interval(secs => $4)), 0)
           AS recent,
       COALESCE(sum(amount) FILTER (WHERE slot <= $3::timestamptz - make_interval(secs => $4)), 0)
           AS before
FROM limits.window_slots
WHERE scope = $1 AND scope_id = $2 AND metric LIKE 'mix:%' AND slot <= $3
  AND slot >= $3::timestamptz - make_interval(secs => $5)
GROUP BY metric
"""
PRUNE_SLOTS = "DELETE FROM limits.window_slots WHERE slot < $1"
PRUNE_APPLIED = "DELETE FROM limits.applied_events WHERE occurred_at < $1"
SELECT_BASELINES = """
SELECT scope, scope_id, hour_start, hour_amount, mean_per_hour, hours_seen FROM limits.baselines
WHERE (scope, scope_id) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND metric = $3
"""
UPSERT_BASELINES = """
INSERT INTO limits.baselines (scope, scope_id, metric, hour_start, hour_amount, mean_per_hour,
                              hours_seen)
SELECT s, i, $1, h, a, m, n
FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::bigint[], $6::bigint[], $7::int[])
    AS u(s, i, h, a, m, n)
ON CONFLICT (scope, scope_id, metric) DO UPDATE SET hour_start = EXCLUDED.hour_start,
    hour_amount = EXCLUDED.hour_amount, mean_per_hour = EXCLUDED.mean_per_hour,
    hours_seen = EXCLUDED.hours_seen
"""
SELECT_LIMITS = """
SELECT scope, scope_id, tokens_per_minute, spend_micro_per_minute, relative_factor,
       cooldown_seconds
FROM limits.velocity_limits
WHERE (scope, scope_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""
UPSERT_LIMITS = """
INSERT INTO limits.velocity_limits (scope, scope_id, account_id, tokens_per_minute,
    spend_micro_per_minute, relative_factor, cooldown_seconds)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)
ON CONFLICT (scope, scope_id) DO UPDATE SET account_id = EXCLUDED.account_id,
    tokens_per_minute = EXCLUDED.tokens_per_minute,
    spend_micro_per_minute = EXCLUDED.spend_micro_per_minute,
    relative_factor = EXCLUDED.relative_factor, cooldown_seconds = EXCLUDED.cooldown_seconds
"""
SELECT_BREAKER = """
SELECT state, trip_id, until FROM limits.breakers WHERE scope = $1 AND scope_id = $2 FOR UPDATE
"""
OPEN_BREAKER = """
INSERT INTO limits.breakers (scope, scope_id, account_id, name, state, trip_id, crossed_at, until)
VALUES ($1, $2, $3, $4, 'open', $5, $6, $7)
ON CONFLICT (scope, scope_id) DO UPDATE SET account_id = EXCLUDED.account_id,
    name = EXCLUDED.name, state = 'open', trip_id = EXCLUDED.trip_id,
    crossed_at = EXCLUDED.crossed_at, until = EXCLUDED.until
"""
CLOSE_BREAKER = """
UPDATE limits.breakers SET state = 'closed'
WHERE scope = $1 AND scope_id = $2 AND state = 'open' AND ($3::text IS NULL OR trip_id = $3)
RETURNING name
"""
NEXT_DUE_BREAKER = "SELECT min(until) FROM limits.breakers WHERE state = 'open'"
DUE_BREAKERS = """
SELECT scope, scope_id, account_id, name, trip_id, until FROM limits.breakers
WHERE state = 'open' AND until <= $1 ORDER BY until LIMIT 500 FOR UPDATE SKIP LOCKED
"""
SELECT_MARK = """
SELECT fired_at FROM limits.alert_marks WHERE scope = $1 AND scope_id = $2 AND metric = $3
FOR UPDATE
"""
UPSERT_MARK = """
INSERT INTO limits.alert_marks (scope, scope_id, metric, fired_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (scope, scope_id, metric) DO UPDATE SET fired_at = EXCLUDED.fired_at
"""
SUBSCRIBERS = """
SELECT id, scopes FROM edge.webhooks WHERE disabled_at IS NULL
"""
INSERT_DELIVERY = """
INSERT INTO limits.webhook_deliveries (delivery_id, subscription_id, alert_id, body)
VALUES ($1, $2, $3, $4) ON CONFLICT (delivery_id) DO NOTHING
"""


async def mark_applied(conn: asyncpg.Connection, event_id: str, at: datetime) -> bool:
    """Record ``event_id``; False when it was applied before (a redelivered duplicate)."""
    return await conn.fetchval(MARK_APPLIED, event_id, at) is not None


Scope = tuple[str, str]  # (scope, scope id)


@dataclass(frozen=True, slots=True)
class Count:
    """``amount`` to add to a scope's metric; ``example``: a request id to keep with it."""

    scope: str
    scope_id: str
    metric: str
    amount: int
    example: str | None = None


async def add_all(conn: asyncpg.Connection, at: datetime, counts: Sequence[Count]) -> None:
    """Add each count to its slot of event time ``at``, in one statement.

    Counts of one (scope, id, metric) are merged first (amounts summed, the first example kept).
    """
    merged: dict[tuple[str, str, str], Count] = {}
    for c in counts:
        key = (c.scope, c.scope_id, c.metric)
        seen = merged.get(key)
        merged[key] = (
            c if seen is None else Count(*key, seen.amount + c.amount, seen.example or c.example)
        )
    if not merged:
        return
    rows = list(merged.values())
    await conn.execute(
        ADD_TO_SLOTS,
        slot_of(at),
        [c.scope for c in rows],
        [c.scope_id for c in rows],
        [c.metric for c in rows],
        [c.amount for c in rows],
        [c.example for c in rows],
    )


async def sums_all(  # noqa: PLR0913, PLR0917 - the scopes, a metric, a time and two lengths
    conn: asyncpg.Connection,
    scopes: Sequence[Scope],
    metric: str,
    at: datetime,
    short_seconds: int,
    long_seconds: int,
) -> dict[Scope, tuple[int, int]]:
    """Per scope: sums over the last ``short_seconds`` and ``long_seconds`` of event time."""
    rows = await conn.fetch(
        WINDOW_SUMS,
        [s for s, _ in scopes],
        [i for _, i in scopes],
        metric,
        at,
        float(short_seconds),
        float(long_seconds),
    )
    return {(r["scope"], r["scope_id"]): (int(r["short"]), int(r["long"])) for r in rows}


async def sums(  # noqa: PLR0913, PLR0917 - a window's coordinates and its two lengths
    conn: asyncpg.Connection,
    scope: str,
    scope_id: str,
    metric: str,
    at: datetime,
    short_seconds: int,
    long_seconds: int,
) -> tuple[int, int]:
    """Sums over the last ``short_seconds`` and ``long_seconds`` of event time up to ``at``."""
    found = await sums_all(conn, [(scope, scope_id)], metric, at, short_seconds, long_seconds)
    return found[(scope, scope_id)]


async def examples(
    conn: asyncpg.Connection, scope: str, scope_id: str, metrics: list[str], at: datetime
) -> list[str]:
    """A few recent request ids counted in the scope's windows."""
    rows = await conn.fetch(EXAMPLES, scope, scope_id, metrics, at)
    found: list[str] = []
    for row in rows:
        found.extend(r for r in row["examples"] if r not in found)
    return found[:MAX_EXAMPLES]


async def mix(
    conn: asyncpg.Connection, scope: str, scope_id: str, at: datetime, recent_seconds: int
) -> tuple[dict[str, int], dict[str, int]]:
    """Served requests per provider/model: the recent window and the retained time before it."""
    # Bounded by the retention itself, not by how recently slots were pruned.
    rows = await conn.fetch(
        MIX_SUMS, scope, scope_id, at, float(recent_seconds), float(RETAIN_SECONDS)
    )
    recent = {r["metric"]: int(r["recent"]) for r in rows if r["recent"]}
    before = {r["metric"]: int(r["before"]) for r in rows if r["before"]}
    return recent, before


async def prune(conn: asyncpg.Connection, at: datetime, applied_days: int = 1) -> None:
    """Drop slots older than every window and applied ids older than redelivery can be."""
    await conn.execute(PRUNE_SLOTS, at - timedelta(seconds=RETAIN_SECONDS))
    await conn.execute(PRUNE_APPLIED, at - timedelta(days=applied_days))


async def baselines(
    conn: asyncpg.Connection, scopes: Sequence[Scope], metric: str
) -> dict[Scope, Baseline]:
    """The learned rates of those of ``scopes`` that have one."""
    rows = await conn.fetch(
        SELECT_BASELINES, [s for s, _ in scopes], [i for _, i in scopes], metric
    )
    return {
        (r["scope"], r["scope_id"]): Baseline(
            r["hour_start"], r["hour_amount"], r["mean_per_hour"], r["hours_seen"]
        )
        for r in rows
    }


async def save_baselines(
    conn: asyncpg.Connection, metric: str, folded: Mapping[Scope, Baseline]
) -> None:
    """Store the folded baselines, one statement for all scopes."""
    if not folded:
        return
    items = list(folded.items())
    await conn.execute(
        UPSERT_BASELINES,
        metric,
        [s for (s, _), _ in items],
        [i for (_, i), _ in items],
        [b.hour_start for _, b in items],
        [b.hour_amount for _, b in items],
        [b.mean_per_hour for _, b in items],
        [b.hours_seen for _, b in items],
    )


async def limits_rows(
    conn: asyncpg.Connection, scopes: Sequence[Scope]
) -> dict[Scope, dict[str, Any]]:
    """The operator's thresholds of those of ``scopes`` that have them."""
    found = {}
    for row in await conn.fetch(SELECT_LIMITS, [s for s, _ in scopes], [i for _, i in scopes]):
        values = dict(row)
        values["spend_micro_per_minute"] = orjson.loads(values["spend_micro_per_minute"])
        found[(values.pop("scope"), values.pop("scope_id"))] = values
    return found


async def save_limits(conn: asyncpg.Connection, values: dict[str, Any]) -> None:
    """Create or replace a scope's thresholds."""
    await conn.execute(
        UPSERT_LIMITS,
        values["scope"],
        values["scope_id"],
        values["account_id"],
        values["tokens_per_minute"],
        orjson.dumps(values["spend_micro_per_minute"]).decode(),
        values["relative_factor"],
        values["cooldown_seconds"],
    )


async def breaker(conn: asyncpg.Connection, scope: str, scope_id: str) -> dict[str, Any] | None:
    """The scope's breaker row, locked for this transaction."""
    row = await conn.fetchrow(SELECT_BREAKER, scope, scope_id)
    return None if row is None else dict(row)


async def open_breaker(  # noqa: PLR0913, PLR0917 - the row's columns
    conn: asyncpg.Connection,
    scope: str,
    scope_id: str,
    account_id: str,
    name: str,
    trip_id: str,
    crossed_at: datetime,
    until: datetime,
) -> None:
    """Mark the scope's breaker open until ``until``."""
    await conn.execute(OPEN_BREAKER, scope, scope_id, account_id, name, trip_id, crossed_at, until)


async def close_breaker(
    conn: asyncpg.Connection, scope: str, scope_id: str, trip_id: str | None
) -> str | None:
    """Close the breaker (only the trip ``trip_id`` when given); its name if it was open."""
    name: str | None = await conn.fetchval(CLOSE_BREAKER, scope, scope_id, trip_id)
    return name


async def due_breakers(conn: asyncpg.Connection, now: datetime) -> list[dict[str, Any]]:
    """Open breakers whose cool-down has passed, locked against a concurrent sweeper."""
    return [dict(r) for r in await conn.fetch(DUE_BREAKERS, now)]


async def claim_alert(  # noqa: PLR0913, PLR0917 - a series, a time and its window
    conn: asyncpg.Connection, scope: str, scope_id: str, metric: str, at: datetime, window: int
) -> bool:
    """True (and recorded) when no alert for this scope and metric fired in the last window."""
    last = await conn.fetchval(SELECT_MARK, scope, scope_id, metric)
    if not may_fire(last, at, window):
        return False
    await conn.execute(UPSERT_MARK, scope, scope_id, metric, at)
    return True


async def subscribers(conn: asyncpg.Connection) -> list[tuple[str, list[str] | None]]:
    """Active webhook subscriptions (id, scope filter); none when the edge has not made any."""
    try:
        async with conn.transaction():  # a savepoint: a missing table must not doom the batch
            rows = await conn.fetch(SUBSCRIBERS)
    except asyncpg.UndefinedTableError:  # the edge has not created its table yet
        return []
    return [(r["id"], r["scopes"]) for r in rows]


async def add_delivery(
    conn: asyncpg.Connection, delivery_id: str, subscription_id: str, alert_id: str, body: bytes
) -> None:
    """Queue one alert for one subscription (idempotent by the stable delivery id)."""
    await conn.execute(INSERT_DELIVERY, delivery_id, subscription_id, alert_id, body)


async def stored_offsets(pool: asyncpg.Pool, schema: str, group: str) -> dict[tuple[str, int], int]:
    """A consumer group's next offsets as stored with its effects (``schema`` is a constant)."""
    rows = await pool.fetch(
        f"SELECT topic, partition, next_offset FROM {schema}.consumer_offsets"  # noqa: S608
        " WHERE group_id = $1",
        group,
    )
    return {(r["topic"], r["partition"]): int(r["next_offset"]) for r in rows}
