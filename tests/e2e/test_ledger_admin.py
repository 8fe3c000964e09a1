"""Finance over HTTP: /admin/v1/ledger accounts, entries, statements (JSON and CSV), past
balances; errors in the OpenAI shape.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, wait_for

pytestmark = pytest.mark.e2e


def _admin(stack: Any) -> httpx.Client:
    return httpx.Client(
        base_url=f"{stack.edge_url}/admin/v1/ledger",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )


def _settled_request(stack: Any, key: str) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {key}"}
    answer = httpx.post(
        f"{stack.edge_url}/v1/chat/completions",
        headers=headers,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
        timeout=30,
    )
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]

    def settled() -> dict[str, Any] | None:
        body = httpx.get(f"{stack.edge_url}/v1/receipts/{request_id}", headers=headers).json()
        return body if body.get("status") == "settled" else None

    receipt: dict[str, Any] = wait_for(settled, what="the settlement")
    return receipt


def test_statement_entries_and_balances_tell_the_same_story(stack, tenant_factory) -> None:
    before_topup = datetime.now(UTC) - timedelta(seconds=1)
    tenant = tenant_factory({"credit": "10"})
    receipt = _settled_request(stack, tenant.api_key)
    charged = receipt["charged_micro"]
    credit = f"{tenant.account_id}/credit"

    with _admin(stack) as admin:
        account = admin.get(f"/accounts/{tenant.account_id}").json()
        balances = {b["account"]: b["amount_micro"] for b in account["balances"]}
        entries = admin.get(f"/accounts/{tenant.account_id}/entries", params={"limit": 2}).json()
        older = admin.get(
            f"/accounts/{tenant.account_id}/entries", params={"before": entries["next_before"]}
        ).json()
        statement = admin.get(
            f"/accounts/{tenant.account_id}/statement",
            params={"from": before_topup.isoformat()},
        ).json()
        exported = admin.get(
            f"/accounts/{tenant.account_id}/statement",
            params={"from": before_topup.isoformat(), "format": "csv"},
        )
        past = admin.get(
            f"/accounts/{tenant.account_id}/balance", params={"at": before_topup.isoformat()}
        ).json()

    assert balances[credit] == 10_000_000 - charged
    assert balances.get(f"{credit}/held", 0) == 0
    types = [e["type"] for e in entries["entries"] + older["entries"]]
    # The demo model's pool backup is paid from wallet, which this tenant lacks: that refused
    # hold is journaled (no postings) beside the credit hold. The served attempt's upstream cost
    # (the demo channel has a cost price) is journaled under the account too, moving only the
    # operator's accounts.
    assert types == [
        "ledger.hold_settled",
        "ledger.upstream_cost_booked",
        "ledger.hold_rejected",
        "ledger.hold_placed",
        "ledger.topped_up",
    ]
    assert statement["opening"] == []
    closing = {c["account"]: c["amount_micro"] for c in statement["closing"]}
    assert closing[credit] == balances[credit]
    credit_lines = [line for line in statement["lines"] if line["account"] == credit]
    assert credit_lines[-1]["balance_micro"] == balances[credit]
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == len(statement["lines"])
    assert sum(int(r["amount_micro"]) for r in rows if r["account"] == credit) == balances[credit]
    assert past["balances"] == []


def test_ledger_admin_errors_use_the_openai_shape(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "1"})
    with _admin(stack) as admin:
        bad_time = admin.get(
            f"/accounts/{tenant.account_id}/statement", params={"from": "last tuesday"}
        )
        unknown = admin.get("/accounts/no-such-account-xyz")
        bad_limit = admin.get(f"/accounts/{tenant.account_id}/entries", params={"limit": 0})
    anonymous = httpx.get(f"{stack.edge_url}/admin/v1/ledger/accounts/{tenant.account_id}")

    assert bad_time.status_code == 400
    assert bad_time.json()["error"]["param"] == "from"
    assert bad_time.json()["error"]["type"] == "invalid_request_error"
    assert unknown.status_code == 404
    assert unknown.json()["error"]["param"] == "account_id"
    assert bad_limit.status_code == 400
    assert anonymous.status_code == 401
    assert set(anonymous.json()["error"]) == {"message", "type", "param", "code"}
