"""Re-rating upstream COST through the admin API: a corrected cost price for one channel over a
period changes exactly the booked costs of that channel's attempts in the period, by
compensating entries next to the original bookings between the channel's operator accounts;
the dry run's figures are what the apply books; the margin report, the operator receipt and the
reconciliation's drift move by exactly that; no tenant balance or receipt changes; a currency
change is refused; applying twice (or the same command again) changes nothing; a replay
reproduces it all.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from tests.conftest import wait_for
from tests.e2e.route_kit import admin_client, new_channel, new_model, settled_receipt
from tests.e2e.test_rerate import _done, _fence, _post, _verify
from tests.e2e.ui_kit import login_operator, login_user, ui_client
from tests.integration import ledger_io as io
from tollway.events import topics
from tollway.events.envelope import decode, make
from tollway.events.pricing import CostPrice, Usage, format_micro, upstream_cost_micro
from tollway.ledger import replay

if TYPE_CHECKING:
    from tollway.devstack.seed import Tenant
    from tollway.devstack.stack import Stack

pytestmark = pytest.mark.e2e

SELL = {"input": "1", "output": "4"}  # CNY per 1M tokens (the Wallet's unit)
# What the channel was set to cost, and what the upstream really charged (and reports).
OLD_COST = {"currency": "CNY", "input": "0.7", "output": "2.8", "per_request": "0.00001"}
OLD = CostPrice(currency="CNY", input=700_000, output=2_800_000, per_request=10)
NEW_COST = {"currency": "CNY", "input": "1.4", "output": "5.6"}
NEW = CostPrice(currency="CNY", input=1_400_000, output=5_600_000)
UPSTREAM_MODEL = "gpt-4o-mini+cost:1.4:5.6"  # the demo upstream reports usage.cost at NEW
TENANT_HIDDEN = ("upstream_cost", "economics", "margin", "per_request", "expense", "payable")


def _served(stack: Stack, tenant: Tenant, model: str) -> dict[str, Any]:
    response = httpx.post(
        f"{stack.edge_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {tenant.api_key}"},
        json={"model": model, "messages": [{"role": "user", "content": "cost me"}],
              "max_tokens": 16},
        timeout=30,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    receipt: dict[str, Any] = wait_for(
        lambda: settled_receipt(stack, tenant.api_key, request_id), what="the settlement"
    )
    assert receipt["status"] == "settled"
    return receipt


def _usage(receipt: dict[str, Any]) -> Usage:
    [attempt] = receipt["attempts"]
    return Usage.model_validate(attempt["usage"])


def _booked_at(stack: Stack, request_id: str) -> datetime:
    at: datetime = wait_for(
        lambda: io.fetchval(
            stack.dsn,
            "SELECT occurred_at FROM ledger.upstream_costs WHERE request_id = $1",
            request_id,
        ),
        what="the attempt's booked cost",
    )
    return at


def _tenant_receipt(stack: Stack, tenant: Tenant, request_id: str) -> httpx.Response:
    return httpx.get(
        f"{stack.edge_url}/v1/receipts/{request_id}",
        headers={"authorization": f"Bearer {tenant.api_key}"},
        timeout=10,
    )


def _channel_rows(admin: httpx.Client, since: datetime) -> dict[str, dict[str, Any]]:
    until = datetime.now(UTC) + timedelta(minutes=1)
    params = {"group_by": "channel", "from": since.isoformat(), "to": until.isoformat()}
    response = admin.get("/margins", params=params)
    assert response.status_code == 200, response.text
    return {r["channel"]: r for r in response.json()["rows"]}


def _response_drift(admin: httpx.Client, channel: str) -> dict[str, Any]:
    day = datetime.now(UTC).date().isoformat()
    found = admin.get("/recon/drift", params={"channel": channel, "from": day})
    assert found.status_code == 200, found.text
    [today] = found.json()["days"]
    drift: dict[str, Any] = today["response"]
    return drift


def _entries(stack: Stack, correction: str) -> list[dict[str, Any]]:
    rows = io.fetch(
        stack.dsn,
        "SELECT account_id, body -> 'payload' AS payload FROM ledger.journal"
        " WHERE type = 'ledger.upstream_cost_rerated'"
        " AND body -> 'payload' ->> 'correction_id' = $1 ORDER BY seq",
        correction,
    )
    return [{**r, "payload": orjson.loads(r["payload"])} for r in rows]


def _resend(stack: Stack, correction: str) -> None:
    """The recorded commands on the log again under new event ids: as they were, and changed."""
    texts = io.fetchval(
        stack.dsn, "SELECT envelopes FROM edge.rerate_requests WHERE correction_id = $1", correction
    )
    commands = [decode(t.encode()).payload for t in texts]
    changed = [
        c.model_copy(update={"cost": c.cost.model_copy(update={"input": 1})}) for c in commands
    ]
    io.publish(stack.bootstrap, [make(c) for c in (*commands, *changed)], topics.REQUESTS)


def _refusals(stack: Stack, correction: str) -> list[dict[str, Any]]:
    return io.fetch(
        stack.dsn,
        "SELECT account_id, body -> 'payload' ->> 'code' AS code FROM ledger.journal"
        " WHERE type = 'ledger.upstream_cost_rerate_refused'"
        " AND body -> 'payload' ->> 'correction_id' = $1",
        correction,
    )


def _routes(stack: Stack) -> tuple[str, str, str, str]:
    """The channel to re-rate and another one, both at the old cost, and a model for each."""
    with admin_client(stack) as admin:
        channels = [
            new_channel(
                admin, stack, "openai-pool", route_type="pool", bucket="wallet", prices=SELL,
                cost=OLD_COST,
            )
            for _ in range(2)
        ]  # fmt: skip
        models = [
            new_model(admin, [{"channel_id": c, "upstream_model": UPSTREAM_MODEL}])
            for c in channels
        ]
    return channels[0], channels[1], models[0], models[1]


def test_a_cost_rerating_changes_exactly_the_period_costs_of_the_channel_once(  # noqa: PLR0915
    stack: Stack, tenant_factory: Any
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    channel, other, model, other_model = _routes(stack)
    first, second = tenant_factory({"wallet": "20"}), tenant_factory({"wallet": "20"})
    tenants = {first.account_id: first, second.account_id: second}
    before = _served(stack, first, model)
    inside = [_served(stack, first, model), _served(stack, second, model)]
    other_channel = _served(stack, first, other_model)
    inside.append(_served(stack, first, model))
    after = _served(stack, first, model)
    everything = [before, *inside, other_channel, after]
    correction = f"cost-{uuid.uuid4().hex[:8]}"
    body = {
        "correction_id": correction,
        "side": "cost",
        "channel_id": channel,
        "from": _booked_at(stack, inside[0]["request_id"]).isoformat(),
        "to": _booked_at(stack, after["request_id"]).isoformat(),
        "cost": NEW_COST,
        "reason": "the upstream raised its prices on the 1st; the channel kept the old ones",
    }
    # The hand computation: each inside attempt booked at OLD, re-rated at NEW.
    booked = {r["request_id"]: upstream_cost_micro(_usage(r), OLD) for r in inside}
    rerated = {r["request_id"]: upstream_cost_micro(_usage(r), NEW) for r in inside}
    mine = {a: [r["request_id"] for r in inside if r["account_id"] == a] for a in tenants}
    balances = {a: io.balance(stack.dsn, a, "wallet") for a in tenants}
    receipts = {
        r["request_id"]: _tenant_receipt(stack, tenants[r["account_id"]], r["request_id"]).json()
        for r in everything
    }
    with admin_client(stack) as admin:
        margins_before = wait_for(
            lambda: (
                (rows := _channel_rows(admin, since)).get(channel, {}).get("attempts") == 5 and rows
            ),
            what="the channel's five booked attempts in the margin report",
        )
        drift_before = _response_drift(admin, channel)

    dry = _post(stack, {**body, "dry_run": True})
    currency_change = _post(stack, {**body, "cost": {**NEW_COST, "currency": "USD"}})

    assert dry.status_code == 200, dry.text
    preview = {a["account_id"]: a for a in dry.json()["accounts"]}
    assert set(preview) == set(tenants)
    for account_id, requests in mine.items():
        assert preview[account_id]["attempts"] == len(requests)
        assert preview[account_id]["booked_micro"] == sum(booked[r] for r in requests)
        assert preview[account_id]["rerated_micro"] == sum(rerated[r] for r in requests)
        assert preview[account_id]["currency"] == "CNY"
    difference = sum(rerated.values()) - sum(booked.values())
    assert difference > 0
    [total] = dry.json()["totals"]
    assert (total["channel_id"], total["attempts"]) == (channel, len(inside))
    assert total["difference_micro"] == difference
    assert currency_change.status_code == 400, currency_change.text
    assert currency_change.json()["error"]["code"] == "currency_mismatch"
    assert currency_change.json()["error"]["param"] == "cost.currency"
    assert not _entries(stack, correction)  # neither books anything

    applied = _post(stack, body)
    assert applied.status_code == 202, applied.text
    outcome = _done(stack, correction)
    again = _post(stack, body)
    conflict = _post(stack, {**body, "cost": {**NEW_COST, "input": "1.5"}})
    _resend(stack, correction)
    for tenant in tenants.values():
        _fence(stack, tenant)  # anything sent again is applied by now (a credit top-up)

    assert again.status_code == 202
    assert again.json()["commands"] == applied.json()["commands"]
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    assert conflict.json()["error"]["original"]["cost_per_1m_micro"]["input"] == 1_400_000
    # The same commands again changed nothing; changed ones under the same id were refused.
    assert sorted((r["account_id"], r["code"]) for r in _refusals(stack, correction)) == sorted(
        (a, "idempotency_key_reused") for a in tenants
    )
    results = {a["account_id"]: a for a in outcome["accounts"]}
    for account_id in tenants:
        assert results[account_id]["status"] == "applied"
        assert results[account_id]["difference_micro"] == preview[account_id]["difference_micro"]

    # One compensating entry per inside attempt, between the channel's operator accounts only.
    entries = _entries(stack, correction)
    assert sorted(e["payload"]["request_id"] for e in entries) == sorted(booked)
    for e in entries:
        p = e["payload"]
        assert p["amount_micro"] == rerated[p["request_id"]] - booked[p["request_id"]]
        assert {(x["account"], x["unit"], x["amount"]) for x in p["postings"]} == {
            (f"system/upstream_payable/{channel}", "CNY", -p["amount_micro"]),
            (f"system/upstream_expense/{channel}", "CNY", p["amount_micro"]),
        }
    originals = io.fetchval(
        stack.dsn,
        "SELECT count(*) FROM ledger.journal WHERE type = 'ledger.upstream_cost_booked'"
        " AND body -> 'payload' ->> 'request_id' = ANY($1::text[])",
        list(booked),
    )
    assert originals == len(inside)  # the original bookings stay

    with admin_client(stack) as admin:
        margins_after = _channel_rows(admin, since)
        drift_after = _response_drift(admin, channel)
        costed = admin.get(f"/receipts/{inside[0]['request_id']}").json()
    cost_before, cost_after = margins_before[channel]["cost"], margins_after[channel]["cost"]
    assert cost_after[0]["amount_micro"] == cost_before[0]["amount_micro"] + difference
    assert (
        margins_after[channel]["margin_micro"]
        == margins_before[channel]["margin_micro"] - difference
    )
    assert margins_after[other]["cost"] == margins_before[other]["cost"]
    assert margins_after[channel]["revenue"] == margins_before[channel]["revenue"]
    # The upstream reported NEW all along: the drift compares it with the re-rated cost, so the
    # period's part of the difference is gone (the attempts before and after keep theirs).
    assert drift_after["difference_micro"] == drift_before["difference_micro"] - difference
    assert drift_after["booked"]["cost_micro"] == drift_before["booked"]["cost_micro"] + difference
    outside = [before, after]
    assert drift_after["difference_micro"] == sum(
        upstream_cost_micro(_usage(r), NEW) - upstream_cost_micro(_usage(r), OLD) for r in outside
    )
    [attempt] = costed["attempts"]
    assert attempt["upstream_cost"]["cost"][0]["amount_micro"] == rerated[inside[0]["request_id"]]
    assert attempt["upstream_cost"]["booked_micro"] == booked[inside[0]["request_id"]]
    assert [r["correction_id"] for r in attempt["upstream_cost"]["rerates"]] == [correction]
    with ui_client(stack) as ui:
        login_operator(ui)
        page = ui.get(f"/ui/admin/receipts/{inside[0]['request_id']}")
    assert page.status_code == 200
    # The operator's page strikes the cost as first booked through, next to the re-rated one.
    assert f"{format_micro(booked[inside[0]['request_id']])} CNY</s>" in page.text

    # Tenants: balances and receipts exactly as they were.
    for account_id in tenants:
        assert io.balance(stack.dsn, account_id, "wallet") == balances[account_id]
    for r in everything:
        shown = _tenant_receipt(stack, tenants[r["account_id"]], r["request_id"])
        assert shown.json() == receipts[r["request_id"]]
        assert not any(word in shown.text for word in TENANT_HIDDEN)
    with ui_client(stack) as ui:
        login_user(ui, first.api_key)
        overview = ui.get("/ui/")
    assert overview.status_code == 200
    assert "upstream_cost" not in overview.text  # the cost re-rating's entries are the operator's

    done = _verify(stack, "verify_cost_rerate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   live_digest_equals_replay" in done.stdout
    replayed = io.fetchval(
        replay.target_dsn(stack.dsn, "verify_cost_rerate"),
        "SELECT count(*) FROM ledger.upstream_cost_rerates WHERE correction_id = $1",
        correction,
    )
    assert replayed == len(inside)
