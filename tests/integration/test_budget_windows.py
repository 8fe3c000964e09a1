"""Budget windows run on event time: requests published with chosen ``occurred_at`` drive a
rolling minute window through refusal and back, with no sleeping and no wall clock.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from tests.conftest import wait_for
from tests.flat_routes import DIRECT_MICRO, MODEL, candidates, flat_model
from tollway.events import topics
from tollway.events.envelope import Envelope, Trace, encode, make
from tollway.events.gateway import RequestReceived, TopUpRequested
from tollway.events.limits import BudgetSet

pytestmark = pytest.mark.integration
__all__ = ["flat_model"]


async def _publish(bootstrap: str, envelopes: list[Envelope[Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for e in envelopes:
            await producer.send_and_wait(
                topics.REQUESTS, value=encode(e), key=e.payload.account_id.encode()
            )
    finally:
        await producer.stop()


def _request(stack: Any, account: str, at: datetime) -> Envelope[RequestReceived]:
    request_id = "req_" + uuid.uuid4().hex
    event = RequestReceived(
        request_id=request_id,
        edge_id=stack.config.edge_id,
        account_id=account,
        key_id="key-w",
        project_id="proj-w",
        catalog_model=MODEL,
        body={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        plan=candidates()[:1],
        estimated_input_tokens=10,
        max_output_tokens=1,
        # The router needs a live deadline; the budget only ever looks at occurred_at.
        deadline_at=datetime.now(UTC) + timedelta(seconds=60),
    )
    return make(event, trace=Trace(request_id=request_id), occurred_at=at)


async def _statuses(dsn: str, request_ids: list[str]) -> dict[str, tuple[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT request_id, status, body->>'limit' AS lim FROM ledger.receipts"
            " WHERE request_id = ANY($1::text[])",
            request_ids,
        )
        return {r["request_id"]: (r["status"], r["lim"]) for r in rows}
    finally:
        await conn.close()


def test_rolling_minute_budget_refuses_then_allows_again_in_event_time(stack, flat_model) -> None:
    account = f"win-{uuid.uuid4().hex[:8]}"
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    topup = make(
        TopUpRequested(
            account_id=account,
            bucket="credit",
            unit="credit",
            amount_micro=1_000_000,
            idempotency_key=f"{account}-seed",
        ),
        occurred_at=t0 - timedelta(seconds=5),
    )
    budget = make(
        BudgetSet(
            budget_id=f"bud-{account}",
            account_id=account,
            name="per-minute",
            scope="account",
            scope_id=account,
            window="minute",
            unit="credit",
            bucket="credit",
            amount=DIRECT_MICRO,  # one call per rolling minute
        ),
        occurred_at=t0 - timedelta(seconds=1),
    )
    first = _request(stack, account, t0)
    too_soon = _request(stack, account, t0 + timedelta(seconds=30))
    next_minute = _request(stack, account, t0 + timedelta(seconds=61))
    ids = [e.payload.request_id for e in (first, too_soon, next_minute)]

    asyncio.run(_publish(stack.bootstrap, [topup, budget, first, too_soon, next_minute]))

    seen = wait_for(
        lambda: (
            (s := asyncio.run(_statuses(stack.dsn, ids)))
            and all(v[0] in {"settled", "rejected"} for v in s.values())
            and len(s) == 3
            and s
        ),
        what="three decided receipts",
    )
    assert seen[ids[0]] == ("settled", None)
    assert seen[ids[1]] == ("rejected", "budget:per-minute")
    assert seen[ids[2]] == ("settled", None)


def test_daily_token_budget_resets_at_midnight_in_its_time_zone(stack, flat_model) -> None:
    account = f"day-{uuid.uuid4().hex[:8]}"
    tokyo = ZoneInfo("Asia/Tokyo")
    midnight = datetime.now(tokyo).replace(hour=0, minute=0, second=0, microsecond=0)
    midnight -= timedelta(days=1)  # a Tokyo midnight safely in the past
    topup = make(
        TopUpRequested(
            account_id=account,
            bucket="credit",
            unit="credit",
            amount_micro=1_000_000,
            idempotency_key=f"{account}-seed",
        ),
        occurred_at=midnight - timedelta(minutes=5),
    )
    budget = make(
        BudgetSet(
            budget_id=f"bud-{account}",
            account_id=account,
            name="tokens-per-day",
            scope="key",
            scope_id="key-w",
            window="day",
            timezone="Asia/Tokyo",
            unit="tokens",
            amount=11,  # one call's worst case: 10 estimated input + 1 output token
        ),
        occurred_at=midnight - timedelta(minutes=4),
    )
    late = _request(stack, account, midnight - timedelta(seconds=60))
    later = _request(stack, account, midnight - timedelta(seconds=30))
    next_day = _request(stack, account, midnight + timedelta(seconds=30))
    ids = [e.payload.request_id for e in (late, later, next_day)]

    asyncio.run(_publish(stack.bootstrap, [topup, budget, late, later, next_day]))

    seen = wait_for(
        lambda: (
            (s := asyncio.run(_statuses(stack.dsn, ids)))
            and all(v[0] in {"settled", "rejected"} for v in s.values())
            and len(s) == 3
            and s
        ),
        what="three decided receipts",
    )
    assert seen[ids[0]] == ("settled", None)
    assert seen[ids[1]] == ("rejected", "budget:tokens-per-day")
    assert seen[ids[2]] == ("settled", None)
