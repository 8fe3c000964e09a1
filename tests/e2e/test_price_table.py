"""Channel price changes made through the admin API are journaled by the ledger as numbered
versions (``ledger.price_table_changed``, account ``system:prices``), survive a replay, and a
change the log does not confirm is not written at all.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from tests.conftest import ADMIN_TOKEN, wait_for
from tests.e2e.route_kit import admin_client, new_channel
from tests.integration import ledger_io as io
from tollway.edge import errors
from tollway.edge.route_admin import patch_channel
from tollway.edge.route_tree import ChannelPatch, Prices, RouteTreeStore
from tollway.events.topics import PRICE_TABLE_KEY
from tollway.ledger import replay

if TYPE_CHECKING:
    from tollway.devstack.stack import Stack

pytestmark = pytest.mark.e2e


def _price_entries(stack: Stack, channel_id: str) -> list[dict[str, Any]]:
    with httpx.Client(
        base_url=f"{stack.edge_url}/admin/v1/ledger",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    ) as ledger:
        page = ledger.get(f"/accounts/{PRICE_TABLE_KEY}/entries", params={"limit": 500})
    assert page.status_code == 200, page.text
    mine = [e for e in page.json()["entries"] if e["payload"]["channel_id"] == channel_id]
    return sorted(mine, key=lambda e: e["payload"]["version"])


def _verify(stack: Stack, database: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": stack.dsn, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "tollway.cli", "ledger", "verify", "--database", database],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_price_changes_are_journaled_as_versions_that_a_replay_reproduces(stack) -> None:
    started = datetime.now(UTC)
    with admin_client(stack) as admin:
        channel = new_channel(admin, stack, "openai-backup", bucket="wallet")
        first = admin.patch(f"/channels/{channel}", json={"prices": {"input": "1", "output": "2"}})
        untouched = admin.patch(f"/channels/{channel}", json={"timeout_ms": 5000})
        second = admin.patch(
            f"/channels/{channel}",
            json={"prices": {"input": "1", "output": "2", "cached_input": "0.5"}},
        )
    assert {first.status_code, untouched.status_code, second.status_code} == {200}
    assert "price_event_id" not in untouched.json()

    entries = wait_for(
        lambda: (found := _price_entries(stack, channel)) and len(found) == 3 and found,
        what="three price versions in the journal",
    )

    assert [e["type"] for e in entries] == ["ledger.price_table_changed"] * 3
    assert [e["payload"]["version"] for e in entries] == [1, 2, 3]
    assert [e["cause_id"] for e in entries[1:]] == [
        first.json()["price_event_id"],
        second.json()["price_event_id"],
    ]
    # Token-class prices never set stay unset (None): those classes cost plain input/output.
    unset = {"cache_write": None, "cache_write_1h": None, "reasoning": None}
    assert [(e["payload"]["previous"], e["payload"]["prices"]) for e in entries] == [
        (None, {"input": 150_000, "output": 600_000, "cached_input": None, **unset}),
        (
            {"input": 150_000, "output": 600_000, "cached_input": None, **unset},
            {"input": 1_000_000, "output": 2_000_000, "cached_input": None, **unset},
        ),
        (
            {"input": 1_000_000, "output": 2_000_000, "cached_input": None, **unset},
            {"input": 1_000_000, "output": 2_000_000, "cached_input": 500_000, **unset},
        ),
    ]
    assert {e["payload"]["actor"] for e in entries} == {"test-suite"}
    assert {e["payload"]["bucket"] for e in entries} == {"wallet"}
    assert entries[2]["payload"]["audit_id"] == second.json()["audit_id"]
    assert all(e["payload"]["postings"] == [] for e in entries)
    assert all(started <= datetime.fromisoformat(e["occurred_at"]) for e in entries)

    done = _verify(stack, "verify_prices")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   live_digest_equals_replay" in done.stdout
    replayed = io.fetch(
        replay.target_dsn(stack.dsn, "verify_prices"),
        "SELECT version, price_cached_input FROM ledger.price_versions WHERE channel_id = $1"
        " ORDER BY version",
        channel,
    )
    assert [(r["version"], r["price_cached_input"]) for r in replayed] == [
        (1, None),
        (2, None),
        (3, 500_000),
    ]


class UnconfirmingProducer(AIOKafkaProducer):  # type: ignore[misc]
    """A producer whose broker never confirms: every send times out."""

    async def send_and_wait(self, *_args: Any, **_kwargs: Any) -> Any:
        raise KafkaTimeoutError


async def _patch_without_broker(dsn: str, channel: str) -> errors.GatewayError | None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    producer = UnconfirmingProducer()
    try:
        store = RouteTreeStore(pool, producer)
        change = patch_channel(channel, ChannelPatch(prices=Prices(input="9", output="9")))
        try:
            await store.mutate("test-suite", "channel.update", channel, change)
        except errors.GatewayError as exc:
            return exc
        return None
    finally:
        await producer.stop()
        await pool.close()


def test_a_price_change_the_log_does_not_confirm_is_not_written(stack) -> None:
    with admin_client(stack) as admin:
        channel = new_channel(admin, stack, "openai-backup")
        audit_before = admin.get("/audit", params={"subject": channel}).json()["data"]

        refused = asyncio.run(_patch_without_broker(stack.dsn, channel))

        audit_after = admin.get("/audit", params={"subject": channel}).json()["data"]
    assert isinstance(refused, errors.DependencyDownError)
    assert "The channel was not changed" in str(refused)
    assert audit_after == audit_before
    prices = io.fetch(
        stack.dsn, "SELECT price_input, price_output FROM router.channels WHERE id = $1", channel
    )
    assert prices == [{"price_input": 150_000, "price_output": 600_000}]
