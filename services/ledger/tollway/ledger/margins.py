"""Margin reports: what the ledger charged against what upstreams cost, per group (read model).

Revenue is what the ledger booked to ``system/revenue/<channel>``: settlements and late
captures, net of reversals (a reversal without a request id is attributed through the entry it
reverses). Cost is ``ledger.upstream_costs``, one row per booked attempt, re-rated: each
booking plus its compensating entries (``ledger.upstream_cost_rerates``), on the attempt's own
time and day whenever the correction was booked. Both are filtered and dayed by event time
(UTC), so a report reads the same on a replay.

A margin is revenue minus cost only where both are in one unit (the bucket's unit equals the
cost currency) and every charge of the group was for an attempt with a booked cost; otherwise
the row shows both sides and says why they are not comparable. Nothing is ever converted.
Amounts are integer micro-units throughout; formatting is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

# Group key -> its column, named alike in the cost rows and the revenue facts. Constants only: a
# client picks a key, never text that reaches the SQL.
GROUPS: dict[str, str] = {
    "channel": "channel_id",
    "route_type": "route_type",
    "brand": "brand",
    "model": "catalog_model",
    "account": "account_id",
    "key": "key_id",
    "project": "project_id",
    "day": "day",
}
# Each booked attempt cost as it stands now: ``booked_micro`` as booked, ``cost_micro`` re-rated
# (plus the signed sum of its cost re-ratings).
COSTS_NOW = """
(SELECT c.event_id, c.request_id, c.attempt, c.occurred_at, c.day, c.channel_id, c.brand,
        c.route_type, c.catalog_model, c.account_id, c.key_id, c.project_id, c.served,
        c.currency, c.cost_micro AS booked_micro,
        (c.cost_micro + coalesce((SELECT sum(x.amount) FROM ledger.upstream_cost_rerates x
                                  WHERE x.cost_event_id = c.event_id), 0))::bigint AS cost_micro
 FROM ledger.upstream_costs c) costs_now
"""
COSTS = (
    """
SELECT {cols}, currency AS unit, sum(cost_micro)::bigint AS cost_micro, count(*) AS attempts,
       count(*) FILTER (WHERE NOT served) AS failed_attempts,
       coalesce(sum(cost_micro) FILTER (WHERE NOT served), 0)::bigint AS failed_cost_micro
FROM """
    + COSTS_NOW
    + """
WHERE occurred_at >= $1 AND occurred_at < $2
GROUP BY {cols}, currency
"""
)
REVENUE = """
WITH rev AS (
    SELECT substr(p.account, length('system/revenue/') + 1) AS channel_id, p.unit, p.amount,
           (j.occurred_at AT TIME ZONE 'UTC')::date AS day,
           coalesce(j.body -> 'payload' ->> 'request_id',
                    o.body -> 'payload' ->> 'request_id') AS request_id
    FROM ledger.postings p
    JOIN ledger.journal j USING (event_id)
    LEFT JOIN ledger.journal o ON o.event_id = j.body -> 'payload' ->> 'original_event_id'
    WHERE p.account LIKE 'system/revenue/%' AND j.occurred_at >= $1 AND j.occurred_at < $2
), facts AS (
    SELECT rev.channel_id, rev.unit, rev.amount, rev.day, r.account_id, r.key_id, r.project_id,
           r.catalog_model, a.route_type, a.brand,
           EXISTS (SELECT 1 FROM ledger.upstream_costs c
                   WHERE c.request_id = rev.request_id AND c.channel_id = rev.channel_id
                     AND c.served) AS costed
    FROM rev
    LEFT JOIN ledger.receipts r ON r.request_id = rev.request_id
    LEFT JOIN LATERAL (
        SELECT x ->> 'route_type' AS route_type, x ->> 'brand' AS brand
        FROM jsonb_array_elements(r.body -> 'attempts') x
        WHERE x ->> 'channel_id' = rev.channel_id LIMIT 1
    ) a ON true
)
SELECT {cols}, unit, sum(amount)::bigint AS revenue_micro,
       coalesce(sum(amount) FILTER (WHERE NOT costed), 0)::bigint AS uncosted_micro,
       count(*) AS charges
