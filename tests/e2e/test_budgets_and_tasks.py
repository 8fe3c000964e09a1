"""Hard limits through the whole stack: task envelopes and budgets under racing calls, a second
hold for a fallback bucket, refusals that name their limit, thresholds journaled once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, upstream_calls, wait_for
from tests.flat_routes import DIRECT_MICRO, FALLBACK_MODEL, MODEL, POOL_MICRO, call, flat_model
from tollway import cli

pytestmark = pytest.mark.e2e
__all__ = ["flat_model"]

CONCURRENT = 200
COVERED = 50


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _admin(stack: Any) -> httpx.Client:
    return httpx.Client(
        base_url=f"{stack.edge_url}/admin/v1", headers=_auth(ADMIN_TOKEN), timeout=10
    )


def _open_task(stack: Any, key: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{stack.edge_url}/v1/tasks", headers=_auth(key), json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def _task(stack: Any, key: str, task_id: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.edge_url}/v1/tasks/{task_id}", headers=_auth(key))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _set_budget(stack: Any, **body: Any) -> str:
    with _admin(stack) as admin:
        response = admin.post("/budgets", json=body)
    assert response.status_code == 202, response.text
    budget_id: str = response.json()["id"]
    with _admin(stack) as admin:
        wait_for(
            lambda: any(
                b["id"] == budget_id
                for b in admin.get("/budgets", params={"account_id": body["account_id"]}).json()[
                    "budgets"
                ]
            ),
            what="the ledger to apply the budget",
        )
    return budget_id


def _receipt(stack: Any, key: str, request_id: str) -> dict[str, Any] | None:
    response = httpx.get(f"{stack.edge_url}/v1/receipts/{request_id}", headers=_auth(key))
    if response.status_code != 200:
        return None
    body: dict[str, Any] = response.json()
    return body if body["status"] in {"settled", "released", "rejected"} else None


def _balances(stack: Any, key: str) -> dict[str, dict[str, int]]:
    response = httpx.get(f"{stack.edge_url}/v1/balance", headers=_auth(key))
    return {b["bucket"]: b for b in response.json()["buckets"]}


async def _race(stack: Any, key: str, task: str | None) -> list[httpx.Response]:
    headers = _auth(key) | ({"x-tollway-task": task} if task else {})
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    limits = httpx.Limits(max_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=stack.edge_url, timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post("/v1/chat/completions", headers=headers, json=body)
                for _ in range(CONCURRENT)
            )
        )


async def _charged(dsn: str, request_ids: list[str]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            "SELECT COALESCE(sum((body->'payload'->>'charged_micro')::bigint), 0)"
            " FROM ledger.journal WHERE type = 'ledger.hold_settled'"
            " AND body->'payload'->>'request_id' = ANY($1::text[])",
            request_ids,
        )
        return int(value)
    finally:
        await conn.close()


def _settle_all(stack: Any, key: str, responses: list[httpx.Response]) -> list[dict[str, Any]]:
    ids = [r.headers["x-request-id"] for r in responses]
    return [
        wait_for(lambda rid=rid: _receipt(stack, key, rid), timeout=120, what=f"receipt {rid}")
        for rid in ids
    ]


def _outcomes(responses: list[httpx.Response], receipts: list[dict[str, Any]]) -> dict[str, int]:
    """The ledger's decisions, checked against what each client saw.

    A loaded machine may let the edge give up waiting (504) on a call the ledger decided; the
    receipts are the truth, and every answer a client did get agrees with its receipt.
    """
    seen = {"settled": 200, "rejected": 402}
    for response, receipt in zip(responses, receipts, strict=True):
        assert response.status_code in {seen[receipt["status"]], 504}, response.text
    counts: dict[str, int] = {}
    for receipt in receipts:
        counts[receipt["status"]] = counts.get(receipt["status"], 0) + 1
    return counts


def test_task_envelope_is_exhausted_exactly_under_200_concurrent_calls(
    stack, tenant_factory, upstream, flat_model
) -> None:
    tenant = tenant_factory({"credit": "10"})
    envelope = COVERED * DIRECT_MICRO
    task = _open_task(
        stack,
        tenant.api_key,
        name="race",
        budgets=[{"bucket": "credit", "amount": f"0.{envelope:06d}"}],
    )
    before = upstream_calls(upstream)

    responses = asyncio.run(_race(stack, tenant.api_key, task["id"]))

    receipts = _settle_all(stack, tenant.api_key, responses)
    assert _outcomes(responses, receipts) == {"settled": COVERED, "rejected": CONCURRENT - COVERED}
    assert {
        (r["limit"], task["id"] in r["error"]) for r in receipts if r["status"] == "rejected"
    } == {(f"task:{task['id']}", True)}
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 402} <= {
        "task_budget_exhausted"
    }
    receipt = _task(stack, tenant.api_key, task["id"])
    charged = asyncio.run(_charged(stack.dsn, [r["request_id"] for r in receipts]))
    assert receipt["cost"]["credit"]["charged_micro"] == charged == envelope
    assert receipt["calls"] == CONCURRENT
    assert receipt["calls_by_status"] == {"settled": COVERED, "rejected": CONCURRENT - COVERED}
    [budget] = receipt["budgets"]
    assert (budget["spent_micro"], budget["held_micro"]) == (envelope, 0)
    assert receipt["stopped_by"] is not None
    assert task["id"] in receipt["stopped_by"]
    assert upstream_calls(upstream) - before == COVERED
    assert _balances(stack, tenant.api_key)["credit"]["available_micro"] == 10_000_000 - envelope


@pytest.mark.parametrize("scope", ["key", "project"])
def test_key_and_project_budgets_hold_under_200_concurrent_calls(
    stack, tenant_factory, flat_model, scope
) -> None:
    tenant = tenant_factory({"credit": "10"})
    ids = _key_and_project(stack, tenant)
    amount = COVERED * DIRECT_MICRO
    _set_budget(
        stack,
        account_id=tenant.account_id,
        name=f"{scope}-cap",
        scope=scope,
        scope_id=ids[scope],
        unit="credit",
        bucket="credit",
        amount=f"0.{amount:06d}",
    )

    responses = asyncio.run(_race(stack, tenant.api_key, None))

    receipts = _settle_all(stack, tenant.api_key, responses)
    assert _outcomes(responses, receipts) == {"settled": COVERED, "rejected": CONCURRENT - COVERED}
    assert asyncio.run(_charged(stack.dsn, [r["request_id"] for r in receipts])) == amount
    assert {r["limit"] for r in receipts if r["status"] == "rejected"} == {f"budget:{scope}-cap"}
    assert all(f"{scope}-cap" in r["error"] for r in receipts if r["status"] == "rejected")
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 402} <= {
        "budget_exceeded"
    }


def _key_and_project(stack: Any, tenant: Any) -> dict[str, str]:
    async def fetch() -> dict[str, str]:
        conn = await asyncpg.connect(stack.dsn)
        try:
            row = await conn.fetchrow(
                "SELECT id, project_id FROM edge.api_keys WHERE account_id = $1", tenant.account_id
            )
            return {"key": row["id"], "project": row["project_id"]}
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_direct_to_pool_fallback_places_a_second_hold_and_charges_the_wallet(
    stack, tenant_factory, upstream, flat_model
) -> None:
    tenant = tenant_factory({"credit": "1", "wallet": "1"})
    upstream.post(
        "/_control/faults",
        json={"channel": "openai-direct", "kind": "status", "status": 500, "count": 2},
    )

    response = call(stack.edge_url, tenant.api_key, model=FALLBACK_MODEL)

    assert response.status_code == 200, response.text
    rid = response.headers["x-request-id"]
    receipt = wait_for(lambda: _receipt(stack, tenant.api_key, rid), what="the receipt")
    assert [a["channel"] for a in receipt["attempts"]] == ["fb-direct", "fb-direct", "fb-pool"]
    assert receipt["fallback"] is True
    assert receipt["bucket"] == "wallet"
    assert receipt["charged_micro"] == POOL_MICRO
    assert receipt["hold"]["status"] == "released"
    [extra] = receipt["extra_holds"]
    assert (extra["bucket"], extra["status"], extra["held_micro"]) == ("wallet", "settled", 3)
    balances = _balances(stack, tenant.api_key)
    assert balances["credit"]["available_micro"] == 1_000_000
    assert balances["wallet"]["available_micro"] == 1_000_000 - POOL_MICRO
    assert balances["credit"]["held_micro"] == balances["wallet"]["held_micro"] == 0


def test_a_refused_fallback_hold_is_on_the_receipt_and_the_client_gets_402(
    stack, tenant_factory, upstream, flat_model
) -> None:
    tenant = tenant_factory({"credit": "1", "wallet": "1"})
    _set_budget(
        stack,
        account_id=tenant.account_id,
        name="no-pool",
        scope="route_type",
        scope_id="pool",
        unit="CNY",
        bucket="wallet",
        amount="0.000001",
    )
    upstream.post(
        "/_control/faults",
        json={"channel": "openai-direct", "kind": "status", "status": 500, "count": 2},
    )
    before = upstream_calls(upstream)

    response = call(stack.edge_url, tenant.api_key, model=FALLBACK_MODEL)

    assert response.status_code == 402, response.text
    error = response.json()["error"]
    assert error["code"] == "fallback_refused"
    assert "budget:no-pool" in error["message"]
    rid = response.headers["x-request-id"]
    receipt = wait_for(lambda: _receipt(stack, tenant.api_key, rid), what="the receipt")
    [refused] = receipt["refused"]
    assert (refused["bucket"], refused["limit"]) == ("wallet", "budget:no-pool")
    assert refused["skipped"] == ["fb-pool"]
    assert receipt["limit"] == "budget:no-pool"
    assert [a["channel"] for a in receipt["attempts"]] == ["fb-direct", "fb-direct"]
    assert upstream_calls(upstream) - before == 2
    assert _balances(stack, tenant.api_key)["wallet"]["available_micro"] == 1_000_000


async def _thresholds(dsn: str, budget_id: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT (body->'payload'->>'percent')::int AS p FROM ledger.journal"
            " WHERE type = 'ledger.budget_threshold_crossed'"
            " AND body->'payload'->>'budget_id' = $1 ORDER BY seq",
            budget_id,
        )
        return [r["p"] for r in rows]
    finally:
        await conn.close()


def test_budget_thresholds_are_journaled_once_each(stack, tenant_factory, flat_model) -> None:
    tenant = tenant_factory({"credit": "1"})
    budget_id = _set_budget(
        stack,
        account_id=tenant.account_id,
        name="soft-day",
        scope="account",
        window="day",
        timezone="Europe/Paris",
        unit="credit",
        amount=f"0.{10 * DIRECT_MICRO:06d}",
        mode="soft",
    )

    for _ in range(12):  # soft: the 11th and 12th calls pass and cross nothing again
        assert call(stack.edge_url, tenant.api_key).status_code == 200

    wait_for(
        lambda: asyncio.run(_thresholds(stack.dsn, budget_id)) == [50, 80, 100],
        what="thresholds 50, 80 and 100",
    )
    wait_for(
        lambda: _balances(stack, tenant.api_key)["credit"]["held_micro"] == 0, what="settlement"
    )
    assert asyncio.run(_thresholds(stack.dsn, budget_id)) == [50, 80, 100]


def test_task_lifecycle_errors_name_the_task(stack, tenant_factory, flat_model) -> None:
    owner = tenant_factory({"credit": "1"})
    other = tenant_factory({"credit": "1"})
    task = _open_task(
        stack, owner.api_key, budgets=[{"bucket": "credit", "amount": "0.5"}], fallback="none"
    )

    unknown = call(stack.edge_url, owner.api_key, task="task_nope")
    foreign = call(stack.edge_url, other.api_key, task=task["id"])
    malformed = call(stack.edge_url, owner.api_key, task="bad id!")
    served = call(stack.edge_url, owner.api_key, task=task["id"])
    peek = httpx.get(f"{stack.edge_url}/v1/tasks/{task['id']}", headers=_auth(other.api_key))
    closing = httpx.post(
        f"{stack.edge_url}/v1/tasks/{task['id']}/close", headers=_auth(owner.api_key)
    )
    after = call(stack.edge_url, owner.api_key, task=task["id"])

    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "task_not_found")
    assert "task_nope" in unknown.json()["error"]["message"]
    assert foreign.status_code == 404
    assert (malformed.status_code, malformed.json()["error"]["param"]) == (400, "X-Tollway-Task")
    assert served.status_code == 200
    assert peek.status_code == 404
    assert closing.status_code == 202
    assert (after.status_code, after.json()["error"]["code"]) == (402, "task_closed")
    assert task["id"] in after.json()["error"]["message"]
    receipt = wait_for(
        lambda: (r := _task(stack, owner.api_key, task["id"]))["calls"] == 2 and r,
        what="the task receipt",
    )
    assert receipt["status"] == "closed"
    assert receipt["cost"]["credit"]["charged_micro"] == DIRECT_MICRO
    assert receipt["budgets"][0]["held_micro"] == 0
    # What stopped it is the owner's own refused call, not another account naming its id.
    assert receipt["stopped_by"] is not None
    assert "is closed" in receipt["stopped_by"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"scope": "route_type", "scope_id": "cheap"}, "scope_id"),
        ({"unit": "tokens", "amount": "1.5"}, "amount"),
        ({"amount": "-1"}, "amount"),
        ({"scope": "key", "scope_id": None}, "scope_id"),
        ({"bucket": "credit", "unit": "CNY"}, "unit"),
    ],
)
def test_invalid_budgets_are_400_naming_the_parameter(stack, tenant_factory, body, param) -> None:
    tenant = tenant_factory({"credit": "1"})
    base = {
        "account_id": tenant.account_id,
        "name": "b",
        "scope": "account",
        "unit": "credit",
        "amount": "1",
    }
    with _admin(stack) as admin:
        response = admin.post("/budgets", json=base | body)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_cli_sets_lists_and_removes_a_budget(stack, tenant_factory, capsys) -> None:
    tenant = tenant_factory({"credit": "1"})
    base = ["budgets", "--base-url", stack.edge_url, "--admin-token", ADMIN_TOKEN]
    define = ["set", "--account", tenant.account_id, "--name", "cli-cap", "--unit", "credit"]

    assert cli.main([*base, *define, "--amount", "0.5", "--window", "day"]) == 0
    budget_id = orjson.loads(capsys.readouterr().out)["id"]

    def listed() -> str:
        assert cli.main([*base, "list", "--account", tenant.account_id]) == 0
        return capsys.readouterr().out

    wait_for(lambda: budget_id in listed(), what="the budget in the list")
    assert cli.main([*base, "rm", budget_id]) == 0
    wait_for(lambda: budget_id not in listed(), what="the budget to be removed")
    assert cli.main([*base, *define, "--amount", "1", "--timezone", "Nowhere/Else"]) == 1
    assert "timezone" in capsys.readouterr().err
