"""A hard limit is never exceeded however many requests race (invariant 3): 200 concurrent
requests through the edge against a credit bucket that covers exactly 50 holds.

The upstream is slowed down so that no hold settles (and gives money back) while the race is
decided; the journal's order then shows exactly 50 holds placed and every later request refused
with 402, and the bucket's running balance never dips below zero.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, wait_for
from tests.integration import ledger_io as io
from tollway.devstack.seed import create_tenant
from tollway.events.pricing import format_micro

pytestmark = pytest.mark.e2e

RACERS = 200
COVERED = 50
BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "race"}],
    "max_tokens": 64,
}


def _hold_size(stack: Any, tenant_factory: Any) -> int:
    probe = tenant_factory({"credit": "5"})
    answer = httpx.post(
        f"{stack.edge_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {probe.api_key}"},
        json=BODY,
        timeout=30,
    )
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    held = wait_for(
        lambda: io.fetchval(
            stack.dsn,
            "SELECT amount FROM ledger.holds WHERE request_id = $1",
            request_id,
        ),
        what="the probe's hold",
    )
    return int(held)


async def _race(stack: Any, key: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=RACERS)
    async with httpx.AsyncClient(base_url=stack.edge_url, timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/v1/chat/completions",
                    headers={"authorization": f"Bearer {key}"},
                    json=BODY,
                )
                for _ in range(RACERS)
            )
        )


def _running_minimum(stack: Any, account: str) -> int:
    rows = io.fetch(
        stack.dsn,
        "SELECT p.amount FROM ledger.postings p JOIN ledger.journal j USING (event_id)"
        " WHERE p.account = $1 ORDER BY j.seq, p.seq",
        account,
    )
    running, lowest = 0, 0
    for row in rows:
        running += row["amount"]
        lowest = min(lowest, running)
    return lowest


def test_200_racing_requests_never_overdraw_a_bucket_that_covers_50(
    stack, tenant_factory, upstream
) -> None:
    held = _hold_size(stack, tenant_factory)
    account = f"race-{uuid.uuid4().hex[:10]}"
    tenant = create_tenant(
        stack.edge_url, ADMIN_TOKEN, account, {"credit": format_micro(COVERED * held)}
    )
    upstream.post("/_control/latency", json={"channel": "openai-direct", "latency_ms": 4000})
    try:
        answers = asyncio.run(_race(stack, tenant.api_key))
    finally:
        upstream.post("/_control/latency", json={"channel": "openai-direct", "latency_ms": 0})

    served = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 402]
    assert len(served) + len(refused) == RACERS, {a.status_code for a in answers}
    assert {a.json()["error"]["code"] for a in refused} == {"insufficient_balance"}
    journal = io.fetch(
        stack.dsn,
        "SELECT type FROM ledger.journal WHERE account_id = $1 ORDER BY seq",
        account,
    )
    types = [r["type"] for r in journal]
    first_return = next(
        (i for i, t in enumerate(types) if t in {"ledger.hold_settled", "ledger.hold_released"}),
        len(types),
    )
    before = types[:first_return]
    assert before.count("ledger.hold_placed") == COVERED
    assert before.count("ledger.hold_rejected") >= 1
    assert len(served) == types.count("ledger.hold_placed")
    assert _running_minimum(stack, f"{account}/credit") >= 0
    wait_for(
        lambda: io.balance(stack.dsn, account, "credit/held") == 0,
        what="every hold to close",
    )
    assert io.balance(stack.dsn, account) >= 0
