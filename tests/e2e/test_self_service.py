"""Self-service reads: receipts listed with filters and keyset pages, usage grouped, and each
account seeing only its own data (another account's ids are not found).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.test_openai_sdk import client, settled_receipt

pytestmark = pytest.mark.e2e


def _get(stack: Any, api_key: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{stack.edge_url}{path}",
        params=params,
        headers={"authorization": f"Bearer {api_key}"},
        timeout=10,
    )


def _call(stack: Any, key: str, model: str, task: str | None = None) -> dict[str, Any]:
    headers = {"x-tollway-task": task} if task else {}
    raw = client(stack, key).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], extra_headers=headers
    )
    return settled_receipt(stack, key, raw.headers["x-request-id"])


def _open_task(stack: Any, key: str) -> str:
    response = httpx.post(
        f"{stack.edge_url}/v1/tasks",
        headers={"authorization": f"Bearer {key}"},
        json={"budgets": [{"bucket": "credit", "amount": "5"}]},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    task_id: str = response.json()["id"]
    return task_id


@pytest.fixture(scope="module")
def served(stack, tenant_factory_module) -> dict[str, Any]:
    tenant = tenant_factory_module({"credit": "10"})
    task = _open_task(stack, tenant.api_key)
    receipts = [
        _call(stack, tenant.api_key, "gpt-4o-mini", task=task),
        _call(stack, tenant.api_key, "gpt-4o-mini"),
        _call(stack, tenant.api_key, "claude-3-5-haiku", task=task),
    ]
    return {"tenant": tenant, "receipts": receipts, "task": task}


def test_receipts_are_listed_newest_first_in_keyset_pages(stack, served) -> None:
    key = served["tenant"].api_key
    ids = [r["request_id"] for r in served["receipts"]]

    first = _get(stack, key, "/v1/receipts", limit=2).json()
    second = _get(stack, key, "/v1/receipts", limit=2, cursor=first["next_cursor"]).json()

    listed = [r["request_id"] for r in first["data"] + second["data"]]
    assert listed == list(reversed(ids))
    assert second["next_cursor"] is None


def test_receipts_filter_by_model_task_key_and_project(stack, served) -> None:
    key = served["tenant"].api_key
    sample = served["receipts"][0]

    by_model = _get(stack, key, "/v1/receipts", model="claude-3-5-haiku").json()["data"]
    by_task = _get(stack, key, "/v1/receipts", task=served["task"]).json()["data"]
    by_key = _get(stack, key, "/v1/receipts", key=sample["key_id"]).json()["data"]
    by_project = _get(stack, key, "/v1/receipts", project=sample["project_id"]).json()["data"]
    until_first = _get(stack, key, "/v1/receipts", until=sample["created_at"]).json()["data"]

    assert [r["requested_model"] for r in by_model] == ["claude-3-5-haiku"]
    assert {r["task_id"] for r in by_task} == {served["task"]}
    assert len(by_task) == 2
    assert len(by_key) == len(by_project) == 3
    assert until_first == []


def test_usage_is_grouped_and_sums_the_charges(stack, served) -> None:
    key = served["tenant"].api_key
    charged = sum(r["charged_micro"] for r in served["receipts"])

    by_model = _get(stack, key, "/v1/usage", group_by="model").json()["data"]
    by_route = _get(stack, key, "/v1/usage", group_by="route").json()["data"]
    by_day = _get(stack, key, "/v1/usage", group_by="day").json()["data"]

    assert {row["model"]: row["requests"] for row in by_model} == {
        "claude-3-5-haiku": 1,
        "gpt-4o-mini": 2,
    }
    assert sum(row["charged_micro"] for row in by_model) == charged
    assert {row["route"] for row in by_route} == {"direct"}
    assert sum(row["requests"] for row in by_day) == 3
    for group in ("key", "project", "bucket"):
        rows = _get(stack, key, "/v1/usage", group_by=group).json()["data"]
        assert sum(row["charged_micro"] for row in rows) == charged


def test_usage_refuses_an_unknown_grouping(stack, served) -> None:
    response = _get(stack, served["tenant"].api_key, "/v1/usage", group_by="colour")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_another_accounts_ids_are_not_found_on_every_read(
    stack, served, tenant_factory_module
) -> None:
    stranger = tenant_factory_module({"credit": "1"}).api_key
    mine = served["receipts"][0]

    assert _get(stack, stranger, f"/v1/receipts/{mine['request_id']}").status_code == 404
    assert _get(stack, stranger, "/v1/receipts", key=mine["key_id"]).status_code == 404
    assert _get(stack, stranger, "/v1/receipts", project=mine["project_id"]).status_code == 404
    assert _get(stack, stranger, "/v1/receipts").json()["data"] == []
    assert _get(stack, stranger, "/v1/usage").json()["data"] == []
    balance = _get(stack, stranger, "/v1/balance").json()
    assert balance["account_id"] != mine["account_id"]
