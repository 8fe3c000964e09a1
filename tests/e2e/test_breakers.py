"""Velocity breakers on the real stack: a runaway key is stopped at the edge and the router."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, upstream_calls, wait_for

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "loop"}]}


@dataclass(frozen=True)
class Call:
    started: float
    status: int
    body: dict[str, Any]
    headers: httpx.Headers


def admin(stack) -> httpx.Client:
    return httpx.Client(
        base_url=f"{stack.edge_url}/admin/v1",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )


def key_id_of(stack, account_id: str) -> str:
    async def fetch() -> str:
        conn = await asyncpg.connect(stack.dsn)
        try:
            return str(
                await conn.fetchval(
                    "SELECT id FROM edge.api_keys WHERE account_id = $1", account_id
                )
            )
        finally:
            await conn.close()

    return asyncio.run(fetch())


def limit_applied(stack, scope: str, scope_id: str) -> bool:
    async def fetch() -> bool:
        conn = await asyncpg.connect(stack.dsn)
        try:
            return bool(
                await conn.fetchval(
                    "SELECT 1 FROM limits.velocity_limits WHERE scope = $1 AND scope_id = $2",
                    scope,
                    scope_id,
                )
            )
        finally:
            await conn.close()

    return asyncio.run(fetch())


def set_limit(stack, account_id: str, scope: str, scope_id: str, **values: Any) -> None:
    with admin(stack) as client:
        response = client.post(
            "/velocity-limits",
            json={"account_id": account_id, "scope": scope, "scope_id": scope_id, **values},
        )
    assert response.status_code == 202, response.text
    wait_for(lambda: limit_applied(stack, scope, scope_id), what="the limits service to apply it")


def call(stack, key: str) -> Call:
    started = time.time()
    response = httpx.post(
        f"{stack.edge_url}{CHAT}",
        json=BODY,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    return Call(started, response.status_code, response.json(), response.headers)


def breaker_record(stack, scope: str, scope_id: str) -> dict[str, Any] | None:
    with admin(stack) as client:
        rows = client.get("/breakers").json()["breakers"]
    return next((r for r in rows if r["key"] == f"{scope}:{scope_id}"), None)


def open_breaker(stack, scope: str, scope_id: str) -> dict[str, Any] | None:
    record = breaker_record(stack, scope, scope_id)
    return record if record is not None and record["open"] else None


def run_loop(stack, key: str, workers: int = 4, refusals_each: int = 5) -> list[Call]:
    """Each worker calls in a tight loop until it has been refused ``refusals_each`` times."""
    calls: list[Call] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 60

    def worker() -> None:
        refused = 0
        while refused < refusals_each and time.monotonic() < deadline:
            result = call(stack, key)
            refused += result.status == 429
            with lock:
                calls.append(result)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return calls


def trip_a_key(stack, tenant_factory, **limits: Any) -> tuple[Any, str]:
    tenant = tenant_factory({"credit": "50"})
    key_id = key_id_of(stack, tenant.account_id)
    set_limit(stack, tenant.account_id, "key", key_id, tokens_per_minute=300, **limits)
    for _ in range(60):
        if call(stack, tenant.api_key).status == 429:
            break
    # Wait for the trip's record, not for it to be open still: a short cool-down may end first.
    wait_for(lambda: breaker_record(stack, "key", key_id), what="the breaker to trip")
    return tenant, key_id


def test_runaway_loop_is_stopped_within_a_second_and_reaches_no_upstream(
    stack, tenant_factory, upstream
) -> None:
    tenant = tenant_factory({"credit": "50"})
    key_id = key_id_of(stack, tenant.account_id)
    set_limit(stack, tenant.account_id, "key", key_id, tokens_per_minute=600, cooldown_seconds=600)
    before = upstream_calls(upstream)

    calls = run_loop(stack, tenant.api_key)

    record = wait_for(lambda: open_breaker(stack, "key", key_id), what="the key's breaker")
    crossed = datetime.fromisoformat(record["crossed_at"]).timestamp()
    served = [c for c in calls if c.status == 200]
    refused = [c for c in calls if c.status == 429]
    assert record["name"] == "tokens_per_minute"
    assert record["value"] > record["threshold"] == 600
    assert record["example_request_ids"]
    assert served
    assert len(refused) >= 4 * 5
    assert {c.status for c in calls} <= {200, 429}
    # Within one second of the crossing, every edge refuses: nothing started later is served.
    assert all(c.started <= crossed + 1.0 for c in served)
    first_refusal = min(c.started for c in refused)
    assert first_refusal <= crossed + 1.0
    # Beyond the calls already in flight, no upstream call: the upstream saw only served calls.
    assert upstream_calls(upstream) - before == len(served)
    refusal = refused[-1]
    assert refusal.body["error"]["type"] == "rate_limit_error"
    assert refusal.body["error"]["code"] == "breaker_open"
    assert "tokens_per_minute" in refusal.body["error"]["message"]
    assert f"key '{key_id}'" in refusal.body["error"]["message"]
    assert int(refusal.headers["retry-after"]) > 0


def test_breaker_survives_restarts_and_operator_reset_lets_traffic_through(
    stack, tenant_factory
) -> None:
    tenant, key_id = trip_a_key(stack, tenant_factory, cooldown_seconds=600)

    stack.kill("limits")
    stack.kill("edge")
    stack.start_services(("limits", "edge"))

    assert call(stack, tenant.api_key).status == 429
    with admin(stack) as client:
        response = client.post("/breakers/reset", json={"scope": "key", "scope_id": key_id})
        assert response.status_code == 200, response.text
        again = client.post("/breakers/reset", json={"scope": "key", "scope_id": key_id})
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "breaker_not_found"
    record = breaker_record(stack, "key", key_id)
    assert record is not None
    assert record["type"] == "breaker.reset"
    assert record["reason"] == "operator"
    assert call(stack, tenant.api_key).status == 200


def test_breaker_closes_by_itself_after_its_cool_down(stack, tenant_factory) -> None:
    tenant, key_id = trip_a_key(stack, tenant_factory, cooldown_seconds=2)

    record = wait_for(
        lambda: (r := breaker_record(stack, "key", key_id)) and r["type"] == "breaker.reset" and r,
        what="the cool-down reset record",
    )

    assert record["reason"] == "cooldown"
    assert call(stack, tenant.api_key).status == 200


def test_operator_reset_of_an_unknown_breaker_is_a_clear_404(stack) -> None:
    with admin(stack) as client:
        response = client.post("/breakers/reset", json={"scope": "key", "scope_id": "key_nope"})
        bad = client.post("/breakers/reset", json={"scope": "galaxy", "scope_id": "x"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "breaker_not_found"
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"


def test_velocity_limits_refuse_bad_input_in_the_openai_shape(stack) -> None:
    with admin(stack) as client:
        account = client.post(
            "/velocity-limits",
            json={"account_id": "a", "scope": "account", "scope_id": "a", "tokens_per_minute": 5},
        )
        negative = client.post(
            "/velocity-limits",
            json={"account_id": "a", "scope": "key", "scope_id": "k", "tokens_per_minute": -5},
        )
    assert account.status_code == 400
    assert account.json()["error"]["param"] == "scope"
    assert negative.status_code == 400
    assert negative.json()["error"]["type"] == "invalid_request_error"
