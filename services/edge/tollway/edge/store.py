"""asyncpg adapter of the edge.

Keys and accounts (edge schema), route plans (read from the router's schema), receipts and
balances (read from the ledger's projections).

Reads that sit on the hot path are cached for ``ttl`` seconds, short enough that a revoked key
stops working within a second on every instance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from tollway.events.gateway import Candidate
from tollway.events.pricing import Price

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

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
       c.price_input, c.price_output, c.price_cached_input
FROM router.routes r JOIN router.channels c ON c.id = r.channel_id
WHERE r.catalog_model = $1 AND c.enabled
ORDER BY r.tier, r.weight DESC, c.name
"""
SELECT_RECEIPT = "SELECT body FROM ledger.receipts WHERE request_id = $1 AND account_id = $2"
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

    def put(self, key: Any, value: Any) -> None:
        if len(self.items) > 100_000:
            self.items.clear()
        self.items[key] = (time.monotonic(), value)


class EdgeStore:
    """Reads for the client API, cached on the hot path."""

    def __init__(self, pool: asyncpg.Pool, ttl: float) -> None:
        """Read through ``pool``; cache hot reads for ``ttl`` seconds."""
        self.pool = pool
        self._keys = _Ttl(ttl)
        self._models = _Ttl(ttl)

    async def key_by_hash(self, key_hash: bytes) -> KeyInfo | None:
        """The key with this digest, or None."""
        hit, value = self._keys.get(key_hash)
        if hit:
            return value  # type: ignore[no-any-return]
        row = await self.pool.fetchrow(SELECT_KEY, key_hash)
        info = (
            None
            if row is None
            else KeyInfo(
                id=row["id"],
                account_id=row["account_id"],
                project_id=row["project_id"],
                allowed_models=tuple(row["allowed_models"]) if row["allowed_models"] else None,
                route_types=tuple(row["route_types"]),
                expires_at=row["expires_at"],
                revoked_at=row["revoked_at"],
            )
        )
        self._keys.put(key_hash, info)
        return info

    async def model(self, name: str) -> ModelInfo | None:
        """The catalog model with its plan, or None when unknown or disabled."""
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
        ),
    )
