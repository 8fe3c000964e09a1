"""A catalog model whose hold equals its charge, so budget tests can count calls exactly.

``flat-mini`` is served by ``flat-direct`` (credit) backed by ``flat-pool`` (wallet), both free
on input. Called with ``max_tokens=1`` the demo upstream answers exactly one output token, so a
call's worst case (the hold) and its cost are both one output token's price: 7 micro-credit on
the direct route, 3 micro-CNY on the pool route.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, wait_for
from tollway.devstack.seed import create_tenant
from tollway.events.gateway import Candidate
from tollway.events.pricing import Price

MODEL = "flat-mini"
# The same shape on channels of its own, for tests that make the direct channel fail: their
# failures never count towards ``flat-direct``'s circuit.
FALLBACK_MODEL = "flat-fallback"
DIRECT_MICRO = 7
POOL_MICRO = 3
# model -> (channel id, route type, bucket, output price, the demo upstream channel that answers)
MODELS = {
    MODEL: (
        ("flat-direct", "direct", "credit", DIRECT_MICRO * 1_000_000, "openai-direct"),
        ("flat-pool", "pool", "wallet", POOL_MICRO * 1_000_000, "openai-pool"),
    ),
    FALLBACK_MODEL: (
        ("fb-direct", "direct", "credit", DIRECT_MICRO * 1_000_000, "openai-direct"),
        ("fb-pool", "pool", "wallet", POOL_MICRO * 1_000_000, "openai-pool"),
    ),
}
CHANNELS = MODELS[MODEL]


def candidates() -> list[Candidate]:
    """The plan of ``flat-mini`` as the edge builds it."""
    return [
        Candidate(
            channel_id=cid,
            channel=cid,
            brand="flat",
            route_type=rtype,  # type: ignore[arg-type]
            bucket=bucket,
            upstream_model="gpt-4o-mini",
            price=Price(input=0, output=p_out),
            tier=tier,
        )
        for tier, (cid, rtype, bucket, p_out, _) in enumerate(CHANNELS)
    ]


async def _seed(dsn: str, upstream_url: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for model, channels in MODELS.items():
                await _seed_model(conn, upstream_url, model, channels)
    finally:
        await conn.close()


async def _seed_model(
    conn: asyncpg.Connection, upstream_url: str, model: str, channels: tuple[Any, ...]
) -> None:
    await conn.execute(
        "INSERT INTO router.catalog_models (name) VALUES ($1) ON CONFLICT DO NOTHING", model
    )
    for tier, (cid, rtype, bucket, p_out, answers) in enumerate(channels):
        await conn.execute(
            "INSERT INTO router.channels (id, name, route_type, brand, bucket, base_url,"
            " secret, price_input, price_output) VALUES ($1,$1,$2,'flat',$3,$4,'sk-x',0,$5)"
            " ON CONFLICT (id) DO NOTHING",
            cid,
            rtype,
            bucket,
            f"{upstream_url}/{answers}/v1",
            p_out,
        )
        await conn.execute(
            "INSERT INTO router.routes (catalog_model, channel_id, upstream_model, tier)"
            " VALUES ($1,$2,'gpt-4o-mini',$3) ON CONFLICT DO NOTHING",
            model,
            cid,
            tier,
        )


def call(edge_url: str, key: str, task: str | None = None, model: str = MODEL) -> httpx.Response:
    """One ``flat-mini`` chat completion."""
    headers = {"authorization": f"Bearer {key}"}
    if task is not None:
        headers["x-tollway-task"] = task
    return httpx.post(
        f"{edge_url}/v1/chat/completions",
        headers=headers,
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        timeout=30,
    )


@pytest.fixture(scope="session")
def flat_model(stack: Any) -> str:
    """Seed ``flat-mini`` and wait until the router serves it from both channels' buckets."""
    asyncio.run(_seed(stack.dsn, stack.upstream_url))
    tenant = create_tenant(
        stack.edge_url, ADMIN_TOKEN, f"flat-{uuid.uuid4().hex[:8]}", {"credit": "1"}
    )
    for model in MODELS:
        wait_for(
            lambda model=model: (
                call(stack.edge_url, tenant.api_key, model=model).status_code == 200
            ),
            timeout=90,
            what=f"the router to serve {model}",
        )
    return MODEL
