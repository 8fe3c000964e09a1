"""asyncpg adapter of the edge.

Keys and accounts (edge schema), route plans (read from the router's schema), receipts and
balances (read from the ledger's projections).

Reads that sit on the hot path are cached for ``ttl`` seconds. Keys are cached for at most
``KEY_CACHE_MAX_SECONDS`` whatever the setting, so a revoked key stops working within a second on
every instance; the instance that revoked it forgets it at once (:meth:`EdgeStore.forget_key`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from tollway.events.gateway import Candidate
from tollway.events.pricing import CostPrice, Price

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    import asyncpg

KEY_CACHE_MAX_SECONDS = 1.0
SELECT_KEY = """
SELECT id, account_id, project_id, allowed_models, route_types, expires_at, revoked_at
FROM edge.api_keys WHERE key_hash = $1
"""
SELECT_MODEL = """
SELECT name, default_max_output_tokens, max_output_tokens FROM router.catalog_models
WHERE name = $1 AND enabled
"""
SELECT_PLAN = """
SELECT c.id, c.name, c.brand, c.route_type, c.bucket, r.upstream_model, r.tier, r.weight,
       c.price_input, c.price_output, c.price_cached_input, c.price_cache_write,
       c.price_cache_write_1h, c.price_reasoning, c.cost_currency, c.cost_input, c.cost_output,
       c.cost_cached_input, c.cost_cache_write, c.cost_cache_write_1h, c.cost_reasoning,
       c.cost_per_request
FROM router.routes r JOIN router.channels c ON c.id = r.channel_id
WHERE r.catalog_model = $1 AND c.enabled
ORDER BY r.tier, r.weight DESC, c.name
"""
SELECT_RECEIPT = "SELECT body FROM ledger.receipts WHERE request_id = $1 AND account_id = $2"
SELECT_CATALOG = """
SELECT m.name, array_agg(DISTINCT c.route_type) AS route_types
FROM router.catalog_models m
JOIN router.routes r ON r.catalog_model = m.name
JOIN router.channels c ON c.id = r.channel_id
WHERE m.enabled AND c.enabled
GROUP BY m.name ORDER BY m.name
"""
OWNS_PROJECT = "SELECT true FROM edge.projects WHERE id = $1 AND account_id = $2"
OWNS_KEY = "SELECT true FROM edge.api_keys WHERE id = $1 AND account_id = $2"
# Keyset pagination, newest first: the cursor is the last row's (created_at, request_id).
LIST_RECEIPTS = """
SELECT request_id, created_at, body FROM ledger.receipts
WHERE account_id = $1
  AND ($2::text IS NULL OR project_id = $2)
  AND ($3::text IS NULL OR key_id = $3)
  AND ($4::text IS NULL OR task_id = $4)
  AND ($5::text IS NULL OR catalog_model = $5)
  AND ($6::timestamptz IS NULL OR created_at >= $6)
  AND ($7::timestamptz IS NULL OR created_at < $7)
  AND ($8::timestamptz IS NULL OR (created_at, request_id) < ($8, $9::text))
ORDER BY created_at DESC, request_id DESC
LIMIT $10
"""
USAGE_GROUPS = {
    "key": "key_id",
    "project": "project_id",
    "model": "catalog_model",
    "bucket": "body->>'bucket'",
    "day": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "route": (
        "(SELECT a->>'route_type' FROM jsonb_array_elements(body->'attempts') a"
        " WHERE a->>'channel' = body->>'served_by'"
        " ORDER BY (a->>'attempt')::int DESC LIMIT 1)"
    ),
}
# ``{day}`` is the day expression for a series over time, or NULL for totals. A re-rated request
# counts what it costs now (``rerated_charge_micro``), so usage adds up to what buckets paid.
USAGE = """
SELECT {group} AS grp, {day} AS day, body->>'unit' AS unit, count(*) AS requests,
       sum(COALESCE((body->'usage'->>'input_tokens')::bigint, 0))::bigint AS input_tokens,
       sum(COALESCE((body->'usage'->>'output_tokens')::bigint, 0))::bigint AS output_tokens,
       sum(COALESCE((body->'usage'->>'cached_input_tokens')::bigint, 0))::bigint
           AS cached_input_tokens,
       sum(COALESCE((body->>'rerated_charge_micro')::bigint, (body->>'charged_micro')::bigint,
                    0))::bigint AS charged_micro
