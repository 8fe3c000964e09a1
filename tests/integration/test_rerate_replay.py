"""A re-rating is decided at its place in the account's partition: re-ratings racing the
settlements of their own period (two topics, no order between them) re-rate whatever was settled
before each of them live, at most once per charge, and a replay of the log decides the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import wait_for
from tests.integration import ledger_io as io
from tollway.events import topics
from tollway.events.envelope import make
from tollway.events.gateway import RerateRequested
from tollway.events.pricing import Price, Usage, cost_micro

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

NEW = Price(input=2_000_000, output=7_000_000)
USAGE = Usage(input_tokens=1_000, output_tokens=500)


@pytest.fixture
def router_stopped(stack: Any) -> Iterator[None]:
    """No router: the test plays it, publishing the finishes itself."""
    stack.kill("router")
    try:
        yield
    finally:
        stack.spawn("router", ["-m", "tollway.router"])


def _hold_ids(stack: Any, request_ids: list[str]) -> dict[str, str]:
    rows = io.fetch(
        stack.dsn,
        "SELECT request_id, hold_id FROM ledger.holds WHERE request_id = ANY($1::text[])",
        request_ids,
    )
    return {r["request_id"]: r["hold_id"] for r in rows}


def _count(stack: Any, account_id: str, event_type: str) -> int:
    return int(
        io.fetchval(
            stack.dsn,
            "SELECT count(*) FROM ledger.journal WHERE account_id = $1 AND type = $2",
            account_id,
            event_type,
        )
    )


def _rerate(account_id: str, n: int, start: datetime, end: datetime) -> Any:
    return make(
        RerateRequested(
            account_id=account_id,
            correction_id=f"race-{n}",
            channel_id=io.CHANNEL.channel_id,
            bucket="credit",
            period_from=start,
            period_to=end,
            prices=NEW,
            reason="raced with its period's settlements",
        )
    )


def _verify(stack: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": stack.dsn, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "tollway.cli", "ledger", "verify", "--database", "verify_race"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_rerates_racing_their_periods_settlements_are_replayed_as_decided(
    stack, tenant_factory, router_stopped
) -> None:
    tenant = tenant_factory({"credit": "10"})
    requests = [
        io.request(tenant.account_id, stack.config.edge_id, deadline_in=timedelta(minutes=10))
        for _ in range(8)
    ]
    ids = [r.payload.request_id for r in requests]
    io.publish(stack.bootstrap, requests, topics.REQUESTS)
    holds = wait_for(lambda: (h := _hold_ids(stack, ids)) and len(h) == len(ids) and h)
    start = datetime.now(UTC) - timedelta(minutes=1)
    end = start + timedelta(hours=1)
    finishes = [io.served(r.payload, holds[r.payload.request_id], USAGE) for r in requests]

    io.publish(stack.bootstrap, finishes[:2], topics.USAGE)
    wait_for(lambda: _count(stack, tenant.account_id, "ledger.hold_settled") == 2)
    # Then a re-rating on gw.requests and two finishes on gw.usage, four times: the ledger reads
    # the two topics in no fixed order, so each re-rating sees some of the settlements before it.
    for n in range(4):
        io.publish(stack.bootstrap, [_rerate(tenant.account_id, n, start, end)], topics.REQUESTS)
        io.publish(stack.bootstrap, finishes[2 * n + 2 : 2 * n + 4], topics.USAGE)
    wait_for(
        lambda: (
            _count(stack, tenant.account_id, "ledger.rerate_applied") == 4
            and _count(stack, tenant.account_id, "ledger.hold_settled") == len(ids)
        ),
        what="every settlement and every re-rating",
    )

    old, new = cost_micro(USAGE, io.CHANNEL.price), cost_micro(USAGE, NEW)
    entries = io.fetch(
        stack.dsn,
        "SELECT request_id, amount FROM ledger.rerates WHERE account_id = $1",
        tenant.account_id,
    )
    assert len(entries) >= 2  # the first re-rating came after the first two settlements
    assert len({e["request_id"] for e in entries}) == len(entries)  # each charge at most once
    assert {e["amount"] for e in entries} == {new - old}
    funded = 10_000_000
    assert io.balance(stack.dsn, tenant.account_id) == funded - len(ids) * old - len(entries) * (
        new - old
    )

    done = _verify(stack)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   live_digest_equals_replay" in done.stdout
