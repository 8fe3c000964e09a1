"""Replay is deterministic (invariant 5): after a mixed workload on the real stack, rebuilding
every ledger projection from the retained topics gives the live state's digest, byte for byte;
`tollway ledger verify` says so, and a digest that differs is caught.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest

from tests.conftest import wait_for
from tests.integration import ledger_io as io
from tollway.ledger import finance_store, replay

if TYPE_CHECKING:
    from collections.abc import Callable

    from tollway.devstack.seed import Tenant

pytestmark = pytest.mark.integration

TERMINAL = {"settled", "released", "rejected", "expired"}


def _chat(stack: Any, tenant: Tenant, model: str, max_tokens: int = 50) -> str:
    response = httpx.post(
        f"{stack.edge_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {tenant.api_key}"},
        json={
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens,
        },
        timeout=30,
    )
    return response.headers["x-request-id"]


def _all_terminal(stack: Any, request_ids: list[str]) -> bool:
    rows = io.fetch(
        stack.dsn,
        "SELECT request_id, status FROM ledger.receipts WHERE request_id = ANY($1::text[])",
        request_ids,
    )
    return len(rows) == len(request_ids) and all(r["status"] in TERMINAL for r in rows)


def _mixed_workload(stack: Any, tenant_factory: Callable[..., Tenant], upstream: Any) -> None:
    rich = tenant_factory({"credit": "20", "wallet": "50"})
    poor = tenant_factory({"credit": "0.0001"})
    other = tenant_factory({"credit": "3"})
    upstream.post(
        "/_control/faults", json={"channel": "openai-direct", "kind": "status", "count": 3}
    )
    upstream.post("/_control/faults", json={"channel": "anthropic-direct", "kind": "rate_limit"})
    jobs = [(rich, "gpt-4o-mini")] * 6 + [(rich, "claude-3-5-haiku")] * 3
    jobs += [(poor, "gpt-4o-mini")] * 2 + [(other, "gpt-4o-mini")] * 5
    with ThreadPoolExecutor(max_workers=6) as pool:
        request_ids = list(pool.map(lambda job: _chat(stack, *job), jobs))
    wait_for(lambda: _all_terminal(stack, request_ids), timeout=60, what="every receipt to close")


def _verify_cli(stack: Any) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": stack.dsn,
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
    }
    return subprocess.run(
        [sys.executable, "-m", "tollway.cli", "ledger", "verify", "--database", "verify_test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_verify_finds_the_live_digest_equal_to_a_replay_after_a_mixed_workload(
    stack, tenant_factory, upstream
) -> None:
    _mixed_workload(stack, tenant_factory, upstream)

    done = _verify_cli(stack)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   live_digest_equals_replay" in done.stdout
    assert "ok   zero_sum_per_unit" in done.stdout
    assert "ok   holds_end" in done.stdout
    assert "events/s" not in done.stdout  # progress goes to stderr
    assert "ev/s" in done.stderr


async def _digests(dsn: str) -> dict[str, tuple[int, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        return await finance_store.table_digests(conn)
    finally:
        await conn.close()


def test_a_replay_rebuilds_every_projection_and_a_changed_row_changes_the_digest(stack) -> None:
    result = asyncio.run(replay.replay(stack.dsn, stack.bootstrap, "replay_test"))
    target = replay.target_dsn(stack.dsn, "replay_test")

    assert result.events > 0
    assert result.diverged == 0
    assert result.tables["journal"][0] > 0
    assert result.tables["receipts"][0] > 0
    assert asyncio.run(_digests(target)) == result.tables
    io.fetch(
        target,
        "UPDATE ledger.receipts SET status = 'x' WHERE request_id IN"
        " (SELECT request_id FROM ledger.receipts LIMIT 1)",
    )
    tampered = asyncio.run(_digests(target))
    assert tampered["receipts"] != result.tables["receipts"]
    assert finance_store.combine(tampered) != result.digest
