"""The demo tenant.

An account with Credit and Wallet balances, an API key, and a route tree of two brands, each
with a direct route (Credit) and a pool route (Wallet), with backups.

Channels and routes are written to the router's tables; the account, key and top-ups go through
the admin API, the same path an operator uses, and the seed waits until the ledger shows the
money.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from tollway.runtime.sealing import ENV as SECRET_KEYS_ENV
from tollway.runtime.sealing import KeyRing

# name, brand, route type, bucket, price in / out (micro-units per 1M tokens)
CHANNELS: tuple[tuple[str, str, str, str, int, int], ...] = (
    ("openai-direct", "openai", "direct", "credit", 150_000, 600_000),
    ("openai-backup", "openai", "direct", "credit", 150_000, 600_000),
    ("openai-pool", "openai", "pool", "wallet", 1_000_000, 4_000_000),
    ("openai-pool-backup", "openai", "pool", "wallet", 1_000_000, 4_000_000),
    ("anthropic-direct", "anthropic", "direct", "credit", 800_000, 4_000_000),
    ("anthropic-backup", "anthropic", "direct", "credit", 800_000, 4_000_000),
    ("anthropic-pool", "anthropic", "pool", "wallet", 5_000_000, 25_000_000),
    ("anthropic-pool-backup", "anthropic", "pool", "wallet", 5_000_000, 25_000_000),
)
# channel -> upstream cost price: currency, cost in / out (micro-units per 1M tokens). Below the
# sell prices. Pool channels sell from the Wallet, whose unit is CNY, and cost CNY: their margin
# is meaningful. Direct channels sell Credit and cost USD: the margin report shows both sides
# and says they are not comparable (it never converts).
COSTS: dict[str, tuple[str, int, int]] = {
    "openai-direct": ("USD", 120_000, 480_000),
    "openai-backup": ("USD", 120_000, 480_000),
    "openai-pool": ("CNY", 700_000, 2_800_000),
    "openai-pool-backup": ("CNY", 750_000, 3_000_000),
    "anthropic-direct": ("USD", 640_000, 3_200_000),
    "anthropic-backup": ("USD", 640_000, 3_200_000),
    "anthropic-pool": ("CNY", 3_500_000, 17_500_000),
    "anthropic-pool-backup": ("CNY", 3_750_000, 18_750_000),
}
# catalog model -> [(channel, upstream model, tier)]
ROUTES: dict[str, list[tuple[str, str, int]]] = {
    "gpt-4o-mini": [
        ("openai-direct", "gpt-4o-mini-2024-07-18", 0),
        ("openai-backup", "gpt-4o-mini-2024-07-18", 1),
        ("openai-pool", "gpt-4o-mini", 2),
        ("openai-pool-backup", "gpt-4o-mini", 3),
    ],
    "claude-3-5-haiku": [
        ("anthropic-direct", "claude-3-5-haiku-20241022", 0),
        ("anthropic-backup", "claude-3-5-haiku-20241022", 1),
        ("anthropic-pool", "claude-3-5-haiku", 2),
        ("anthropic-pool-backup", "claude-3-5-haiku", 3),
    ],
    "text-embedding-3-small": [
        ("openai-direct", "text-embedding-3-small", 0),
        ("openai-pool", "text-embedding-3-small", 1),
    ],
}
BUCKET_UNITS = {"credit": "credit", "wallet": "CNY"}


@dataclass(frozen=True)
class Tenant:
    """What a client needs to call the gateway as the seeded tenant."""

    account_id: str
    api_key: str


async def seed_routes(dsn: str, upstream_url: str, ring: KeyRing | None = None) -> None:
    """Write channels, catalog models and routes (idempotent).

    Channel secrets are sealed with ``ring`` (default: ``TOLLWAY_SECRET_KEYS``).
    """
    ring = ring or KeyRing.from_env()
    if ring is None:
        raise RuntimeError(f"set {SECRET_KEYS_ENV}: channel secrets are stored sealed")
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for name, brand, route_type, bucket, p_in, p_out in CHANNELS:
                currency, c_in, c_out = COSTS[name]
                await conn.execute(
                    "INSERT INTO router.channels (id, name, route_type, brand, bucket, base_url,"
                    " secret, price_input, price_output, adapter, cost_currency, cost_input,"
                    " cost_output, cost_per_request)"
                    " VALUES ($1,$1,$2,$3,$4,$5,$6,$7,$8,$3,$9,$10,$11,0)"
                    " ON CONFLICT (id) DO UPDATE SET base_url = EXCLUDED.base_url,"
                    " adapter = EXCLUDED.adapter",
                    name,
                    route_type,
                    brand,
                    bucket,
                    f"{upstream_url}/{name}/v1",
                    ring.seal(f"sk-demo-{name}", f"channel:{name}"),
                    p_in,
                    p_out,
                    currency,
                    c_in,
                    c_out,
                )
            for model, routes in ROUTES.items():
                await conn.execute(
                    "INSERT INTO router.catalog_models (name) VALUES ($1) ON CONFLICT DO NOTHING",
                    model,
                )
                for channel, upstream_model, tier in routes:
                    await conn.execute(
                        "INSERT INTO router.routes (catalog_model, channel_id, upstream_model,"
                        " tier) VALUES ($1,$2,$3,$4) ON CONFLICT DO NOTHING",
                        model,
                        channel,
                        upstream_model,
                        tier,
                    )
    finally:
        await conn.close()


def admin(edge_url: str, token: str) -> httpx.Client:
    """An HTTP client for the admin API."""
    return httpx.Client(
        base_url=f"{edge_url}/admin/v1", timeout=10, headers={"authorization": f"Bearer {token}"}
    )


def create_tenant(  # noqa: PLR0913 - the key's options are keyword-only
    edge_url: str,
    token: str,
    account_id: str,
    topups: dict[str, str],
    *,
    route_types: tuple[str, ...] = ("direct", "pool"),
    allowed_models: list[str] | None = None,
) -> Tenant:
    """Open an account, issue a key, top up its buckets and wait until the ledger shows them."""
    with admin(edge_url, token) as client:
        _ok(client.post("/accounts", json={"name": account_id, "id": account_id}))
        key = _ok(
            client.post(
                "/keys",
                json={
                    "account_id": account_id,
                    "route_types": list(route_types),
                    "allowed_models": allowed_models,
                },
            )
        )["key"]
        for bucket, amount in topups.items():
            _ok(
                client.post(
                    "/topups",
                    json={
                        "account_id": account_id,
                        "bucket": bucket,
                        "unit": BUCKET_UNITS[bucket],
                        "amount": amount,
                        "idempotency_key": f"seed-{account_id}-{bucket}",
                    },
                )
            )
    if topups:
        wait_for_balances(edge_url, key, set(topups))
    return Tenant(account_id=account_id, api_key=key)


def wait_for_balances(edge_url: str, key: str, buckets: set[str], timeout: float = 60) -> None:
    """Poll /v1/balance until every bucket in ``buckets`` exists."""
    deadline = time.monotonic() + timeout
    with httpx.Client(
        base_url=edge_url, timeout=5, headers={"authorization": f"Bearer {key}"}
    ) as client:
        while time.monotonic() < deadline:
            seen = {b["bucket"] for b in client.get("/v1/balance").json().get("buckets", [])}
            if buckets <= seen:
                return
            time.sleep(0.1)
    raise TimeoutError(f"the ledger did not apply the top-ups within {timeout}s")


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(
            f"admin API {response.request.url.path}: {response.status_code} {response.text}"
        )
    return response.json()
