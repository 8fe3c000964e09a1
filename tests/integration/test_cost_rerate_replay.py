"""A cost re-rating is decided at its place in the tenant's partition: cost re-ratings racing the
attempts of their own period (two topics, no order between them) re-rate whatever was booked
before each of them live, each booking at most once per price, and a replay decides the same.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import wait_for
from tests.integration import ledger_io as io
from tests.integration.test_rerate_replay import _count, _hold_ids, _verify
from tollway.events import topics
from tollway.events.envelope import make
from tollway.events.gateway import AttemptFinished, CostRerateRequested
from tollway.events.pricing import CostPrice, Usage, upstream_cost_micro

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

OLD = CostPrice(currency="USD", input=100_000, output=400_000, per_request=7)
NEW = CostPrice(currency="USD", input=300_000, output=900_000)
USAGE = Usage(input_tokens=1_000, output_tokens=500)


@pytest.fixture
def router_stopped(stack: Any) -> Iterator[None]:
    """No router: the test plays it, publishing the attempts itself."""
    stack.kill("router")
    try:
        yield
    finally:
        stack.spawn("router", ["-m", "tollway.router"])


def _attempt(request_id: str, account_id: str, channel_id: str) -> Any:
    candidate = io.CHANNEL.model_copy(update={"channel_id": channel_id, "cost": OLD})
    return make(
        AttemptFinished(
            request_id=request_id,
            account_id=account_id,
            attempt=1,
            candidate=candidate,
            outcome="ok",
            status=200,
            latency_ms=5,
            usage=USAGE,
        )
    )


def _rerate(account_id: str, channel_id: str, n: int, start: datetime) -> Any:
    return make(
        CostRerateRequested(
            account_id=account_id,
            correction_id=f"cost-race-{n}",
            channel_id=channel_id,
            period_from=start,
            period_to=start + timedelta(hours=1),
            cost=NEW,
            reason="raced with its period's attempts",
        )
    )


def test_cost_rerates_racing_their_periods_attempts_are_replayed_as_decided(
    stack, tenant_factory, router_stopped
) -> None:
    tenant = tenant_factory({"credit": "10"})
    channel = f"t-cost-race-{uuid.uuid4().hex[:6]}"
    requests = [
        io.request(tenant.account_id, stack.config.edge_id, deadline_in=timedelta(minutes=10))
        for _ in range(8)
    ]
    ids = [r.payload.request_id for r in requests]
    io.publish(stack.bootstrap, requests, topics.REQUESTS)
    holds = wait_for(lambda: (h := _hold_ids(stack, ids)) and len(h) == len(ids) and h)
    start = datetime.now(UTC) - timedelta(minutes=1)
    attempts = [_attempt(i, tenant.account_id, channel) for i in ids]

    io.publish(stack.bootstrap, attempts[:2], topics.USAGE)
    wait_for(lambda: _count(stack, tenant.account_id, "ledger.upstream_cost_booked") == 2)
    # Then a cost re-rating on gw.requests and two attempts on gw.usage, four times: the ledger
    # reads the two topics in no fixed order, so each re-rating sees some of the bookings.
    for n in range(4):
        io.publish(
            stack.bootstrap, [_rerate(tenant.account_id, channel, n, start)], topics.REQUESTS
        )
        io.publish(stack.bootstrap, attempts[2 * n + 2 : 2 * n + 4], topics.USAGE)
    wait_for(
        lambda: (
            _count(stack, tenant.account_id, "ledger.upstream_cost_rerate_applied") == 4
            and _count(stack, tenant.account_id, "ledger.upstream_cost_booked") == len(ids)
        ),
        what="every booking and every cost re-rating",
    )
    finishes = [io.served(r.payload, holds[r.payload.request_id], USAGE) for r in requests]
    io.publish(stack.bootstrap, finishes, topics.USAGE)
    wait_for(lambda: _count(stack, tenant.account_id, "ledger.hold_settled") == len(ids))

    old, new = upstream_cost_micro(USAGE, OLD), upstream_cost_micro(USAGE, NEW)
    entries = io.fetch(
        stack.dsn,
        "SELECT cost_event_id, amount FROM ledger.upstream_cost_rerates WHERE channel_id = $1",
        channel,
    )
    assert len(entries) >= 2  # the first re-rating came after the first two bookings
    assert len({e["cost_event_id"] for e in entries}) == len(entries)  # each booking once
    assert {e["amount"] for e in entries} == {new - old}
    expense = io.fetchval(
        stack.dsn,
        "SELECT amount FROM ledger.balances WHERE account = $1 AND unit = 'USD'",
        f"system/upstream_expense/{channel}",
    )
    assert expense == len(ids) * old + len(entries) * (new - old)

    done = _verify(stack)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   live_digest_equals_replay" in done.stdout
