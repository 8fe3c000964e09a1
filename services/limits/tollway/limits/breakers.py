"""Opening and closing breakers: the only code that writes ``limits.breakers``.

A trip is decided in the consumer's transaction from event time and gets an id derived from the
usage event that crossed the line. A cool-down reset is dated at the trip's own ``until`` with an
id derived from the trip, so whenever the sweeper happens to run, it emits the same record.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from tollway.events import topics
from tollway.events.envelope import Envelope, make
from tollway.events.ids import derived_id
from tollway.events.limits import Alert, BreakerReset, BreakerTripped, breaker_key
from tollway.limits import store
from tollway.limits.domain import still_open
from tollway.runtime.outbox import Outgoing, write_outbox

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

    from tollway.limits.domain import Trip

log = structlog.get_logger(__name__)


async def trip(  # noqa: PLR0913, PLR0917 - the cause, the scope and the verdict
    conn: asyncpg.Connection,
    cause: Envelope[Any],
    scope: str,
    scope_id: str,
    account_id: str,
    verdict: Trip,
    cooldown_seconds: int,
) -> tuple[Envelope[BreakerTripped], Alert] | None:
    """Open the scope's breaker unless it is open already; the record and its alert."""
    at = cause.occurred_at
    row = await store.breaker(conn, scope, scope_id)
    if row is not None and row["state"] == "open" and still_open(row["until"], at):
        return None
    until = at + timedelta(seconds=cooldown_seconds)
    examples = await store.examples(conn, scope, scope_id, [verdict.metric], at)
    payload = BreakerTripped(
        account_id=account_id,
        scope=scope,
        scope_id=scope_id,
        name=verdict.name,
        reason=verdict.reason,
        metric=verdict.metric,
        value=verdict.value,
        threshold=verdict.threshold,
        window_seconds=verdict.window_seconds,
        crossed_at=at,
        until=until,
        cooldown_seconds=cooldown_seconds,
        example_request_ids=examples,
    )
    env = make(
        payload,
        trace=cause.trace,
        occurred_at=at,
        event_id=derived_id(cause.id, f"trip:{scope}:{verdict.metric}"),
    )
    await store.open_breaker(conn, scope, scope_id, account_id, verdict.name, env.id, at, until)
    log.info("breaker_tripped", scope=scope, scope_id=scope_id, breaker=verdict.name)
    alert = Alert(
        scope=scope,
        scope_id=scope_id,
        account_id=account_id,
        metric=f"breaker:{verdict.name}",
        value=verdict.value,
        threshold=verdict.threshold,
        window_seconds=verdict.window_seconds,
        window_end=at,
        severity="critical",
        message=f"Breaker {verdict.name} tripped on {scope} {scope_id}: {verdict.reason}.",
        example_request_ids=examples,
    )
    return env, alert


def breaker_message(env: Envelope[Any]) -> Outgoing:
    """A breaker record, keyed so compaction keeps each scope's latest state."""
    return Outgoing.of(topics.BREAKERS, breaker_key(env.payload.scope, env.payload.scope_id), env)


async def apply_operator_reset(conn: asyncpg.Connection, reset: BreakerReset) -> None:
    """An operator closed a breaker through the admin API: stop treating it as open."""
    name = await store.close_breaker(conn, reset.scope, reset.scope_id, reset.trip_id)
    log.info("breaker_reset_seen", scope=reset.scope, scope_id=reset.scope_id, closed=bool(name))


def cooldown_reset(row: dict[str, Any]) -> Envelope[BreakerReset]:
    """The reset that ends a trip's cool-down (same id and time however often it is built)."""
    reset = BreakerReset(
        account_id=row["account_id"],
        scope=row["scope"],
        scope_id=row["scope_id"],
        name=row["name"],
        reason="cooldown",
        trip_id=row["trip_id"],
    )
    return make(reset, occurred_at=row["until"], event_id=derived_id(row["trip_id"], "cooldown"))


# With no breaker open, the sweeper looks again after this long even if nothing woke it.
IDLE_SWEEP_SECONDS = 30.0


async def next_due(pool: asyncpg.Pool) -> datetime | None:
    """When the earliest open breaker's cool-down ends (None: none is open)."""
    due: datetime | None = await pool.fetchval(store.NEXT_DUE_BREAKER)
    return due


async def sweep(pool: asyncpg.Pool, now: datetime) -> int:
    """Close every breaker whose cool-down ended by ``now``; the resets go out via the outbox."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await store.due_breakers(conn, now)
        out: list[Outgoing] = []
        for row in rows:
            await store.close_breaker(conn, row["scope"], row["scope_id"], row["trip_id"])
            out.append(breaker_message(cooldown_reset(row)))
            log.info("breaker_cooled_down", scope=row["scope"], scope_id=row["scope_id"])
        await write_outbox(conn, "limits", out)
    return len(out)
