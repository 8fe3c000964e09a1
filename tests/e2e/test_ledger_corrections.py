"""Corrections through the admin API: a refund references its charge and can never exceed it
(cumulatively); keys make both commands idempotent; adjustments need a reason.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, wait_for
from tests.e2e.test_ledger_admin import _settled_request
from tests.integration import ledger_io as io

pytestmark = pytest.mark.e2e


def _post(stack: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{stack.edge_url}/admin/v1/ledger{path}",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        json=body,
        timeout=10,
    )


def _journal(stack: Any, account_id: str, event_type: str) -> list[dict[str, Any]]:
    rows = io.fetch(
        stack.dsn,
        "SELECT event_id, body -> 'payload' AS payload FROM ledger.journal"
        " WHERE account_id = $1 AND type = $2 ORDER BY seq",
        account_id,
        event_type,
    )
    return [{**r, "payload": orjson.loads(r["payload"])} for r in rows]


def test_refunds_of_a_charge_never_add_up_to_more_than_it(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    receipt = _settled_request(stack, tenant.api_key)
    charged = receipt["charged_micro"]
    assert charged >= 2
    [settled] = _journal(stack, tenant.account_id, "ledger.hold_settled")
    after_charge = io.balance(stack.dsn, tenant.account_id)
    half = charged // 2

    def reversal(amount: int, key: str) -> httpx.Response:
        return _post(
            stack,
            "/reversals",
            {
                "account_id": tenant.account_id,
                "original_event_id": settled["event_id"],
                "amount": f"0.{amount:06d}",
                "reason": "customer complaint",
                "idempotency_key": key,
            },
        )

    assert reversal(half, "r1").status_code == 202
    assert reversal(half, "r1").status_code == 202  # the same key again: applied once
    assert reversal(charged - half + 1, "r2").status_code == 202  # one micro too many
    assert reversal(half + 5, "r1").status_code == 202  # key reused with another amount
    assert reversal(charged - half, "r3").status_code == 202  # exactly what is left

    refusals = wait_for(
        lambda: (
            (r := _journal(stack, tenant.account_id, "ledger.correction_refused"))
            and len(r) == 2
            and r
        ),
        what="two refusals",
    )
    wait_for(
        lambda: len(_journal(stack, tenant.account_id, "ledger.reversed")) == 2,
        what="two reversals",
    )
    assert io.balance(stack.dsn, tenant.account_id) == after_charge + charged
    reasons = sorted(r["payload"]["reason"] for r in refusals)
    assert any("left to reverse" in r for r in reasons)
    assert any("idempotency key reused" in r for r in reasons)
    final = io.fetchval(
        stack.dsn,
        "SELECT body ->> 'refunded_micro' FROM ledger.receipts WHERE request_id = $1",
        receipt["request_id"],
    )
    assert int(final) == charged


def test_an_adjustment_moves_a_bucket_with_its_reason_once(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "1"})
    key = uuid.uuid4().hex
    body = {
        "account_id": tenant.account_id,
        "bucket": "credit",
        "unit": "credit",
        "amount": "-0.25",
        "reason": "goodwill reversed",
        "idempotency_key": key,
    }
    assert _post(stack, "/adjustments", body).status_code == 202
    assert _post(stack, "/adjustments", body).status_code == 202
    no_reason = _post(stack, "/adjustments", {**body, "reason": ""})
    bad_amount = _post(stack, "/adjustments", {**body, "amount": "0"})

    wait_for(lambda: io.balance(stack.dsn, tenant.account_id) == 750_000, what="the adjustment")
    [adjusted] = _journal(stack, tenant.account_id, "ledger.adjusted")
    assert adjusted["payload"]["reason"] == "goodwill reversed"
    assert no_reason.status_code == 400
    assert bad_amount.status_code == 400
    assert bad_amount.json()["error"]["param"] == "amount"