FROM ledger.receipts
WHERE account_id = $1
  AND ($2::timestamptz IS NULL OR created_at >= $2)
  AND ($3::timestamptz IS NULL OR created_at < $3)
GROUP BY 1, 2, 3 ORDER BY 1 NULLS LAST, 2, 3
"""
SELECT_BALANCES = """
SELECT b.bucket, b.unit,
       COALESCE((SELECT amount FROM ledger.balances
                 WHERE account = b.account_id || '/' || b.bucket AND unit = b.unit), 0)
           AS available,
       COALESCE((SELECT amount FROM ledger.balances
                 WHERE account = b.account_id || '/' || b.bucket || '/held' AND unit = b.unit), 0)
           AS held
FROM ledger.buckets b WHERE b.account_id = $1 ORDER BY b.bucket
"""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the edge knows about an authenticated key."""

    id: str
    account_id: str
    project_id: str
    allowed_models: tuple[str, ...] | None
    route_types: tuple[str, ...]
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any], key_id: str) -> KeyInfo:
        """A key row (``edge.api_keys``' columns) whose id is ``key_id``."""
        return cls(
            id=key_id,
            account_id=row["account_id"],
            project_id=row["project_id"],
            allowed_models=tuple(row["allowed_models"]) if row["allowed_models"] else None,
            route_types=tuple(row["route_types"]),
            expires_at=row["expires_at"],
            revoked_at=row["revoked_at"],
        )


