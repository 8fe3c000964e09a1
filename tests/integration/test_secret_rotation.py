"""Channel secrets at rest: rotation re-seals every stored secret under the new first key, after
which the old key can be dropped and channels still open; a service with stored secrets and no
key refuses to start, saying why.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import asyncpg
import pytest

from tests.integration.scratch_db import scratch_database
from tollway.devstack.broker import free_port
from tollway.router.channels import ChannelCache
from tollway.runtime.sealing import KeyRing, key_id_of, new_key_entry

if TYPE_CHECKING:
    from tollway.devstack.stack import Stack

pytestmark = pytest.mark.integration

OLD, NEW = new_key_entry("old"), new_key_entry("new")
SECRETS = {"ch-a": "sk-alpha", "ch-b": "sk-bravo", "ch-legacy": "sk-in-clear"}
INSERT = """
INSERT INTO router.channels (id, name, route_type, brand, bucket, base_url, secret,
    price_input, price_output)
VALUES ($1, $1, 'direct', 'openai', 'credit', 'http://127.0.0.1:9/v1', $2, 1, 1)
"""


def _run(
    args: list[str], dsn: str, keys: str | None, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env.update(DATABASE_URL=dsn, **extra)
    if keys is not None:
        env["TOLLWAY_SECRET_KEYS"] = keys
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


async def _seed(dsn: str) -> None:
    old = KeyRing.parse(OLD)
    conn = await asyncpg.connect(dsn)
    try:
        for channel, secret in SECRETS.items():
            stored = secret if channel == "ch-legacy" else old.seal(secret, f"channel:{channel}")
            await conn.execute(INSERT, channel, stored)
    finally:
        await conn.close()


async def _stored(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id, secret FROM router.channels")
        return {r["id"]: r["secret"] for r in rows}
    finally:
        await conn.close()


async def _opened(dsn: str, keys: str) -> dict[str, str]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    cache = ChannelCache(pool, KeyRing.parse(keys))
    try:
        await cache.refresh()
        return {c: ch.secret for c in SECRETS if (ch := cache.get(c)) is not None}
    finally:
        await cache.close()
        await pool.close()


@pytest.fixture
def channels_db(stack: Stack) -> str:
    dsn = asyncio.run(scratch_database(stack.dsn, {"router": "tollway.router"}))
    asyncio.run(_seed(dsn))
    return dsn


def test_rotation_reseals_every_secret_so_the_old_key_can_be_dropped(channels_db: str) -> None:
    cli = ["-m", "tollway.cli", "secrets"]

    rotated = _run([*cli, "rotate"], channels_db, f"{NEW},{OLD}")

    assert rotated.returncode == 0, rotated.stderr
    assert "re-sealed 3 channel secret(s) under key new" in rotated.stdout
    stored = asyncio.run(_stored(channels_db))
    assert {key_id_of(v) for v in stored.values()} == {"new"}
    assert not any(s in v for v in stored.values() for s in SECRETS.values())
    # The old key is gone from the list: every channel still opens, with its own secret.
    assert _run([*cli, "check"], channels_db, NEW).returncode == 0
    assert asyncio.run(_opened(channels_db, NEW)) == SECRETS
    again = _run([*cli, "rotate"], channels_db, NEW)
    assert "re-sealed 0 channel secret(s)" in again.stdout
    # Only the dropped key: a clear refusal naming the key it lacks, no traceback.
    stale = _run([*cli, "check"], channels_db, OLD)
    assert stale.returncode == 1
    assert "'new'" in stale.stderr
    assert "Traceback" not in stale.stderr


def test_the_router_refuses_to_start_with_stored_secrets_and_no_key(
    stack: Stack, channels_db: str
) -> None:
    done = _run(
        ["-m", "tollway.router"], channels_db, None, KAFKA_BOOTSTRAP_SERVERS=stack.bootstrap
    )

    assert done.returncode != 0
    assert "3 channel secret(s) are stored but TOLLWAY_SECRET_KEYS is not set" in done.stderr


def test_the_edge_refuses_to_start_with_stored_secrets_and_no_key(
    stack: Stack, channels_db: str
) -> None:
    done = _run(
        ["-m", "tollway.edge"],
        channels_db,
        None,
        KAFKA_BOOTSTRAP_SERVERS=stack.bootstrap,
        TOLLWAY_EDGE_PORT=str(free_port()),
    )

    assert done.returncode != 0
    assert "TOLLWAY_SECRET_KEYS is not set" in done.stdout + done.stderr
