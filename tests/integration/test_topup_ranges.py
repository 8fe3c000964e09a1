"""Top-ups the ledger refuses are journaled, never dead-lettered, and block no one.

A top-up that would have taken the shared ``system/topup`` source past the 64-bit range was
dead-lettered after its 202, every later top-up in that unit (of every tenant) with it, and a
replay, applying partitions in another order, disagreed with the live ledger. Now each tenant
draws on its own source, every range is checked against the account's own partition only, and
a refusal is a journal entry like any other: the same live and on a replay.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import orjson
import pytest

from tests.conftest import wait_for
from tests.integration import ledger_io as io
from tollway.events import topics
from tollway.events.envelope import make
from tollway.events.gateway import TopUpRequested
from tollway.events.pricing import MAX_AMOUNT_MICRO, MAX_BALANCE_MICRO, MICRO

pytestmark = pytest.mark.integration

BIGINT = 2**63 - 1


def _topup(account_id: str, amount_micro: int, key: str, unit: str = "credit") -> Any:
    return make(
        TopUpRequested(
            account_id=account_id,
            bucket="credit",
            unit=unit,
            amount_micro=amount_micro,
            idempotency_key=key,
        )
    )


def _outcome(stack: Any, cause_id: str) -> dict[str, Any] | None:
    rows = io.fetch(
        stack.dsn,
        "SELECT type, body -> 'payload' AS payload FROM ledger.journal WHERE cause_id = $1",
        cause_id,
    )
    return {**rows[0], "payload": orjson.loads(rows[0]["payload"])} if rows else None


def _verify(stack: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": stack.dsn, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "tollway.cli", "ledger", "verify", "--database", "topup_ranges"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_a_huge_top_up_is_refused_in_the_journal_and_blocks_no_other_tenant(
    stack, tenant_factory
) -> None:
    whale, other = tenant_factory({"credit": "1"}), tenant_factory({"credit": "1"})
    key = uuid.uuid4().hex
    # Fits a bigint on its own, so the old ledger applied it and its shared source then
    # overflowed on every later top-up in the unit; beyond the bigint range too.
    near_max = _topup(whale.account_id, BIGINT - 10 * MICRO, f"{key}-near")
    beyond = _topup(whale.account_id, BIGINT + 1, f"{key}-beyond")
    # Each within the single-amount range; the last takes the bucket past the balance range.
    many = MAX_BALANCE_MICRO // MAX_AMOUNT_MICRO
    fits = [_topup(whale.account_id, MAX_AMOUNT_MICRO, f"{key}-fits-{i}") for i in range(many)]
    wrong_unit = _topup(whale.account_id, MICRO, f"{key}-unit", unit="USD")
    normal = _topup(other.account_id, 10 * MICRO, f"{key}-normal")
    io.publish(stack.bootstrap, [near_max, beyond, *fits, wrong_unit], topics.REQUESTS)
    io.publish(stack.bootstrap, [normal], topics.REQUESTS)

    applied = wait_for(lambda: _outcome(stack, normal.id), what="the other tenant's top-up")
    refusals = {
        env.id: wait_for(lambda env=env: _outcome(stack, env.id), what="a refusal")
        for env in (near_max, beyond, wrong_unit, fits[-1])
    }
    assert applied["type"] == "ledger.topped_up"
    assert io.balance(stack.dsn, other.account_id) == 11 * MICRO
    codes = {cause: r["payload"]["code"] for cause, r in refusals.items()}
    assert codes == {
        near_max.id: "amount_out_of_range",
        beyond.id: "amount_out_of_range",
        wrong_unit.id: "unit_mismatch",
        fits[-1].id: "balance_out_of_range",
    }
    assert all(r["type"] == "ledger.topup_refused" for r in refusals.values())
    for env in fits[:-1]:
        assert wait_for(lambda env=env: _outcome(stack, env.id))["type"] == "ledger.topped_up"
    credited = (many - 1) * MAX_AMOUNT_MICRO + MICRO
    assert io.balance(stack.dsn, whale.account_id) == credited
    sources = io.fetch(
        stack.dsn,
        "SELECT account, amount FROM ledger.balances WHERE account = ANY($1::text[])",
        [f"system/topup/{whale.account_id}", f"system/topup/{other.account_id}"],
    )
    assert {r["account"]: r["amount"] for r in sources} == {
        f"system/topup/{whale.account_id}": -credited,
        f"system/topup/{other.account_id}": -11 * MICRO,
    }

    done = _verify(stack)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   live_digest_equals_replay" in done.stdout
