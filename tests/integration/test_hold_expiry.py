"""Holds end (invariant 7): an orphaned hold expires on the ledger's clock tick, carried in the
log; a request served after its hold expired is still charged (invariant 8); a running request
can extend its hold.

The router is stopped while these run so that nothing but the ledger's clock closes the holds.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from tests.conftest import wait_for
from tests.integration import ledger_io as io
from tollway.events import topics
from tollway.events.envelope import make
from tollway.events.gateway import HoldExtensionRequested
from tollway.events.pricing import Usage, cost_micro

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration


@pytest.fixture
def router_stopped(stack: Any) -> Iterator[None]:
    stack.kill("router")
    try:
        yield
    finally:
        stack.spawn("router", ["-m", "tollway.router"])


def _hold(stack: Any, request_id: str) -> dict[str, Any] | None:
    rows = io.fetch(stack.dsn, "SELECT * FROM ledger.holds WHERE request_id = $1", request_id)
    return rows[0] if rows else None


def _receipt(stack: Any, request_id: str) -> dict[str, Any]:
    raw = io.fetchval(
        stack.dsn, "SELECT body FROM ledger.receipts WHERE request_id = $1", request_id
    )
    body: dict[str, Any] = orjson.loads(raw)
    return body


def test_an_orphaned_hold_expires_and_a_late_served_finish_is_still_charged(
    stack, tenant_factory, router_stopped
) -> None:
    tenant = tenant_factory({"credit": "5"})
    funded = io.balance(stack.dsn, tenant.account_id)
    env = io.request(tenant.account_id, stack.config.edge_id, deadline_in=-timedelta(hours=1))
    io.publish(stack.bootstrap, [env], topics.REQUESTS)

    hold = wait_for(
        lambda: (h := _hold(stack, env.payload.request_id)) and h["status"] == "expired" and h,
        what="the hold to expire on a clock tick",
    )
    assert io.journal_types(stack.dsn, env.payload.request_id) == [
        "ledger.hold_placed",
        "ledger.hold_expired",
    ]
    assert io.balance(stack.dsn, tenant.account_id) == funded
    assert io.balance(stack.dsn, tenant.account_id, "credit/held") == 0
    receipt = _receipt(stack, env.payload.request_id)
    assert receipt["status"] == "expired"
    assert receipt["hold"]["status"] == "expired"
    assert receipt["balance_after_micro"] == funded

    usage = Usage(input_tokens=120, output_tokens=300)
    io.publish(stack.bootstrap, [io.served(env.payload, hold["hold_id"], usage)], topics.USAGE)

    wait_for(
        lambda: "ledger.late_captured" in io.journal_types(stack.dsn, env.payload.request_id),
        what="the late capture",
    )
    cost = cost_micro(usage, io.CHANNEL.price)
    assert io.balance(stack.dsn, tenant.account_id) == funded - cost
    receipt = _receipt(stack, env.payload.request_id)
    assert receipt["late_capture"] is True
    assert receipt["charged_micro"] == cost
    assert receipt["balance_after_micro"] == funded - cost
    again = io.served(env.payload, hold["hold_id"], usage)
    io.publish(stack.bootstrap, [again], topics.USAGE)
    wait_for(
        lambda: io.fetchval(
            stack.dsn, "SELECT 1 FROM ledger.applied_events WHERE event_id = $1", again.id
        ),
        what="the ledger to consume the second finish",
    )
    assert io.balance(stack.dsn, tenant.account_id) == funded - cost
    assert io.journal_types(stack.dsn, env.payload.request_id).count("ledger.late_captured") == 1


def test_a_hold_within_its_deadline_is_not_expired_and_can_be_extended(
    stack, tenant_factory, router_stopped
) -> None:
    tenant = tenant_factory({"credit": "5"})
    env = io.request(tenant.account_id, stack.config.edge_id, deadline_in=timedelta(minutes=10))
    io.publish(stack.bootstrap, [env], topics.REQUESTS)
    hold = wait_for(lambda: _hold(stack, env.payload.request_id), what="the hold")
    later = hold["deadline_at"] + timedelta(hours=1)
    earlier = hold["deadline_at"] - timedelta(minutes=5)
    asks = [
        make(
            HoldExtensionRequested(
                request_id=env.payload.request_id,
                account_id=tenant.account_id,
                hold_id=hold["hold_id"],
                deadline_at=when,
            )
        )
        for when in (earlier, later)
    ]
    io.publish(stack.bootstrap, asks, topics.USAGE)

    wait_for(
        lambda: "ledger.hold_extended" in io.journal_types(stack.dsn, env.payload.request_id),
        what="the extension",
    )
    extended = _hold(stack, env.payload.request_id)
    assert extended is not None
    assert extended["status"] == "open"
    assert extended["deadline_at"] == later
    assert io.journal_types(stack.dsn, env.payload.request_id).count("ledger.hold_extended") == 1
    assert _receipt(stack, env.payload.request_id)["hold"]["extensions"] == 1