@dataclass(frozen=True, slots=True)
class ReceiptQuery:
    """Filters and the keyset cursor of a receipts listing."""

    project: str | None = None
    key: str | None = None
    task: str | None = None
    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: tuple[datetime, str] | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A catalog model and its route plan (every enabled candidate, in order)."""

    name: str
    default_max_output_tokens: int
    max_output_tokens: int
    plan: tuple[Candidate, ...]


class _Ttl:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> tuple[bool, Any]:
        hit = self.items.get(key)
        if hit is None or time.monotonic() - hit[0] > self.ttl:
            return False, None
        return True, hit[1]

    def drop(self, key: Any) -> None:
        self.items.pop(key, None)

    def put(self, key: Any, value: Any) -> None:
        if len(self.items) > 100_000:
            self.items.clear()
        self.items[key] = (time.monotonic(), value)


class EdgeStore:
    """Reads for the client API, cached on the hot path."""

    def __init__(self, pool: asyncpg.Pool, ttl: float) -> None:
        """Read through ``pool``; cache hot reads for ``ttl`` seconds."""
        self.pool = pool
        self._keys = _Ttl(min(ttl, KEY_CACHE_MAX_SECONDS))
        self._models = _Ttl(ttl)
        self._revocations = 0

    async def key_by_hash(self, key_hash: bytes) -> KeyInfo | None:
        """The key with this digest, or None."""
        hit, value = self._keys.get(key_hash)
        if hit:
            return value  # type: ignore[no-any-return]
        revocations = self._revocations
        row = await self.pool.fetchrow(SELECT_KEY, key_hash)
        info = None if row is None else KeyInfo.from_row(row, row["id"])
        if revocations == self._revocations:  # a read that raced a revocation is not cached
            self._keys.put(key_hash, info)
        return info

    def forget_key(self, key_hash: bytes) -> None:
        """Drop a key from this instance's cache (it was revoked here: the next call sees it)."""
        self._revocations += 1
        self._keys.drop(key_hash)

    async def model(self, name: str) -> ModelInfo | None:
        """The catalog model with its plan, or None when unknown or disabled."""
        if "\x00" in name:
            return None  # Postgres text cannot hold NUL: no model can have this name
        hit, value = self._models.get(name)
        if hit:
            return value  # type: ignore[no-any-return]
        row = await self.pool.fetchrow(SELECT_MODEL, name)
        info = None
        if row is not None:
            plan = tuple(_candidate(r) for r in await self.pool.fetch(SELECT_PLAN, name))
            info = ModelInfo(
                row["name"], row["default_max_output_tokens"], row["max_output_tokens"], plan
            )
        self._models.put(name, info)
        return info

    async def receipt(self, request_id: str, account_id: str) -> dict[str, Any] | None:
        """A receipt of this account, or None (another account's receipt is not found)."""
        raw = await self.pool.fetchval(SELECT_RECEIPT, request_id, account_id)
        return None if raw is None else orjson.loads(raw)

    async def catalog(self) -> list[tuple[str, tuple[str, ...]]]:
        """Every enabled catalog model with the route types that can serve it."""
        rows = await self.pool.fetch(SELECT_CATALOG)
        return [(r["name"], tuple(r["route_types"])) for r in rows]

    async def owns(self, account_id: str, *, project_id: str | None, key_id: str | None) -> bool:
        """The project and key (when given) belong to ``account_id``."""
        for sql, value in ((OWNS_PROJECT, project_id), (OWNS_KEY, key_id)):
            if value is not None and not await self.pool.fetchval(sql, value, account_id):
                return False
        return True

    async def receipts(
        self, account_id: str, query: ReceiptQuery
    ) -> list[tuple[datetime, str, dict[str, Any]]]:
        """A page of the account's receipts, newest first, each with its cursor position."""
        after_at, after_id = query.after or (None, None)
        rows = await self.pool.fetch(
            LIST_RECEIPTS,
            account_id,
            query.project,
            query.key,
            query.task,
            query.model,
            query.since,
            query.until,
            after_at,
            after_id,
            query.limit,
        )
        return [(r["created_at"], r["request_id"], orjson.loads(r["body"])) for r in rows]

    async def usage(
        self,
        account_id: str,
        group_by: str,
        since: datetime | None,
        until: datetime | None,
        *,
        per_day: bool = False,
    ) -> list[dict[str, Any]]:
        """Requests, tokens and charges of the account, per group and unit (and UTC day)."""
        # Constants picked by a whitelisted key: no client text reaches the SQL.
        day = USAGE_GROUPS["day"] if per_day else "NULL::text"
        sql = USAGE.format(group=USAGE_GROUPS[group_by], day=day)
        rows = await self.pool.fetch(sql, account_id, since, until)
        hidden = {"grp"} if per_day else {"grp", "day"}
        return [
            {group_by: r["grp"], **{k: v for k, v in r.items() if k not in hidden}} for r in rows
        ]

    async def balances(self, account_id: str) -> list[dict[str, Any]]:
        """Each bucket's available, held and posted micro-units."""
        rows = await self.pool.fetch(SELECT_BALANCES, account_id)
        return [
            {
                "bucket": r["bucket"],
                "unit": r["unit"],
                "available_micro": r["available"],
                "held_micro": r["held"],
                "posted_micro": r["available"] + r["held"],
            }
            for r in rows
        ]


def _candidate(row: Any) -> Candidate:
    return Candidate(
        channel_id=row["id"],
        channel=row["name"],
        brand=row["brand"],
        route_type=row["route_type"],
        bucket=row["bucket"],
        upstream_model=row["upstream_model"],
        tier=row["tier"],
        weight=row["weight"],
        price=Price(
            input=row["price_input"],
            output=row["price_output"],
            cached_input=row["price_cached_input"],
            cache_write=row["price_cache_write"],
            cache_write_1h=row["price_cache_write_1h"],
            reasoning=row["price_reasoning"],
        ),
        cost=_cost(row),
    )


def _cost(row: Any) -> CostPrice | None:
    """The channel's upstream cost price, copied onto the candidate (operators only)."""
    if row["cost_currency"] is None:
        return None
    return CostPrice(
        currency=row["cost_currency"],
        input=row["cost_input"],
        output=row["cost_output"],
        cached_input=row["cost_cached_input"],
        cache_write=row["cost_cache_write"],
        cache_write_1h=row["cost_cache_write_1h"],
        reasoning=row["cost_reasoning"],
        per_request=row["cost_per_request"] or 0,
    )
