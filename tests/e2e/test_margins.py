"""Upstream cost and margin through the HTTP API: cost prices set on channels, every attempt's
cost booked by the ledger (failed ones included) and never shown to the tenant, and the margin
report matching a hand computation to the micro-unit; the ledger still replays byte for byte.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import wait_for
from tests.e2e.route_kit import admin_client, new_channel, new_model, settled_receipt
from tests.e2e.test_price_table import _verify
from tests.e2e.ui_kit import login_operator, login_user, ui_client
from tests.integration import ledger_io as io

if TYPE_CHECKING:
    from tollway.devstack.stack import Stack

pytestmark = pytest.mark.e2e

SELL = {"input": "1", "output": "4"}  # CNY per 1M tokens (the Wallet's unit)
# Failing channel: 0.01 CNY per call that reached it; served channel: 0.00001 CNY per call.
FAIL_COST = {"currency": "CNY", "input": "0.75", "output": "3", "per_request": "0.01"}
SERVE_COST = {"currency": "CNY", "input": "0.7", "output": "2.8", "per_request": "0.00001"}
DIRECT_COST = {"currency": "USD", "input": "0.12", "output": "0.48"}
# The same prices in micro-units per 1M tokens, written out by hand.
SERVE_IN, SERVE_OUT, SERVE_CALL = 700_000, 2_800_000, 10
FAIL_CALL = 10_000
SELL_IN, SELL_OUT = 1_000_000, 4_000_000
TENANT_HIDDEN = ("upstream_cost", "economics", "margin", "per_request", "cost_per_1m", "expense")


def _ceil(numerator: int, denominator: int = 1_000_000) -> int:
    return -(-numerator // denominator)


def _chat(stack: Stack, key: str, model: str) -> httpx.Response:
    return httpx.post(
        f"{stack.edge_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={
            "model": model,
            "messages": [{"role": "user", "content": "price check"}],
            "max_tokens": 16,
            "usage": {"include": True},
        },
        timeout=30,
    )


def _receipt(stack: Stack, key: str, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    found: dict[str, Any] = wait_for(
        lambda: settled_receipt(stack, key, request_id), what=f"receipt {request_id}"
    )
    return found


def _margins(admin: httpx.Client, group_by: str, since: datetime, **extra: str) -> httpx.Response:
    until = datetime.now(UTC) + timedelta(minutes=1)
    params = {"group_by": group_by, "from": since.isoformat(), "to": until.isoformat(), **extra}
    return admin.get("/margins", params=params)


def _rows(admin: httpx.Client, group_by: str, since: datetime) -> dict[str, dict[str, Any]]:
    response = _margins(admin, group_by, since)
    assert response.status_code == 200, response.text
    return {str(r[group_by]): r for r in response.json()["rows"]}


def test_cost_prices_are_set_validated_and_shown_to_operators(stack: Stack) -> None:
    with admin_client(stack) as admin:
        channel = new_channel(
            admin, stack, "openai-pool", route_type="pool", bucket="wallet", cost=SERVE_COST
        )
        bad = admin.patch(f"/channels/{channel}", json={"cost": {**SERVE_COST, "input": "1.5x"}})
        changed = admin.patch(
            f"/channels/{channel}", json={"cost": {**SERVE_COST, "output": "3.1"}}
        )
        tree = admin.get("/route-tree").json()
        cleared = admin.patch(f"/channels/{channel}", json={"cost": None})

    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["code"] == "invalid_amount"
    assert bad.json()["error"]["param"] == "cost.input"
    assert changed.status_code == 200, changed.text
    assert changed.json()["cost_per_1m"] == {
        "currency": "CNY",
        "input": "0.700000",
        "output": "3.100000",
        "cached_input": None,
        "cache_write": None,
        "cache_write_1h": None,
        "reasoning": None,
        "per_request": "0.000010",
    }
    assert "price_event_id" in changed.json()  # a cost change is a price version
    shown = [
        c
        for rt in tree["route_types"]
        for b in rt["brands"]
        for c in b["channels"]
        if c["id"] == channel
    ]
    assert shown[0]["cost_per_1m"]["output"] == "3.100000"
    assert cleared.status_code == 200
    assert cleared.json()["cost_per_1m"] is None
    versions = wait_for(
        lambda: (
            (
                rows := io.fetch(
                    stack.dsn,
                    "SELECT version, cost_currency, cost_output, cost_per_request"
                    " FROM ledger.price_versions WHERE channel_id = $1 ORDER BY version",
                    channel,
                )
            )
            and len(rows) == 3
            and rows
        ),
        what="three price versions of the channel",
    )
    assert [tuple(v.values()) for v in versions] == [
        (1, "CNY", 2_800_000, 10),
        (2, "CNY", 3_100_000, 10),
        (3, None, None, None),
    ]
    with ui_client(stack) as ui:
        login_operator(ui)
        page = ui.get("/ui/admin/routes")
    assert page.status_code == 200
    assert "0.700000 / 2.800000 CNY" in page.text  # the seeded openai-pool channel's cost


def test_margins_match_a_hand_computation_and_tenants_never_see_cost(  # noqa: PLR0915 - one story
    stack: Stack, tenant_factory, upstream
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    tenant = tenant_factory({"wallet": "20", "credit": "10"})
    with admin_client(stack) as admin:
        failing = new_channel(
            admin,
            stack,
            "openai-pool-backup",
            route_type="pool",
            bucket="wallet",
            prices=SELL,
            cost=FAIL_COST,
        )
        serving = new_channel(
            admin,
            stack,
            "openai-pool",
            route_type="pool",
            bucket="wallet",
            prices=SELL,
            cost=SERVE_COST,
        )
        direct = new_channel(admin, stack, "openai-direct", cost=DIRECT_COST)
        fallback_model = new_model(
            admin,
            [
                {"channel_id": failing, "upstream_model": "gpt-4o-mini", "tier": 0},
                {"channel_id": serving, "upstream_model": "gpt-4o-mini", "tier": 1},
            ],
        )
        pool_model = new_model(admin, [{"channel_id": serving, "upstream_model": "gpt-4o-mini"}])
        direct_model = new_model(admin, [{"channel_id": direct, "upstream_model": "gpt-4o-mini"}])

        upstream.post(
            "/_control/faults",
            json={"channel": "openai-pool-backup", "kind": "status", "status": 503, "count": 2},
        ).raise_for_status()
        first = _chat(stack, tenant.api_key, fallback_model)
        upstream.delete("/_control/faults")
        rest = [_chat(stack, tenant.api_key, pool_model) for _ in range(2)]
        direct_call = _chat(stack, tenant.api_key, direct_model)
        receipts = [_receipt(stack, tenant.api_key, r) for r in (first, *rest, direct_call)]

        # --- the hand computation, from the receipts' tokens and the prices written above ---
        failed = [a for a in receipts[0]["attempts"] if a["channel_id"] == failing]
        assert failed
        assert {a["outcome"] for a in failed} == {"http_error"}
        assert {a["usage"]["output_tokens"] for a in failed} == {0}
        fail_cost = FAIL_CALL * len(failed)
        serve_costs, revenue = [], []
        for r in receipts[:3]:
            [served] = [a for a in r["attempts"] if a["outcome"] == "ok"]
            assert served["channel_id"] == serving
            tokens_in, tokens_out = (
                served["usage"]["input_tokens"],
                served["usage"]["output_tokens"],
            )
            serve_costs.append(_ceil(tokens_in * SERVE_IN + tokens_out * SERVE_OUT) + SERVE_CALL)
            revenue.append(_ceil(tokens_in * SELL_IN + tokens_out * SELL_OUT))
            assert r["charged_micro"] == revenue[-1]
            assert r["unit"] == "CNY"

        by_channel = _rows(admin, "channel", since)
        by_model = _rows(admin, "model", since)
        by_account = _rows(admin, "account", since)
        costed = admin.get(f"/receipts/{receipts[0]['request_id']}")
        csv = _margins(admin, "channel", since, format="csv")
        tenant_denied = httpx.get(
            f"{stack.edge_url}/admin/v1/margins",
            headers={"authorization": f"Bearer {tenant.api_key}"},
        )

    serve_row = by_channel[serving]
    assert serve_row["revenue"] == [
        {"unit": "CNY", "amount_micro": sum(revenue), "amount": _fmt(sum(revenue))}
    ]
    assert serve_row["cost"][0]["amount_micro"] == sum(serve_costs)
    assert serve_row["comparable"] is True
    assert serve_row["margin_micro"] == sum(revenue) - sum(serve_costs)
    assert serve_row["margin_micro"] > 0
    assert serve_row["negative"] is False
    assert (serve_row["attempts"], serve_row["failed_attempts"]) == (3, 0)

    fail_row = by_channel[failing]
    assert fail_row["revenue"] == []
    assert fail_row["cost"] == [
        {"currency": "CNY", "amount_micro": fail_cost, "amount": _fmt(fail_cost)}
    ]
    assert (fail_row["margin_micro"], fail_row["negative"]) == (-fail_cost, True)
    assert fail_row["failed_attempts"] == len(failed)

    direct_row = by_channel[direct]
    assert direct_row["comparable"] is False
    assert direct_row["margin_micro"] is None
    assert direct_row["note"] == "not comparable: revenue in credit, cost in USD"
    assert direct_row["revenue"][0]["amount_micro"] == receipts[3]["charged_micro"]

    assert by_model[fallback_model]["margin_micro"] == revenue[0] - serve_costs[0] - fail_cost
    assert by_model[pool_model]["margin_micro"] == sum(revenue[1:]) - sum(serve_costs[1:])
    assert by_account[tenant.account_id]["comparable"] is False  # CNY and credit/USD mixed

    assert csv.status_code == 200
    assert csv.headers["content-type"].startswith("text/csv")
    margin = sum(revenue) - sum(serve_costs)
    assert f"{serving},CNY,{sum(revenue)},{sum(serve_costs)},{margin},true,false," in csv.text
    assert f"{failing},CNY,0,{fail_cost},{-fail_cost},true,true," in csv.text

    assert costed.status_code == 200, costed.text
    attempts = costed.json()["attempts"]
    assert [a["upstream_cost"]["margin_micro"] for a in attempts] == [
        *([-FAIL_CALL] * len(failed)),
        revenue[0] - serve_costs[0],
    ]
    assert costed.json()["economics"]["margin_micro"] == revenue[0] - serve_costs[0] - fail_cost
    assert tenant_denied.status_code == 401

    _operator_pages_show_it(stack, since, receipts[0]["request_id"], failing, direct)
    _tenant_sees_no_cost(stack, tenant.api_key, receipts, [first, *rest, direct_call])

    done = _verify(stack, "verify_margins")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   live_digest_equals_replay" in done.stdout


def _operator_pages_show_it(
    stack: Stack, since: datetime, request_id: str, failing: str, direct: str
) -> None:
    with ui_client(stack) as ui:
        login_operator(ui)
        page = ui.get("/ui/admin/margins", params={"from": since.isoformat()})
        receipt = ui.get(f"/ui/admin/receipts/{request_id}")
    assert page.status_code == 200
    rows = page.text.split('<table id="margins">')[1]
    failing_row = next(r for r in rows.split("<tr") if failing in r)
    assert "data-negative" in failing_row
    direct_row = next(r for r in rows.split("<tr") if direct in r)
    assert "not comparable: revenue in credit, cost in USD" in direct_row
    assert "<svg" in page.text
    assert 'class="neg"' in page.text  # the failing channel's bar points down
    assert receipt.status_code == 200
    assert 'id="margin"' in receipt.text
    assert "-0.010000 CNY" in receipt.text  # one failed attempt's margin: minus its call cost


def _fmt(micro: int) -> str:
    return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"


def _tenant_sees_no_cost(
    stack: Stack, key: str, receipts: list[dict[str, Any]], responses: list[httpx.Response]
) -> None:
    """The receipt, the generation view, cost headers, usage.cost and the dashboard."""
    auth = {"authorization": f"Bearer {key}"}
    for receipt, response in zip(receipts, responses, strict=True):
        request_id = receipt["request_id"]
        assert response.headers["x-tollway-cost"] == _fmt(receipt["charged_micro"])
        assert response.json()["usage"]["cost"] == float(_fmt(receipt["charged_micro"]))
        own = httpx.get(f"{stack.edge_url}/v1/receipts/{request_id}", headers=auth)
        generation = httpx.get(f"{stack.edge_url}/api/v1/generation?id={request_id}", headers=auth)
        listing = httpx.get(f"{stack.edge_url}/v1/receipts?limit=50", headers=auth)
        for shown in (own, generation, listing):
            assert shown.status_code == 200, shown.text
            assert not any(word in shown.text for word in TENANT_HIDDEN), shown.text
            assert "USD" not in shown.text  # the direct channel's cost currency
        assert all("cost" not in a for a in own.json()["attempts"])
    with ui_client(stack) as ui:
        login_user(ui, key)
        overview = ui.get("/ui/")
        assert overview.status_code == 200
        assert "ledger.hold_settled" in overview.text  # the tenant's own entries are listed
        assert "upstream_cost" not in overview.text  # the operator's cost entries are not
        for receipt in receipts:
            page = ui.get(f"/ui/requests/{receipt['request_id']}")
            assert page.status_code == 200
            assert "USD" not in page.text
            assert "upstream_expense" not in page.text
            assert "Upstream cost" not in page.text
