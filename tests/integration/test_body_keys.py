"""Epoch data keys of sealed request bodies: shared by every edge, found by the router, deleted
once their epoch is past delivery plus the retention, and a body is unrecoverable after that.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
import pytest

from tests.integration.scratch_db import scratch_database
from tollway.runtime.bodies import BodyKeys, BodyUnavailableError, seal_body

if TYPE_CHECKING:
    from tollway.devstack.stack import Stack

pytestmark = pytest.mark.integration

EPOCH, RETENTION = 10.0, 5.0
BODY = {"messages": [{"role": "user", "content": "a private prompt"}]}


class Clock:
    """Time the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _scenario(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        clock = Clock(1_000_000_001.0)  # epoch 100_000_000 ends at 1_000_000_010
        edge_a, edge_b = (BodyKeys(pool, EPOCH, RETENTION, clock) for _ in range(2))
        router = BodyKeys(pool, EPOCH, RETENTION, clock)

        first = await edge_a.current()
        assert await edge_b.current() == first  # every edge seals under the same epoch key
        sealed = seal_body(BODY, first, "req-1")
        assert await router.open(sealed, "req-1") == BODY

        clock.now = 1_000_000_012.0  # the next epoch: a new key; the old one still opens
        second = await edge_a.current()
        assert second.id != first.id
        assert await router.open(sealed, "req-1") == BODY
        assert await edge_a.sweep() == 0

        clock.now = 1_000_000_015.0  # the first epoch's end plus the retention
        with pytest.raises(BodyUnavailableError):
            await router.open(sealed, "req-1")  # gone at once, even from the router's cache
        assert await edge_b.sweep() == 1
        left = await pool.fetch("SELECT id FROM bodykeys.keys")
        assert [r["id"] for r in left] == [second.id]
        with pytest.raises(BodyUnavailableError):
            await BodyKeys(pool, EPOCH, RETENTION, clock).open(sealed, "req-1")
    finally:
        await pool.close()


def test_an_epoch_key_is_shared_then_deleted_after_its_retention_and_its_bodies_with_it(
    stack: Stack,
) -> None:
    dsn = asyncio.run(scratch_database(stack.dsn, {"bodykeys": "tollway.runtime"}))

    asyncio.run(_scenario(dsn))