FROM facts GROUP BY {cols}, unit
"""


SELECT_RECEIPT = "SELECT body::text FROM ledger.receipts WHERE request_id = $1"
SELECT_REQUEST_COSTS = (
    "SELECT attempt, channel_id, served, currency, booked_micro, cost_micro FROM "  # noqa: S608 - constants
    + COSTS_NOW
    + " WHERE request_id = $1 ORDER BY attempt"
)
SELECT_REQUEST_COST_RERATES = """
SELECT attempt, event_id, correction_id, currency, booked_before, rerated, amount, at
FROM ledger.upstream_cost_rerates WHERE request_id = $1 ORDER BY at, event_id
"""


class UnknownGroupError(ValueError):
    """A ``group_by`` that is not one of :data:`GROUPS`."""


def group_columns(group_by: tuple[str, ...]) -> str:
    """The SQL columns of ``group_by`` (each a key of :data:`GROUPS`)."""
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown or not group_by or len(set(group_by)) != len(group_by):
        raise UnknownGroupError(", ".join(unknown) or "group_by")
    return ", ".join(GROUPS[g] for g in group_by)


@dataclass
class MarginRow:
    """One group's revenue per unit and cost per currency, and the margin when comparable."""

    group: dict[str, Any]
    revenue: dict[str, int] = field(default_factory=dict)
    uncosted: dict[str, int] = field(default_factory=dict)
    cost: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    failed_attempts: int = 0
    failed_cost: dict[str, int] = field(default_factory=dict)
    charges: int = 0

    @property
    def units(self) -> set[str]:
        """Every unit with a non-zero amount on either side."""
        return {u for u, v in self.revenue.items() if v} | {u for u, v in self.cost.items() if v}

    @property
    def unit(self) -> str | None:
        """The one unit both sides are in, when they are comparable."""
        return next(iter(self.units)) if self.comparable else None

    @property
    def comparable(self) -> bool:
        """One unit on both sides, and no charge without a booked cost."""
        return len(self.units) == 1 and bool(self.cost) and not any(self.uncosted.values())

    @property
    def margin_micro(self) -> int | None:
        """Revenue minus cost in :attr:`unit`, or None when not comparable."""
        unit = self.unit
        if unit is None:
            return None
        return self.revenue.get(unit, 0) - self.cost.get(unit, 0)

    @property
    def note(self) -> str | None:
        """Why there is no margin, in words (None when there is one)."""
        if self.comparable:
            return None
        if not self.cost:
            return "not comparable: no upstream cost booked (the channel has no cost price)"
        if any(self.uncosted.values()):
            return "not comparable: part of the revenue has no booked upstream cost"
        revenue = ", ".join(sorted(u for u, v in self.revenue.items() if v)) or "none"
        cost = ", ".join(sorted(u for u, v in self.cost.items() if v)) or "none"
        return f"not comparable: revenue in {revenue}, cost in {cost}"


