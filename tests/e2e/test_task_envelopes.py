"""Task envelopes do what they say: each fallback rule, envelopes that can never be used,
a refusal that says the call's worst case does not fit, and the key's list of tasks.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import wait_for
from tests.e2e.route_kit import admin_client, chat, demo_calls, new_channel, new_model
from tests.flat_routes import DIRECT_MICRO, call, flat_model

pytestmark = pytest.mark.e2e
__all__ = ["flat_model"]

# Demo-upstream channels these tests fail on purpose (fresh gateway channels point at them).
PRIMARY_DEMO, BACKUP_DEMO = "openai-pool-backup", "openai-backup"


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _open_task(stack: Any, key: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{stack.edge_url}/v1/tasks", headers=_auth(key), json=body, timeout=10)


def _receipt(stack: Any, key: str, request_id: str) -> dict[str, Any] | None:
    response = httpx.get(f"{stack.edge_url}/v1/receipts/{request_id}", headers=_auth(key))
    body: dict[str, Any] = response.json()
    return body if response.status_code == 200 and body.get("final_status") else None


def _task_chat(stack: Any, key: str, model: str, task_id: str) -> httpx.Response:
    return httpx.post(
        f"{stack.edge_url}/v1/chat/completions",
        headers={**_auth(key), "x-tollway-task": task_id},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16},
        timeout=30,
    )


@pytest.fixture
def two_direct_tiers(stack: Any, tenant_factory: Any) -> tuple[str, str, str]:
    """A fresh model: a direct primary and a direct backup of the same bucket (credit)."""
    with admin_client(stack) as admin:
        primary = new_channel(admin, stack, PRIMARY_DEMO)
        backup = new_channel(admin, stack, BACKUP_DEMO)
        model = new_model(
            admin,
            [
                {"channel_id": primary, "upstream_model": "u", "tier": 0},
                {"channel_id": backup, "upstream_model": "u", "tier": 1},
            ],
        )
    probe = tenant_factory({"credit": "1"})
    wait_for(lambda: chat(stack, probe.api_key, model)[0] == 200, what="the model to be served")
    return model, primary, backup


@pytest.mark.parametrize(
    ("fallback", "status", "tried"),
    [("none", 502, ["primary"]), ("same_route_type", 200, ["primary", "backup"])],
)
def test_each_fallback_rule_cuts_the_plan_the_router_tries_and_the_receipt_shows(
    stack, tenant_factory, upstream, two_direct_tiers, fallback, status, tried
) -> None:
    model, primary, backup = two_direct_tiers
    names = {"primary": primary, "backup": backup}
    tenant = tenant_factory({"credit": "1"})
    opened = _open_task(
        stack, tenant.api_key, budgets=[{"bucket": "credit", "amount": "0.5"}], fallback=fallback
    )
    assert opened.status_code == 201, opened.text
    upstream.post(
        "/_control/faults",
        json={"channel": PRIMARY_DEMO, "kind": "status", "status": 500, "count": 1000},
    )
    backup_calls = demo_calls(upstream, BACKUP_DEMO)

    response = _task_chat(stack, tenant.api_key, model, opened.json()["id"])

    assert response.status_code == status, response.text
    rid = response.headers["x-request-id"]
    receipt = wait_for(lambda: _receipt(stack, tenant.api_key, rid), what="the receipt")
    assert [p["channel"] for p in receipt["plan"]] == [names[t] for t in tried]
    assert {a["channel"] for a in receipt["attempts"]} == {names[t] for t in tried}
    assert receipt["fallback"] is (len(tried) > 1)
    assert demo_calls(upstream, BACKUP_DEMO) - backup_calls == len(tried) - 1


def test_an_envelope_that_can_never_be_used_is_refused_at_creation(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "1", "wallet": "1"}, allowed_models=["gpt-4o-mini"])

    pool_only = _open_task(
        stack,
        tenant.api_key,
        budgets=[{"bucket": "credit", "amount": "0.5"}],
        route_types=["pool"],
    )
    no_bucket = _open_task(stack, tenant.api_key, budgets=[{"bucket": "gold", "amount": "1"}])

    assert pool_only.status_code == 400, pool_only.text
    error = pool_only.json()["error"]
    assert (error["code"], error["param"]) == ("budget_unreachable", "budgets.0.bucket")
    assert "'credit' budget can never be spent" in error["message"]
    assert "(pool) pay only from wallet" in error["message"]
    assert no_bucket.status_code == 400, no_bucket.text
    assert no_bucket.json()["error"]["code"] == "unknown_bucket"
    listed = httpx.get(f"{stack.edge_url}/v1/tasks", headers=_auth(tenant.api_key)).json()
    assert listed["data"] == []  # nothing half-created


def test_a_call_whose_worst_case_does_not_fit_what_remains_says_so(
    stack, tenant_factory, flat_model
) -> None:
    tenant = tenant_factory({"credit": "1"})
    envelope = DIRECT_MICRO + DIRECT_MICRO // 2  # one call fits, the next only half
    opened = _open_task(
        stack,
        tenant.api_key,
        budgets=[{"bucket": "credit", "amount": f"0.{envelope:06d}"}],
        route_types=["direct"],
    )
    task_id = opened.json()["id"]

    first = call(stack.edge_url, tenant.api_key, task=task_id, model=flat_model)
    second = call(stack.edge_url, tenant.api_key, task=task_id, model=flat_model)

    assert first.status_code == 200, first.text
    assert second.status_code == 402, second.text
    error = second.json()["error"]
    assert error["code"] == "task_budget_insufficient"
    assert "exhausted" not in error["message"]
    assert "worst case does not fit" in error["message"]
    assert f"needs up to {DIRECT_MICRO} micro-credit" in error["message"]
    assert f"{envelope - DIRECT_MICRO} of {envelope} remain" in error["message"]


def test_get_tasks_lists_the_calling_keys_tasks_newest_first(stack, tenant_factory) -> None:
    owner = tenant_factory({"credit": "1"})
    other = tenant_factory({"credit": "1"})
    budgets = [{"bucket": "credit", "amount": "0.1"}]
    first = _open_task(stack, owner.api_key, name="first", budgets=budgets).json()
    second = _open_task(stack, owner.api_key, name="second", budgets=budgets).json()

    mine = httpx.get(f"{stack.edge_url}/v1/tasks", headers=_auth(owner.api_key))
    theirs = httpx.get(f"{stack.edge_url}/v1/tasks", headers=_auth(other.api_key))

    assert mine.status_code == 200, mine.text
    assert [t["id"] for t in mine.json()["data"]] == [second["id"], first["id"]]
    assert [t["name"] for t in mine.json()["data"]] == ["second", "first"]
    assert theirs.json() == {"object": "list", "data": []}
    assert httpx.get(f"{stack.edge_url}/v1/tasks").status_code == 401
