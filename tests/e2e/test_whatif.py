"""What-if routing on the real stack: requests served through the edge, then priced under a policy
that moves them to another channel, over the admin API, the CLI and the operator's page; the
difference is the hand-computed one and nothing live changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

from tests.conftest import ADMIN_TOKEN, wait_for
from tests.e2e.route_kit import admin_client, chat, circuit_state, new_channel, new_model
from tests.e2e.route_kit import settled_receipt as any_receipt
from tests.e2e.ui_kit import csrf_token, login_operator, ui_client

if TYPE_CHECKING:
    from pathlib import Path

    from tollway.devstack.stack import Stack

pytestmark = pytest.mark.e2e

# openai-direct (where gpt-4o-mini is served) and openai-pool, micro-units per 1M tokens.
DIRECT = (150_000, 600_000)
POOL = (1_000_000, 4_000_000)
POOL_COST = (500_000, 2_000_000)  # the policy's cost price of openai-pool, CNY
DIRECT_COST = (120_000, 480_000)  # the seeded cost price of openai-direct, USD


def _ceil_per_million(tokens_in: int, tokens_out: int, price: tuple[int, int]) -> int:
    """Hand-computed: the exact product, rounded up once to a micro-unit."""
    exact = tokens_in * price[0] + tokens_out * price[1]
    return (exact + 999_999) // 1_000_000


def _admin() -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN_TOKEN}"}


def _receipt(stack: Stack, key: str, request_id: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{stack.edge_url}/v1/receipts/{request_id}", headers={"authorization": f"Bearer {key}"}
    )
    body: dict[str, Any] = response.json() if response.status_code == 200 else {}
    return body if body.get("status") == "settled" else None


def _live_state(stack: Stack, key: str, account_id: str, request_ids: list[str]) -> Any:
    """Balances, receipts and ledger accounts as a tenant and an operator see them."""
    auth = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=stack.edge_url, timeout=10) as client:
        return (
            client.get("/v1/balance", headers=auth).json(),
            [client.get(f"/v1/receipts/{r}", headers=auth).json() for r in request_ids],
            client.get("/v1/receipts", headers=auth).json(),
            client.get(f"/admin/v1/ledger/accounts/{account_id}", headers=_admin()).json(),
            client.get("/admin/v1/route-tree", headers=_admin()).json(),
        )


@pytest.fixture(scope="module")
def served(stack: Stack, tenant_factory_module: Any) -> dict[str, Any]:
    """Three gpt-4o-mini requests served (openai-direct) and settled, with their tokens."""
    tenant = tenant_factory_module({"credit": "10", "wallet": "10"})
    began = datetime.now(UTC) - timedelta(seconds=1)
    client = openai.OpenAI(base_url=f"{stack.edge_url}/v1", api_key=tenant.api_key, max_retries=0)
    request_ids = []
    for n in range(3):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"what-if number {n}"}]
        )
        request_ids.append(raw.headers["x-request-id"])
    receipts = [
        wait_for(lambda r=r: _receipt(stack, tenant.api_key, r), what="receipt settled")
        for r in request_ids
    ]
    tokens = []
    for receipt in receipts:
        [attempt] = receipt["attempts"]
        assert attempt["channel"] == "openai-direct"
        tokens.append((attempt["usage"]["input_tokens"], attempt["usage"]["output_tokens"]))
    return {
        "tenant": tenant,
        "key_id": receipts[0]["key_id"],
        "project_id": receipts[0]["project_id"],
        "request_ids": request_ids,
        "tokens": tokens,
        "from": began.isoformat(),
        "to": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
    }


def _policy(key_id: str) -> dict[str, Any]:
    return {
        "rules": [{"model": "gpt-4o-mini", "key": key_id, "channel": "openai-pool"}],
        "prices": {"openai-pool": {"cost": {"currency": "CNY", "input": "0.5", "output": "2"}}},
        "units": {"wallet": "CNY"},
    }


def _expected(tokens: list[tuple[int, int]]) -> dict[str, int]:
    direct = sum(_ceil_per_million(i, o, DIRECT) for i, o in tokens)
    pool = sum(_ceil_per_million(i, o, POOL) for i, o in tokens)
    cost = sum(_ceil_per_million(i, o, POOL_COST) for i, o in tokens)
    direct_cost = sum(_ceil_per_million(i, o, DIRECT_COST) for i, o in tokens)
    return {"direct": direct, "pool": pool, "cost": cost, "direct_cost": direct_cost}


def _row(report: dict[str, Any], dim: str, key: str) -> dict[str, Any]:
    [row] = [r for r in report["groups"][dim] if r["key"] == key]
    return row


def test_moving_a_keys_requests_to_another_channel_gives_the_hand_computed_difference(
    stack: Stack, served: dict[str, Any]
) -> None:
    tenant = served["tenant"]
    before = _live_state(stack, tenant.api_key, tenant.account_id, served["request_ids"])
    body = {"from": served["from"], "to": served["to"], "policy": _policy(served["key_id"])}
    response = httpx.post(
        f"{stack.edge_url}/admin/v1/whatif", json=body, headers=_admin(), timeout=120
    )
    assert response.status_code == 200, response.text
    report = response.json()
    want = _expected(served["tokens"])

    row = _row(report, "key", served["key_id"])
    assert row["current"]["requests"] == row["alternative"]["requests"] == 3
    assert row["current"]["charge_micro"] == {"credit": want["direct"]}
    assert row["current"]["cost_micro"] == {"USD": want["direct_cost"]}
    # Credit's unit is not USD (nor given in the policy): no margin is made up across units.
    assert row["current"]["margin_micro"] == {}
    assert row["current"]["margin_unknown"] == 3
    assert row["alternative"]["charge_micro"] == {"wallet": want["pool"]}
    assert row["alternative"]["cost_micro"] == {"CNY": want["cost"]}
    assert row["alternative"]["margin_micro"] == {"CNY": want["pool"] - want["cost"]}
    assert row["difference"]["charge_micro"] == {"credit": -want["direct"], "wallet": want["pool"]}
    assert row["difference"]["margin_micro"] == {"CNY": want["pool"] - want["cost"]}
    moved_to = _row(report, "channel", "openai-pool")["alternative"]
    assert moved_to["charge_micro"]["wallet"] >= want["pool"]
    assert _row(report, "project", served["project_id"])["alternative"]["requests"] == 3

    csv_response = httpx.post(
        f"{stack.edge_url}/admin/v1/whatif",
        params={"format": "csv"},
        json=body,
        headers=_admin(),
        timeout=120,
    )
    assert csv_response.status_code == 200, csv_response.text
    assert csv_response.headers["content-type"].startswith("text/csv")
    line = f"key,{served['key_id']},charge_micro,wallet,0,{want['pool']},{want['pool']}"
    assert line in csv_response.text.splitlines()

    assert _live_state(stack, tenant.api_key, tenant.account_id, served["request_ids"]) == before


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"policy": {"rules": [{"key": "k"}]}}, "policy.rules[0]"),
        (
            {"policy": {"rules": [{"channel": "c", "route_type": "cheap"}]}},
            "policy.rules[0].route_type",
        ),
        (
            {"policy": {"prices": {"c": {"sell": {"input": "1.0000001", "output": "1"}}}}},
            "policy.prices.c.sell",
        ),
        ({"from": "yesterday"}, "from"),
        ({"to": "2000-01-01T00:00:00Z"}, "to"),
        ({"to": "9999-12-31T23:59:59Z"}, "to"),
        ({"from": "0001-01-01T00:00:00Z"}, "from"),
    ],
)
def test_a_policy_or_period_it_cannot_use_is_a_400_naming_the_field(
    stack: Stack, served: dict[str, Any], change: dict[str, Any], param: str
) -> None:
    body = {"from": served["from"], "to": served["to"], "policy": _policy("k")} | change
    response = httpx.post(f"{stack.edge_url}/admin/v1/whatif", json=body, headers=_admin())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def test_the_cli_prints_the_same_report_and_exits_2_on_a_bad_policy(
    stack: Stack, served: dict[str, Any], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(_policy(served["key_id"])), encoding="utf-8")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap}
    command = [sys.executable, "-m", "tollway.cli", "whatif", "--from", served["from"]]
    command += ["--to", served["to"], "--format", "json"]
    done = subprocess.run(
        [*command, "--policy", str(policy)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    row = _row(json.loads(done.stdout), "key", served["key_id"])
    assert row["alternative"]["charge_micro"] == {"wallet": _expected(served["tokens"])["pool"]}
    assert "requests in" in done.stderr  # the closing rate line

    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nmodel = "gpt-4o-mini"\nroute_type = "cheapest"\n', encoding="utf-8")
    refused = subprocess.run(
        [*command, "--policy", str(bad)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "rules[0].route_type" in refused.stderr
    assert "'direct' or 'pool'" in refused.stderr


def test_the_operator_page_shows_the_table_and_the_policys_error(
    stack: Stack, served: dict[str, Any]
) -> None:
    with ui_client(stack) as client:
        login_operator(client)
        token = csrf_token(client, "/ui/admin/whatif")
        fields = {"_csrf_token": token, "from": served["from"], "to": served["to"]}
        shown = client.post(
            "/ui/admin/whatif", data={**fields, "policy": json.dumps(_policy(served["key_id"]))}
        )
        assert shown.status_code == 200, shown.text[:500]
        assert 'id="whatif-key"' in shown.text
        assert served["key_id"] in shown.text
        pool = _expected(served["tokens"])["pool"]
        assert f"{pool // 1_000_000}.{pool % 1_000_000:06d}" in shown.text

        refused = client.post(
            "/ui/admin/whatif", data={**fields, "policy": '{"rules": [{"model": "m"}]}'}
        )
        assert refused.status_code == 400
        assert 'id="whatif-error"' in refused.text
        assert "rules[0]" in refused.text


def test_requests_whose_alternative_circuit_was_open_are_counted_apart(
    stack: Stack, tenant_factory: Any, upstream: httpx.Client
) -> None:
    tenant = tenant_factory({"credit": "20"})
    with admin_client(stack) as admin:
        failing = new_channel(admin, stack, "openai-backup")
        backup = new_channel(admin, stack, "openai-direct")
        model = new_model(
            admin,
            [
                {"channel_id": failing, "upstream_model": "u", "tier": 0},
                {"channel_id": backup, "upstream_model": "u", "tier": 1},
            ],
        )
        upstream.post(
            "/_control/faults",
            json={"channel": "openai-backup", "kind": "status", "status": 503, "count": 10_000},
        )
        wait_for(
            lambda: (
                chat(stack, tenant.api_key, model)[0] == 200
                and circuit_state(admin, failing) == "open"
            ),
            what="the failing channel's circuit to open",
        )
        began = datetime.now(UTC)
        # Served by the backup, the open channel skipped; and one request of another model.
        ids = [chat(stack, tenant.api_key, model)[2] for _ in range(2)]
        ids.append(chat(stack, tenant.api_key, "gpt-4o-mini")[2])
        ended = datetime.now(UTC)
        upstream.delete("/_control/faults")
    receipts = [
        wait_for(lambda r=r: any_receipt(stack, tenant.api_key, r), what="receipt") for r in ids
    ]
    assert [r["skipped"][0]["reason"] for r in receipts[:2]] == ["circuit_open"] * 2
    key_id = receipts[0]["key_id"]
    policy = {
        "rules": [
            {"model": model, "channel": failing},
            {"model": "gpt-4o-mini", "key": key_id, "channel": failing},
        ]
    }
    body = {"from": began.isoformat(), "to": ended.isoformat(), "policy": policy}
    response = httpx.post(
        f"{stack.edge_url}/admin/v1/whatif", json=body, headers=_admin(), timeout=120
    )
    assert response.status_code == 200, response.text
    report = response.json()
    failed = report["apart"]["alternative_failed"]
    # Two by their own skipped candidates, the third by what the log says of the circuit then.
    assert failed["reasons"] == {f"{failing}: circuit_open": 3}
    assert not [r for r in report["groups"]["key"] if r["key"] == key_id]
    charged = sum(r["charged_micro"] for r in receipts)
    assert sum(failed["current"]["charge_micro"].values()) >= charged
