"""Top-ups through the admin API: what the edge can know is refused at once in the client's
error shape; what only the ledger decides is a 202 whose status URL says applied or refused.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, wait_for
from tests.integration import ledger_io as io
from tollway.events.pricing import MAX_AMOUNT_MICRO, MAX_BALANCE_MICRO, MICRO

pytestmark = pytest.mark.e2e

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def _topup(stack: Any, account_id: str, **overrides: Any) -> httpx.Response:
    body = {
        "account_id": account_id,
        "bucket": "credit",
        "unit": "credit",
        "amount": "5",
        "idempotency_key": uuid.uuid4().hex,
    } | overrides
    return httpx.post(f"{stack.edge_url}/admin/v1/topups", headers=ADMIN, json=body, timeout=10)


def _status(stack: Any, event_id: str) -> httpx.Response:
    return httpx.get(f"{stack.edge_url}/admin/v1/topups/{event_id}", headers=ADMIN, timeout=10)


def _settled(stack: Any, event_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = _status(stack, event_id).json()
        return body if body["status"] != "pending" else None

    found: dict[str, Any] = wait_for(done, what="the ledger's outcome")
    return found


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) >= {"message", "type", "code", "param"}
    return error


@pytest.mark.parametrize(
    "amount",
    [
        "+-5",
        "\u0665",  # Arabic-Indic five
        "\uff15",  # full-width five
        "-5",
        "+5",
        "0",
        "1e5",
        "1.0000001",
        " 5",
        "5\x00",
        "1000000000.000001",
        "9" * 40,
    ],
)
def test_an_amount_that_is_not_an_ascii_decimal_in_range_is_a_400_naming_it(
    stack, tenant_factory_module, amount: str
) -> None:
    tenant = tenant_factory_module({})
    error = _error(_topup(stack, tenant.account_id, amount=amount), 400)
    assert error["param"] == "amount"
    assert error["type"] == "invalid_request_error"


def test_what_the_edge_can_know_is_refused_at_once(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "1"})
    unknown = _error(_topup(stack, "no-such-account"), 404)
    assert unknown["code"] == "account_not_found"
    bucket = _error(_topup(stack, tenant.account_id, bucket="nosuch"), 400)
    assert (bucket["code"], bucket["param"]) == ("unknown_bucket", "bucket")
    invalid = _error(_topup(stack, tenant.account_id, bucket="Credit!"), 400)
    assert invalid["param"] == "bucket"
    unit = _error(_topup(stack, tenant.account_id, unit="USD"), 400)
    assert (unit["code"], unit["param"]) == ("unit_mismatch", "unit")
    nul = _error(_topup(stack, tenant.account_id, unit="cr\x00"), 400)
    assert nul["param"] == "unit"
    assert io.balance(stack.dsn, tenant.account_id) == MICRO  # nothing was applied


def test_a_reused_key_answers_the_original_or_409_with_it(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "1"})
    first = _topup(stack, tenant.account_id, amount="2.5", idempotency_key="k1")
    assert first.status_code == 202, first.text
    again = _topup(stack, tenant.account_id, amount="2.500", idempotency_key="k1")
    assert again.status_code == 202
    assert again.json()["event_id"] == first.json()["event_id"]
    other = _error(_topup(stack, tenant.account_id, amount="3", idempotency_key="k1"), 409)
    assert (other["code"], other["param"]) == ("idempotency_key_reused", "idempotency_key")
    assert other["original"]["amount"] == "2.500000"
    assert other["original"]["idempotency_key"] == "k1"
    # Keys are the account's own: another tenant may use the same one.
    neighbour = tenant_factory({})
    assert _topup(stack, neighbour.account_id, idempotency_key="k1").status_code == 202

    outcome = _settled(stack, first.json()["event_id"])

    assert outcome["status"] == "applied"
    assert outcome["request"]["amount_micro"] == 2_500_000
    assert first.json()["status_url"] == f"/admin/v1/topups/{first.json()['event_id']}"
    wait_for(lambda: io.balance(stack.dsn, tenant.account_id) == 3_500_000, what="one credit")


def test_a_balance_out_of_range_is_refused_by_the_edge_or_reported_refused(
    stack, tenant_factory
) -> None:
    tenant = tenant_factory({})
    most = "1000000000"  # the largest single amount
    answers = [
        _topup(stack, tenant.account_id, amount=most)
        for _ in range(MAX_BALANCE_MICRO // MAX_AMOUNT_MICRO - 1)
    ]
    assert {a.status_code for a in answers} == {202}
    # Two more, back to back: together they pass the range. The edge refuses what the ledger's
    # state already shows; what it cannot see yet, the ledger refuses and the status URL says so.
    last = [_topup(stack, tenant.account_id, amount=most) for _ in range(2)]
    for answer in answers[-1:] + last:
        if answer.status_code == 202:
            _settled(stack, answer.json()["event_id"])
    outcomes = []
    for answer in last:
        if answer.status_code == 400:
            outcomes.append(("edge", _error(answer, 400)["code"]))
        else:
            found = _settled(stack, answer.json()["event_id"])
            outcomes.append((found["status"], found.get("code")))
    assert outcomes[0] == ("applied", None)
    assert outcomes[1] in {("edge", "balance_out_of_range"), ("refused", "balance_out_of_range")}
    assert io.balance(stack.dsn, tenant.account_id) == MAX_BALANCE_MICRO


def test_the_status_of_an_unknown_or_malformed_top_up_is_a_client_error(stack) -> None:
    assert _error(_status(stack, "01J0000000000000000000000"), 404)["code"] == "topup_not_found"
    assert _status(stack, "abc%00def").status_code == 400


def test_a_top_up_can_be_reversed_back_to_the_accounts_own_source(stack, tenant_factory) -> None:
    tenant = tenant_factory({})
    sent = _topup(stack, tenant.account_id, amount="4")
    assert sent.status_code == 202, sent.text
    assert _settled(stack, sent.json()["event_id"])["status"] == "applied"
    topped = io.fetchval(
        stack.dsn,
        "SELECT event_id FROM ledger.journal WHERE cause_id = $1",
        sent.json()["event_id"],
    )

    reversal = httpx.post(
        f"{stack.edge_url}/admin/v1/ledger/reversals",
        headers=ADMIN,
        json={
            "account_id": tenant.account_id,
            "original_event_id": topped,
            "amount": "1.5",
            "reason": "refund",
            "idempotency_key": uuid.uuid4().hex,
        },
        timeout=10,
    )

    assert reversal.status_code == 202, reversal.text
    wait_for(lambda: io.balance(stack.dsn, tenant.account_id) == 2_500_000, what="the reversal")
    source = io.fetchval(
        stack.dsn,
        "SELECT amount FROM ledger.balances WHERE account = $1",
        f"system/topup/{tenant.account_id}",
    )
    assert source == -2_500_000