def _key(row: Any, group_by: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(row[GROUPS[g]] for g in group_by)


def combine(group_by: tuple[str, ...], revenue: list[Any], costs: list[Any]) -> list[MarginRow]:
    """Join the revenue and cost aggregates of each group (pure; rows in group order)."""
    table: dict[tuple[Any, ...], MarginRow] = {}

    def entry(row: Any) -> MarginRow:
        key = _key(row, group_by)
        if key not in table:
            table[key] = MarginRow(group=dict(zip(group_by, key, strict=True)))
        return table[key]

    for r in revenue:
        m = entry(r)
        m.revenue[r["unit"]] = m.revenue.get(r["unit"], 0) + int(r["revenue_micro"])
        m.uncosted[r["unit"]] = m.uncosted.get(r["unit"], 0) + int(r["uncosted_micro"])
        m.charges += int(r["charges"])
    for c in costs:
        m = entry(c)
        m.cost[c["unit"]] = m.cost.get(c["unit"], 0) + int(c["cost_micro"])
        m.failed_cost[c["unit"]] = m.failed_cost.get(c["unit"], 0) + int(c["failed_cost_micro"])
        m.attempts += int(c["attempts"])
        m.failed_attempts += int(c["failed_attempts"])
    return [table[k] for k in sorted(table, key=lambda k: tuple(str(v or "") for v in k))]


def total(rows: list[MarginRow]) -> MarginRow:
    """Every row summed into one (comparable only when the whole is)."""
    out = MarginRow(group={})
    for r in rows:
        for mine, theirs in (
            (out.revenue, r.revenue),
            (out.uncosted, r.uncosted),
            (out.cost, r.cost),
            (out.failed_cost, r.failed_cost),
        ):
            for unit, amount in theirs.items():
                mine[unit] = mine.get(unit, 0) + amount
        out.attempts += r.attempts
        out.failed_attempts += r.failed_attempts
        out.charges += r.charges
    return out


def receipt_economics(
    receipt: dict[str, Any], costs: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], MarginRow]:
    """Each attempt's booked cost and margin, and the request's (pure; operators only).

    A served attempt's margin is the request's net charge (what it costs the tenant now, after
    any re-rating, minus refunds) minus its cost, when both are in one unit; a failed attempt
    earned nothing, so its margin is minus its cost. An attempt without a booked cost has none.
    """
    by_attempt = {int(c["attempt"]): c for c in costs}
    unit = receipt.get("unit") or ""
    charged = receipt.get("rerated_charge_micro", receipt.get("charged_micro"))
    net = int(charged or 0) - int(receipt.get("refunded_micro") or 0)
    whole = MarginRow(group={"request_id": receipt.get("request_id")})
    if net:
        whole.revenue[unit] = net
    attempts = []
    served_costed = False
    for a in receipt.get("attempts") or []:
        c = by_attempt.get(int(a.get("attempt") or 0))
        one = MarginRow(group={"attempt": a.get("attempt")})
        if c is not None:
            one.cost[c["currency"]] = int(c["cost_micro"])
            whole.cost[c["currency"]] = whole.cost.get(c["currency"], 0) + int(c["cost_micro"])
            whole.attempts += 1
            served_costed = served_costed or bool(c["served"])
            if c["served"] and net:
                one.revenue[unit] = net
        attempts.append({"attempt": a.get("attempt"), "row": one})
    if net and not served_costed:
        whole.uncosted[unit] = net
    return attempts, whole


async def operator_receipt(
    conn: asyncpg.Connection, request_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """A receipt of any account with its attempt costs, or None when there is none.

    Each cost has ``cost_micro`` (re-rated: what the attempt costs the operator now),
    ``booked_micro`` (as first booked) and ``rerates`` (its cost re-rating entries, in order).
    """
    raw = await conn.fetchval(SELECT_RECEIPT, request_id)
    if raw is None:
        return None
    costs = [dict(r) for r in await conn.fetch(SELECT_REQUEST_COSTS, request_id)]
    rerates = [dict(r) for r in await conn.fetch(SELECT_REQUEST_COST_RERATES, request_id)]
    for c in costs:
        c["rerates"] = [
            {k: v for k, v in r.items() if k != "attempt"}
            for r in rerates
            if r["attempt"] == c["attempt"]
        ]
    return orjson.loads(raw), costs


async def report(
    conn: asyncpg.Connection, group_by: tuple[str, ...], start: datetime, end: datetime
) -> list[MarginRow]:
    """Margin rows of ``group_by`` for events in [start, end)."""
    cols = group_columns(group_by)
    # Columns come from GROUPS (constants), never from the client.
    revenue = await conn.fetch(REVENUE.format(cols=cols), start, end)
    costs = await conn.fetch(COSTS.format(cols=cols), start, end)
    return combine(group_by, revenue, costs)
