"""Tokens a failed attempt consumed are upstream loss: on the books (double entry, system
accounts) and on the receipt, never charged to the tenant.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import orjson
import pytest

from tests.conftest import wait_for
from tests.integration import ledger_io as io
from tollway.events import topics
from tollway.events.envelope import make
from tollway.events.gateway import AttemptFinished
from tollway.events.pricing import Usage, cost_micro

if TYPE_CHECKING:
    from typing import Any

pytestmark = pytest.mark.integration


def test_a_failed_attempts_tokens_are_upstream_loss_not_a_charge(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "5"})
    env = io.request(tenant.account_id, stack.config.edge_id, deadline_in=timedelta(minutes=5))
    usage = Usage(input_tokens=400, output_tokens=250)
    failed = make(
        AttemptFinished(
            request_id=env.payload.request_id,
            account_id=tenant.account_id,
            attempt=9,
            candidate=io.CHANNEL,
            outcome="timeout",
            latency_ms=30_000,
            usage=usage,
        )
    )
    io.publish(stack.bootstrap, [env], topics.REQUESTS)
    wait_for(lambda: io.journal_types(stack.dsn, env.payload.request_id), what="the hold")
    io.publish(stack.bootstrap, [failed, failed], topics.USAGE)

    wait_for(
        lambda: (
            "ledger.upstream_loss_recorded" in io.journal_types(stack.dsn, env.payload.request_id)
        ),
        what="the upstream loss",
    )
    loss = cost_micro(usage, io.CHANNEL.price)
    rows: list[dict[str, Any]] = io.fetch(
        stack.dsn,
        "SELECT p.account, p.amount FROM ledger.postings p JOIN ledger.journal j USING (event_id)"
        " WHERE j.cause_id = $1",
        failed.id,
    )
    assert {r["account"]: r["amount"] for r in rows} == {
        "system/upstream_loss": -loss,
        "system/upstream_cost/openai-direct": loss,
    }
    raw = io.fetchval(
        stack.dsn, "SELECT body FROM ledger.receipts WHERE request_id = $1", env.payload.request_id
    )
    assert orjson.loads(raw)["upstream_loss_micro"] == loss
    losses = io.journal_types(stack.dsn, env.payload.request_id)
    assert losses.count("ledger.upstream_loss_recorded") == 1  # the redelivery changed nothing
