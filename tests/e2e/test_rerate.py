"""Re-rating past charges through the admin API: a corrected sell price for one channel over a
period changes exactly that period's receipts on that channel, by compensating entries next to
the original charges; the dry run's figures are what the apply books; applying twice changes
nothing; a balance the correction would take below zero is flagged and skipped unless allowed;
a replay reproduces it all.
"""

from __future__ import annotations

import csv
import io as textio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, wait_for
from tests.e2e.route_kit import admin_client, chat, new_channel, new_model, settled_receipt
from tests.integration import ledger_io as io
from tollway.events import topics
from tollway.events.envelope import decode, make
from tollway.ledger import replay

if TYPE_CHECKING:
    from tollway.devstack.seed import Tenant
    from tollway.devstack.stack import Stack

pytestmark = pytest.mark.e2e

OLD = {"input": "0.15", "output": "0.60"}
NEW = {"input": "3", "output": "12"}  # per 1M tokens; unset classes fall back to these two
NEW_MICRO = {"input": 3_000_000, "output": 12_000_000}
INPUT_CLASSES = {"input", "cached_input", "cache_write", "cache_write_1h"}


def _post(stack: Stack, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{stack.edge_url}/admin/v1/rerates",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}", "x-tollway-actor": "finance-test"},
        json=body,
        timeout=30,
    )


def _status(stack: Stack, correction_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{stack.edge_url}/admin/v1/rerates/{correction_id}",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def _done(stack: Stack, correction_id: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        lambda: (s := _status(stack, correction_id))["status"] == "done" and s,
        what="the ledger's outcome of every account",
    )
    return found


def _served(stack: Stack, tenant: Tenant, model: str) -> dict[str, Any]:
    status, _, request_id = chat(stack, tenant.api_key, model)
    assert status == 200
    receipt: dict[str, Any] = wait_for(
        lambda: settled_receipt(stack, tenant.api_key, request_id), what="the settlement"
    )
    assert receipt["status"] == "settled"
    return receipt


def _receipt(stack: Stack, tenant: Tenant, request_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{stack.edge_url}/v1/receipts/{request_id}",
        headers={"authorization": f"Bearer {tenant.api_key}"},
        timeout=10,
    )
    assert response.status_code == 200
    found: dict[str, Any] = response.json()
    return found


def _settled_at(stack: Stack, request_id: str) -> datetime:
    at: datetime = io.fetchval(
        stack.dsn,
        "SELECT occurred_at FROM ledger.journal WHERE type = 'ledger.hold_settled'"
        " AND body -> 'payload' ->> 'request_id' = $1",
        request_id,
    )
    return at


