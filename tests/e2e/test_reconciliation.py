"""Reconciliation on the real stack: requests served through a channel with a known cost price,
the upstream reporting ``usage.cost`` in its answers (streamed and not), then its invoice
imported with a deliberate difference: the drift report shows the exact numbers and one alert
reaches ``limits.alerts``; re-importing changes nothing, a changed line is a new revision, a
malformed file is refused by line number, and ``tollway ledger verify`` still finds live ==
replay.

The cost price is written into the router's channel rows by SQL (a test helper): the route
admin's ``cost`` field is another change.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, wait_for
from tests.e2e.route_kit import admin_client, new_channel, new_model
from tollway.events.pricing import CostPrice, Usage, format_micro, upstream_cost_micro
from tollway.events.topics import RECON_KEY

if TYPE_CHECKING:
    from pathlib import Path

    from tollway.devstack.stack import Stack

pytestmark = pytest.mark.e2e

COST = CostPrice(input=150_000, output=600_000, currency="USD", per_request=0)
# The demo upstream reports usage.cost at these prices per 1M tokens: the same as the cost price.
UPSTREAM_MODEL = "gpt-4o-mini+cost:0.15:0.6"
EXTRA_MICRO = 500  # what the invoice charges on top for the second request


def _set_cost_price(stack: Stack, channel_id: str, cost: CostPrice) -> None:
    """Test helper: the cost price straight into the router's channel row."""

    async def write() -> None:
        conn = await asyncpg.connect(stack.dsn)
        try:
            await conn.execute(
                "UPDATE router.channels SET cost_currency = $2, cost_input = $3,"
                " cost_output = $4, cost_per_request = $5 WHERE id = $1",
                channel_id,
                cost.currency,
                cost.input,
                cost.output,
                cost.per_request,
            )
        finally:
            await conn.close()

    asyncio.run(write())


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TOLLWAY_BASE_URL": f"{stack.edge_url}/v1",
        "TOLLWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "DATABASE_URL": stack.dsn,
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
    }
    return subprocess.run(
        [sys.executable, "-m", "tollway.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _call(stack: Stack, key: str, model: str, *, stream: bool) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"reconcile me ({stream})"}],
        "max_tokens": 20,
        "stream": stream,
    }
    headers = {"authorization": f"Bearer {key}"}
    with httpx.Client(timeout=30) as client:
        response = client.post(f"{stack.edge_url}/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200, response.text
        return response.headers["x-request-id"]


def _attempt(stack: Stack, key: str, request_id: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{stack.edge_url}/v1/receipts/{request_id}", headers={"authorization": f"Bearer {key}"}
    )
    if response.status_code != 200 or response.json().get("status") != "settled":
        return None
    attempts: list[dict[str, Any]] = response.json()["attempts"]
    return attempts[0]


def _drift(admin: httpx.Client, channel: str, day: date) -> dict[str, Any]:
    found = admin.get("/recon/drift", params={"channel": channel, "from": day.isoformat()})
    assert found.status_code == 200, found.text
    body: dict[str, Any] = found.json()
    return body


def _booked(attempt: dict[str, Any]) -> int:
    tokens = attempt["usage"]
    usage = Usage(input_tokens=tokens["input_tokens"], output_tokens=tokens["output_tokens"])
    return upstream_cost_micro(usage, COST)


def _alerts(stack: Stack, channel: str) -> list[str]:
    """Reconciliation alerts of ``channel`` as ``tollway alerts tail`` prints them."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tollway.cli",
            "alerts",
            "tail",
            "--bootstrap",
            stack.bootstrap,
            "--scope",
            f"channel:{channel}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if " recon_drift" in line]


def _invoice(day: date, lines: list[tuple[str, dict[str, Any], int]]) -> bytes:
    rows = ["date,upstream_request_id,model,input_tokens,output_tokens,cost,currency"]
    rows += [
        f"{day},{up_id},gpt-4o-mini,{t['input_tokens']},{t['output_tokens']},"
        f"{format_micro(cost)},USD"
        for up_id, t, cost in lines
    ]
    return ("\n".join(rows) + "\n").encode()


def _revisions(stack: Stack, channel: str) -> list[dict[str, Any]]:
    with httpx.Client(
        base_url=f"{stack.edge_url}/admin/v1/ledger",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    ) as ledger:
        page = ledger.get(f"/accounts/{RECON_KEY}/entries", params={"limit": 500})
    if page.status_code == 404:
        return []
    assert page.status_code == 200, page.text
    return [e for e in page.json()["entries"] if e["payload"]["channel_id"] == channel]


def test_the_drift_of_a_channel_day_against_responses_and_invoice(  # noqa: PLR0915 - one story
    stack: Stack, tenant_factory: Any, tmp_path: Path
) -> None:
    tenant = tenant_factory({"credit": "100"})
    with admin_client(stack) as admin:
        # A bad path is the client's mistake, in the OpenAI error shape.
        bad = new_channel(admin, stack, "openai-pool")
        refused = admin.patch(f"/channels/{bad}", json={"reported_cost_path": "usage[0]"})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["type"] == "invalid_request_error"
        assert "reported_cost_path" in refused.json()["error"]["message"]

        channel = new_channel(admin, stack, "openai-pool", reported_cost_path="usage.cost")
        _set_cost_price(stack, channel, COST)
        model = new_model(admin, [{"channel_id": channel, "upstream_model": UPSTREAM_MODEL}])

        first = _call(stack, tenant.api_key, model, stream=False)
        second = _call(stack, tenant.api_key, model, stream=True)
        a1 = wait_for(lambda: _attempt(stack, tenant.api_key, first), what="first receipt")
        a2 = wait_for(lambda: _attempt(stack, tenant.api_key, second), what="second receipt")
        booked = [_booked(a1), _booked(a2)]

        day = datetime.now(UTC).date()
        report = wait_for(
            lambda: (
                (r := _drift(admin, channel, day))["days"]
                and r["days"][0]["booked"]["requests"] == 2
                and r
            ),
            what="both attempts in the reconciliation",
        )
        [today] = report["days"]
        day = date.fromisoformat(today["day"])
        assert today["currency"] == "USD"
        assert today["booked"]["cost_micro"] == sum(booked)
        # The upstream reported, streamed and not, exactly what the cost price books.
        assert today["response"]["booked"]["requests"] == 2
        assert today["response"]["upstream"]["cost_micro"] == sum(booked)
        assert today["response"]["difference_micro"] == 0
        assert today["differing_requests"] == []

        # The invoice: the first request as booked, the second 0.0005 USD dearer.
        t1, t2 = a1["usage"], a2["usage"]
        invoice = tmp_path / "invoice.csv"
        invoice.write_bytes(
            _invoice(
                day,
                [
                    (a1["upstream_request_id"], t1, booked[0]),
                    (a2["upstream_request_id"], t2, booked[1] + EXTRA_MICRO),
                ],
            )
        )
        imported = _cli(stack, "recon", "import", "--channel", channel, str(invoice))
        assert imported.returncode == 0, imported.stderr
        assert orjson.loads(imported.stdout)["lines"] == 2
        wait_for(lambda: len(_revisions(stack, channel)) == 2, what="two invoice line revisions")

        drift = _drift(admin, channel, day)["days"][0]["invoice"]
        assert drift["upstream"]["cost_micro"] == sum(booked) + EXTRA_MICRO
        assert drift["booked"]["cost_micro"] == sum(booked)
        assert drift["difference_micro"] == EXTRA_MICRO
        assert drift["difference"] == "0.000500"
        assert drift["token_difference"] == 0
        [differs] = _drift(admin, channel, day)["days"][0]["differing_requests"]
        assert (differs["basis"], differs["request_id"]) == ("invoice", second)
        assert differs["difference_micro"] == EXTRA_MICRO

        # The same file again: nothing new. A malformed one: refused by line, nothing imported.
        again = admin.post(
            "/recon/imports", params={"channel": channel}, content=invoice.read_bytes()
        )
        assert again.status_code == 202, again.text
        broken = invoice.read_bytes() + f"{day},up-x,gpt-4o-mini,1,1,-3,USD\n".encode()
        malformed = admin.post("/recon/imports", params={"channel": channel}, content=broken)
        assert malformed.status_code == 400
        assert malformed.json()["error"]["message"].startswith(
            "The invoice was not imported: line 4: "
        )
        assert malformed.json()["error"]["line"] == 4

        # A corrected second line: a new revision, the first one kept.
        corrected = _invoice(day, [(a2["upstream_request_id"], t2, booked[1] + 2 * EXTRA_MICRO)])
        fixed = admin.post("/recon/imports", params={"channel": channel}, content=corrected)
        assert fixed.status_code == 202, fixed.text
        revisions = wait_for(
            lambda: (found := _revisions(stack, channel)) and len(found) == 3 and found,
            what="the corrected line's revision",
        )
        assert sorted(r["payload"]["revision"] for r in revisions) == [1, 1, 2]

        final = _drift(admin, channel, day)["days"][0]["invoice"]
        assert final["difference_micro"] == 2 * EXTRA_MICRO
        assert final["relative"] == _relative(2 * EXTRA_MICRO, sum(booked))
        csv_report = admin.get(
            "/recon/drift", params={"channel": channel, "from": str(day), "format": "csv"}
        )
        assert csv_report.headers["content-type"].startswith("text/csv")
        assert f"{channel},{day},USD,invoice,2," in csv_report.text
        cli_drift = _cli(stack, "recon", "drift", "--channel", channel, "--from", str(day))
        assert orjson.loads(cli_drift.stdout)["days"][0]["invoice"]["difference_micro"] == 1000

    # One alert for the invoice basis of this channel-day, however often it was re-imported.
    [alert] = wait_for(lambda: _alerts(stack, channel), what="the drift alert", timeout=30)
    assert f"channel:{channel} recon_drift_invoice " in alert
    assert "threshold=0.01 " in alert
    assert "difference 0.000500" in alert  # raised by the first import, not repeated after
    assert second in alert


def test_answers_that_report_more_than_the_cost_price_raise_a_response_drift_alert(
    stack: Stack, tenant_factory: Any
) -> None:
    tenant = tenant_factory({"credit": "100"})
    with admin_client(stack) as admin:
        channel = new_channel(admin, stack, "openai-pool", reported_cost_path="x_cost.usd")
        assert (
            admin.patch(f"/channels/{channel}", json={"reported_cost_path": ""}).json()[
                "reported_cost_path"
            ]
            == "usage.cost"
        )
        _set_cost_price(stack, channel, COST)
        # The upstream bills output at 0.90 per 1M tokens, not the 0.60 of the cost price.
        model = new_model(
            admin, [{"channel_id": channel, "upstream_model": "gpt-4o-mini+cost:0.15:0.9"}]
        )
        request_id = _call(stack, tenant.api_key, model, stream=True)
        attempt = wait_for(lambda: _attempt(stack, tenant.api_key, request_id), what="receipt")
        tokens = attempt["usage"]
        booked = _booked(attempt)
        exact = tokens["input_tokens"] * 150_000 + tokens["output_tokens"] * 900_000
        reported = -(-exact // 1_000_000)  # rounded up to the micro-unit, once
        day = datetime.now(UTC).date()
        [today] = wait_for(
            lambda: (r := _drift(admin, channel, day))["days"] and r["days"],
            what="the attempt in the reconciliation",
        )
    assert today["response"]["booked"]["cost_micro"] == booked
    assert today["response"]["upstream"]["cost_micro"] == reported
    assert today["response"]["difference_micro"] == reported - booked > 0
    [differs] = today["differing_requests"]
    assert (differs["basis"], differs["request_id"]) == ("response", request_id)
    [alert] = wait_for(lambda: _alerts(stack, channel), what="the response drift alert")
    assert f"channel:{channel} recon_drift_response " in alert
    assert request_id in alert


def _relative(difference: int, booked: int) -> str:
    from decimal import ROUND_HALF_EVEN, Decimal  # noqa: PLC0415

    return str((Decimal(difference) / booked).quantize(Decimal("0.000001"), ROUND_HALF_EVEN))


def test_ledger_verify_still_finds_live_equal_to_replay(stack: Stack) -> None:
    since = (datetime.now(UTC) - timedelta(days=1)).date()
    with admin_client(stack) as admin:
        assert admin.get("/recon/drift", params={"from": str(since)}).status_code == 200
        for params in (
            {"from": str(since), "channel": "a\x00b"},
            {"from": "2026-02-30"},
            {"from": str(since), "to": str(since - timedelta(days=1))},
            {"from": str(since), "format": "xml"},
            {},
        ):
            refused = admin.get("/recon/drift", params=params)
            assert refused.status_code == 400, (params, refused.text)
            assert refused.json()["error"]["type"] == "invalid_request_error"
        unknown = admin.post("/recon/imports", params={"channel": "no-such-channel"}, content=b"")
        assert unknown.status_code == 404
    done = _cli(stack, "ledger", "verify", "--database", "tollway_recon_verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   live_digest_equals_replay" in done.stdout