def _by_hand(receipt: dict[str, Any]) -> int:
    """The receipt's tokens at the new prices, rounded up once."""
    exact = sum(
        c["tokens"] * NEW_MICRO["input" if c["class"] in INPUT_CLASSES else "output"]
        for c in receipt["token_classes"]
    )
    return -(-exact // 1_000_000)


def _journal(stack: Stack, event_type: str, correction_id: str) -> list[dict[str, Any]]:
    rows = io.fetch(
        stack.dsn,
        "SELECT event_id, account_id, body -> 'payload' AS payload FROM ledger.journal"
        " WHERE type = $1 AND body -> 'payload' ->> 'correction_id' = $2 ORDER BY seq",
        event_type,
        correction_id,
    )
    return [{**r, "payload": orjson.loads(r["payload"])} for r in rows]


def _journal_refusals(stack: Stack, account_id: str) -> list[dict[str, Any]]:
    rows = io.fetch(
        stack.dsn,
        "SELECT body -> 'payload' AS payload FROM ledger.journal"
        " WHERE type = 'ledger.correction_refused' AND account_id = $1",
        account_id,
    )
    return [{"payload": orjson.loads(r["payload"])} for r in rows]


def _routes(stack: Stack) -> tuple[str, str, str]:
    """A channel to re-rate, another in the same bucket, and a model routed to each."""
    with admin_client(stack) as admin:
        rerated = new_channel(admin, stack, "openai-direct", bucket="credit", prices=OLD)
        other = new_channel(admin, stack, "openai-direct", bucket="credit", prices=OLD)
        model_a = new_model(admin, [{"channel_id": rerated, "upstream_model": "gpt-4o-mini"}])
        model_b = new_model(admin, [{"channel_id": other, "upstream_model": "gpt-4o-mini"}])
    return rerated, model_a, model_b


def _verify(stack: Stack, database: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": stack.dsn, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "tollway.cli", "ledger", "verify", "--database", database],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _resend(stack: Stack, correction: str, account_id: str) -> None:
    """The account's command on the log again under new event ids: as it was, and changed."""
    texts = io.fetchval(
        stack.dsn,
        "SELECT envelopes FROM edge.rerate_requests WHERE correction_id = $1",
        correction,
    )
    commands = [decode(t.encode()) for t in texts]
    [command] = [c for c in commands if c.payload.account_id == account_id]
    changed = command.payload.model_copy(update={"allow_negative": True})
    io.publish(stack.bootstrap, [make(command.payload), make(changed)], topics.REQUESTS)


def _fence(stack: Stack, tenant: Tenant) -> None:
    """A top-up behind everything published so far for the account: once it is applied, so is
    anything before it in the account's partition."""
    key = uuid.uuid4().hex
    with admin_client(stack) as admin:
        answer = admin.post(
            "/topups",
            json={
                "account_id": tenant.account_id,
                "bucket": "credit",
                "unit": "credit",
                "amount": "0.000001",
                "idempotency_key": key,
            },
        )
        assert answer.status_code == 202, answer.text
        url = answer.json()["status_url"].removeprefix("/admin/v1")
        wait_for(lambda: admin.get(url).json()["status"] == "applied", what="the fence top-up")


Receipts = dict[str, list[dict[str, Any]]]


def _check_preview(preview: dict[str, dict[str, Any]], mine: Receipts) -> None:
    """Per account: its requests, what they were charged, their tokens at the new price."""
    assert set(preview) == set(mine)
    for account_id, receipts in mine.items():
        charged = sum(r["charged_micro"] for r in receipts)
        rerated = sum(_by_hand(r) for r in receipts)
        assert preview[account_id]["requests"] == len(receipts)
        assert preview[account_id]["charged_micro"] == charged
        assert preview[account_id]["rerated_micro"] == rerated
        assert preview[account_id]["difference_micro"] == rerated - charged > 0
        assert preview[account_id]["difference"] == f"0.{rerated - charged:06d}"
        assert preview[account_id]["flagged"] is False


def _check_booked(
    stack: Stack,
    channel: str,
    correction: str,
    mine: Receipts,
    preview: dict[str, dict[str, Any]],
    outcome: dict[str, Any],
) -> None:
    """The ledger booked, per account, what the dry run showed: one entry per receipt."""
    results = {a["account_id"]: a for a in outcome["accounts"]}
    entries = _journal(stack, "ledger.rerated", correction)
    for account_id, receipts in mine.items():
        assert results[account_id]["status"] == "applied"
        for field in ("requests", "charged_micro", "rerated_micro", "difference_micro"):
            assert results[account_id][field] == preview[account_id][field]
        booked = [e for e in entries if e["account_id"] == account_id]
        assert sorted(e["payload"]["request_id"] for e in booked) == sorted(
            r["request_id"] for r in receipts
        )
        assert (
            sum(e["payload"]["amount_micro"] for e in booked)
            == (preview[account_id]["difference_micro"])
        )
        for e in booked:
            assert sum(p["amount"] for p in e["payload"]["postings"]) == 0
            assert {p["account"] for p in e["payload"]["postings"]} == {
                f"{account_id}/credit",
                f"system/revenue/{channel}",
            }


def _check_receipts(
    stack: Stack, tenants: dict[str, Tenant], inside: list[dict[str, Any]], correction: str
) -> None:
    """Each re-rated receipt keeps its original charge and shows the entry and its price."""
    for original in inside:
        now = _receipt(stack, tenants[original["account_id"]], original["request_id"])
        [entry] = now["rerates"]
        assert now["charged_micro"] == original["charged_micro"]
        assert now["rerated_charge_micro"] == _by_hand(original)
        assert entry["correction_id"] == correction
        assert entry["price_per_1m_micro"]["input"] == NEW_MICRO["input"]
        assert entry["price_per_1m_micro"]["output"] == NEW_MICRO["output"]
        assert entry["amount_micro"] == _by_hand(original) - original["charged_micro"]


def _check_listed(
    stack: Stack, tenant: Tenant, start: datetime, channel: str, correction: str
) -> set[str]:
    """The statement's CSV lists the entries; the audit trail has the correction. Returns the
    request ids of the CSV's re-rating rows."""
    with admin_client(stack) as admin:
        exported = admin.get(
            f"/ledger/accounts/{tenant.account_id}/statement",
            params={"from": start.isoformat(), "format": "csv"},
        )
        trail = admin.get("/audit", params={"kind": "ledger", "actor": "finance-test"}).json()
    [audited] = [r for r in trail["data"] if r["target"] == f"{channel}/credit"]
    assert audited["action"] == "ledger.rerate"
    assert audited["after"]["correction_id"] == correction
    rows = list(csv.DictReader(textio.StringIO(exported.text)))
    return {r["request_id"] for r in rows if r["type"] == "ledger.rerated"}


def test_a_rerating_changes_exactly_the_period_receipts_of_the_channel_once(
    stack, tenant_factory
) -> None:
    channel, model_a, model_b = _routes(stack)
    first, second = tenant_factory({"credit": "10"}), tenant_factory({"credit": "10"})
    tenants = {first.account_id: first, second.account_id: second}
    before = _served(stack, first, model_a)
    inside = [_served(stack, first, model_a), _served(stack, second, model_a)]
    other_channel = _served(stack, first, model_b)
    inside.append(_served(stack, first, model_a))
    after = _served(stack, first, model_a)
    start = _settled_at(stack, inside[0]["request_id"])
    correction = f"fix-{uuid.uuid4().hex[:8]}"
    body = {
        "correction_id": correction,
        "channel_id": channel,
        "bucket": "credit",
        "from": start.isoformat(),
        "to": _settled_at(stack, after["request_id"]).isoformat(),
        "prices": NEW,
        "reason": "the channel's price was mistyped for the period",
    }
    mine = {first.account_id: [inside[0], inside[2]], second.account_id: [inside[1]]}
    balances = {a: io.balance(stack.dsn, a) for a in tenants}

    dry = _post(stack, {**body, "dry_run": True})
    assert dry.status_code == 200, dry.text
    preview = {a["account_id"]: a for a in dry.json()["accounts"]}
    _check_preview(preview, mine)
    assert {a: io.balance(stack.dsn, a) for a in tenants} == balances  # a dry run books nothing

    applied = _post(stack, body)
    assert applied.status_code == 202, applied.text
    outcome = _done(stack, correction)
    again = _post(stack, body)
    _resend(stack, correction, first.account_id)
    for tenant in tenants.values():
        _fence(stack, tenant)  # anything sent again is applied by now

    assert again.status_code == 202
    assert again.json()["commands"] == applied.json()["commands"]
    _check_booked(stack, channel, correction, mine, preview, outcome)
    for account_id in tenants:
        # The fence top-up added one micro; the correction moved exactly its difference, once.
        expected = balances[account_id] - preview[account_id]["difference_micro"] + 1
        assert io.balance(stack.dsn, account_id) == expected
    [reused] = [
        r
        for r in _journal_refusals(stack, first.account_id)
        if r["payload"]["idempotency_key"] == correction
    ]
    assert reused["payload"]["code"] == "idempotency_key_reused"
    _check_receipts(stack, tenants, inside, correction)
    for untouched in (before, other_channel, after):
        now = _receipt(stack, first, untouched["request_id"])
        assert "rerates" not in now
        assert now["charged_micro"] == untouched["charged_micro"]
    listed = _check_listed(stack, first, start, channel, correction)
    assert listed == {inside[0]["request_id"], inside[2]["request_id"]}

    conflict = _post(stack, {**body, "prices": {"input": "4", "output": "12"}})
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    assert conflict.json()["error"]["original"]["prices_per_1m_micro"]["input"] == 3_000_000

    done = _verify(stack, "verify_rerate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   live_digest_equals_replay" in done.stdout
    replayed = io.fetchval(
        replay.target_dsn(stack.dsn, "verify_rerate"),
        "SELECT count(*) FROM ledger.rerates WHERE correction_id = $1",
        correction,
    )
    assert replayed == len(inside)


def _cli(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TOLLWAY_BASE_URL": f"{stack.edge_url}/v1",
        "TOLLWAY_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    return subprocess.run(
        [sys.executable, "-m", "tollway.cli", "ledger", "rerate", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_rerating_below_zero_is_flagged_and_skipped_unless_the_operator_allows_it(
    stack, tenant_factory
) -> None:
    channel, model_a, _ = _routes(stack)
    poor = tenant_factory({"credit": "0.001"})
    charged = _served(stack, poor, model_a)
    start = _settled_at(stack, charged["request_id"])
    end = datetime.now(UTC)
    common = [
        "--channel", channel, "--bucket", "credit", "--from", start.isoformat(),
        "--to", end.isoformat(), "--input", "1000", "--output", "1000",
        "--reason", "the period was billed at a placeholder price",
    ]  # fmt: skip
    refused_id, allowed_id = f"neg-{uuid.uuid4().hex[:8]}", f"neg-{uuid.uuid4().hex[:8]}"
    balance = io.balance(stack.dsn, poor.account_id)

    dry = _cli(stack, "--dry-run", "--correction-id", refused_id, *common)
    refused = _cli(stack, "--apply", "--correction-id", refused_id, *common)
    cost = _post(
        stack,
        {
            "correction_id": uuid.uuid4().hex,
            "side": "cost",
            "channel_id": channel,
            "bucket": "credit",
            "from": start.isoformat(),
            "to": end.isoformat(),
            "prices": NEW,
            "reason": "upstream cost",
        },
    )

    assert dry.returncode == 0, dry.stderr
    [flagged] = orjson.loads(dry.stdout)["accounts"]
    assert flagged["account_id"] == poor.account_id
    assert flagged["flagged"] is True
    assert flagged["code"] == "balance_below_owed"
    assert flagged["balance_after_micro"] == balance - flagged["difference_micro"] < 0
    assert refused.returncode == 0, refused.stderr
    [skipped] = orjson.loads(refused.stdout)["outcome"]["accounts"]
    assert skipped["status"] == "refused"
    assert skipped["code"] == "balance_below_owed"
    assert io.balance(stack.dsn, poor.account_id) == balance
    # The cost side takes a cost price, not a bucket and sell prices: said, never guessed.
    assert cost.status_code == 400
    assert cost.json()["error"]["param"] == "bucket"
    assert "cost side takes 'cost'" in cost.json()["error"]["message"]

    allowed = _cli(
        stack,
        "--apply",
        "--correction-id",
        allowed_id,
        "--allow-negative",
        poor.account_id,
        *common,
    )

    assert allowed.returncode == 0, allowed.stderr
    [booked] = orjson.loads(allowed.stdout)["outcome"]["accounts"]
    assert booked["status"] == "applied"
    assert booked["difference_micro"] == flagged["difference_micro"]
    assert io.balance(stack.dsn, poor.account_id) == flagged["balance_after_micro"] < 0

    # A refund of the re-rated charge may give back what it costs now, and not one micro more.
    costs_now = charged["charged_micro"] + booked["difference_micro"]
    _refund(stack, poor, charged["request_id"], costs_now)
    wanted = flagged["balance_after_micro"] + costs_now
    wait_for(lambda: io.balance(stack.dsn, poor.account_id) == wanted, what="the refund")
    refusals = _journal_refusals(stack, poor.account_id)
    too_much = [r for r in refusals if "left to reverse" in r["payload"]["reason"]]
    assert [r["payload"]["idempotency_key"] for r in too_much] == ["too-much"]


def _refund(stack: Stack, tenant: Tenant, request_id: str, costs_now: int) -> None:
    """Ask for one micro more than ``costs_now`` back, then for exactly that."""
    original = io.fetchval(
        stack.dsn,
        "SELECT event_id FROM ledger.journal WHERE type = 'ledger.hold_settled'"
        " AND body -> 'payload' ->> 'request_id' = $1",
        request_id,
    )
    with admin_client(stack) as admin:
        for key, amount in (("too-much", costs_now + 1), ("all", costs_now)):
            answer = admin.post(
                "/ledger/reversals",
                json={
                    "account_id": tenant.account_id,
                    "original_event_id": original,
                    "amount": f"{amount // 1_000_000}.{amount % 1_000_000:06d}",
                    "reason": "refund after the correction",
                    "idempotency_key": key,
                },
            )
            assert answer.status_code == 202, answer.text
