"""A Hypothesis state machine drives the ledger's real use cases (the same handler the live
consumer runs, on the real Postgres) and compares them with a small reference model after every
step: top-ups (with reused idempotency keys), holds placed or rejected, extensions, settles,
releases, expiries on clock ticks, late captures, and redelivered events.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from tollway.events.envelope import Envelope, make
from tollway.events.gateway import (
    Candidate,
    HoldExtensionRequested,
    RequestFinished,
    RequestReceived,
    ReversalRequested,
    TopUpRequested,
)
from tollway.events.ids import derived_id
from tollway.events.ledger import ClockTicked
from tollway.events.pricing import Price, Usage, cost_micro
from tollway.ledger import replay
from tollway.ledger.expiry import partition_of
from tollway.ledger.handlers import LedgerHandler
from tollway.runtime.consumer import Record
from tollway.runtime.migrations import apply_migrations

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PRICE = Price(input=150_000, output=600_000)
PARTITIONS = 4


@dataclass
class ModelHold:
    request: RequestReceived
    hold_id: str
    amount: int
    deadline: datetime
    status: str = "open"


class Harness:
    """One event loop and connection shared by every example (a fresh account each)."""

    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(dsn))
        self.handler = LedgerHandler()

    def apply(self, env: Envelope[Any]) -> None:
        async def run() -> None:
            async with self.conn.transaction():
                await self.handler(self.conn, [Record("t", 0, 0, None, env)])

        self.loop.run_until_complete(run())

    def fetchval(self, sql: str, *args: Any) -> Any:
        return self.loop.run_until_complete(self.conn.fetchval(sql, *args))

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


class LedgerModel(RuleBasedStateMachine):
    harness: Harness
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.account = f"m-{uuid.uuid4().hex[:10]}"
        self.channel = Candidate(
            channel_id=f"ch-{self.account}",
            channel="ch",
            brand="b",
            route_type="direct",
            bucket="credit",
            upstream_model="m",
            price=PRICE,
        )
        self.now = T0
        self.available = 0
        self.revenue = 0
        self.keys: dict[str, int] = {}
        self.model_holds: list[ModelHold] = []
        self.sent: list[Envelope[Any]] = []
        self.charges: list[list[Any]] = []  # [event id, charged, refunded]

    def _send(self, env: Envelope[Any]) -> None:
        self.sent.append(env)
        self.harness.apply(env)

    @rule(amount=st.integers(1, 5_000_000), key=st.sampled_from(["a", "b", "c", None]))
    def top_up(self, amount: int, key: str | None) -> None:
        idem = f"{self.account}-{key or uuid.uuid4().hex}"
        self._send(
            make(
                TopUpRequested(
                    account_id=self.account,
                    bucket="credit",
                    unit="credit",
                    amount_micro=amount,
                    idempotency_key=idem,
                ),
                occurred_at=self.now,
            )
        )
        if idem not in self.keys:
            self.keys[idem] = amount
            self.available += amount

    @rule(
        target=holds,
        est_in=st.integers(0, 3000),
        max_out=st.integers(0, 3000),
        deadline_s=st.integers(-60, 600),
    )
    def request(self, est_in: int, max_out: int, deadline_s: int) -> Any:
        req = RequestReceived(
            request_id=f"req_{uuid.uuid4().hex}",
            edge_id="e",
            account_id=self.account,
            key_id="k",
            project_id="p",
            catalog_model="m",
            body={},
            plan=[self.channel],
            estimated_input_tokens=est_in,
            max_output_tokens=max_out,
            deadline_at=self.now + timedelta(seconds=deadline_s),
        )
        env = make(req, occurred_at=self.now)
        self._send(env)
        amount = cost_micro(Usage(input_tokens=est_in, output_tokens=max_out), PRICE)
        hold_id = self.harness.fetchval(
            "SELECT hold_id FROM ledger.holds WHERE request_id = $1", req.request_id
        )
        if amount > self.available:
            assert hold_id is None, "a hold beyond the available balance was placed"
            return None
        assert hold_id is not None, "a covered hold was rejected"
        self.available -= amount
        hold = ModelHold(req, hold_id, amount, req.deadline_at)
        self.model_holds.append(hold)
        return hold

    @rule(hold=holds, served=st.booleans(), tokens=st.integers(0, 8000))
    def finish(self, hold: ModelHold | None, served: bool, tokens: int) -> None:
        if hold is None:
            return
        usage = Usage(input_tokens=tokens // 2, output_tokens=tokens - tokens // 2)
        self._send(
            make(
                RequestFinished(
                    request_id=hold.request.request_id,
                    account_id=self.account,
                    hold_id=hold.hold_id,
                    served_attempt=1 if served else None,
                    served_channel_id=self.channel.channel_id if served else None,
                    usage=usage,
                    price=PRICE if served else None,
                    status=200 if served else 502,
                    attempts=1,
                ),
                occurred_at=self.now,
            )
        )
        charged = min(cost_micro(usage, PRICE), hold.amount) if served else 0
        env = self.sent[-1]
        if served and charged and hold.status in {"open", "expired"}:
            salt = "hold_settled" if hold.status == "open" else "late_captured"
            self.charges.append([derived_id(env.id, salt), charged, 0])
        if hold.status == "open":
            self.available += hold.amount - charged
            self.revenue += charged
            hold.status = "settled" if served else "released"
        elif hold.status == "expired" and served:
            self.available -= charged
            self.revenue += charged
            hold.status = "late_captured"

    @rule(seconds=st.integers(0, 300), grace=st.integers(0, 60))
    def tick(self, seconds: int, grace: int) -> None:
        self.now += timedelta(seconds=seconds)
        cutoff = self.now - timedelta(seconds=grace)
        tick = ClockTicked(
            partition=partition_of(self.account, PARTITIONS),
            partitions=PARTITIONS,
            expire_before=cutoff,
        )
        self._send(make(tick, occurred_at=self.now))
        for hold in self.model_holds:
            if hold.status == "open" and hold.deadline < cutoff:
                hold.status = "expired"
                self.available += hold.amount

    @rule(hold=holds, seconds=st.integers(-120, 600))
    def extend(self, hold: ModelHold | None, seconds: int) -> None:
        if hold is None:
            return
        wanted = hold.deadline + timedelta(seconds=seconds)
        ask = HoldExtensionRequested(
            request_id=hold.request.request_id,
            account_id=self.account,
            hold_id=hold.hold_id,
            deadline_at=wanted,
        )
        self._send(make(ask, occurred_at=self.now))
        if hold.status == "open" and wanted > hold.deadline:
            hold.deadline = wanted

    @rule(data=st.data(), extra=st.integers(-50, 50))
    def reverse(self, data: st.DataObject, extra: int) -> None:
        if not self.charges:
            return
        charge = data.draw(st.sampled_from(self.charges))
        amount = max(1, charge[1] - charge[2] + extra)
        ask = ReversalRequested(
            account_id=self.account,
            original_event_id=charge[0],
            amount_micro=amount,
            reason="model",
            idempotency_key=f"{self.account}-{uuid.uuid4().hex}",
        )
        self._send(make(ask, occurred_at=self.now))
        if amount <= charge[1] - charge[2]:
            charge[2] += amount
            self.available += amount
            self.revenue -= amount

    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        if self.sent:
            self.harness.apply(data.draw(st.sampled_from(self.sent)))

    def _balance(self, suffix: str) -> int:
        value = self.harness.fetchval(
            "SELECT amount FROM ledger.balances WHERE account = $1", f"{self.account}{suffix}"
        )
        return int(value or 0)

    @invariant()
    def balances_match_the_model(self) -> None:
        open_held = sum(h.amount for h in self.model_holds if h.status == "open")
        assert self._balance("/credit") == self.available
        assert self._balance("/credit/held") == open_held
        assert self._balance("") == 0
        revenue = self.harness.fetchval(
            "SELECT amount FROM ledger.balances WHERE account = $1",
            f"system/revenue/{self.channel.channel_id}",
        )
        assert int(revenue or 0) == self.revenue

    @invariant()
    def hold_states_match_the_model(self) -> None:
        for hold in self.model_holds:
            status = self.harness.fetchval(
                "SELECT status FROM ledger.holds WHERE hold_id = $1", hold.hold_id
            )
            expected = "settled" if hold.status == "late_captured" else hold.status
            assert status == expected

    @invariant()
    def every_event_balances(self) -> None:
        unbalanced = self.harness.fetchval(
            "SELECT count(*) FROM (SELECT p.event_id, p.unit FROM ledger.postings p"
            " JOIN ledger.journal j USING (event_id) WHERE j.account_id = $1"
            " GROUP BY p.event_id, p.unit HAVING sum(p.amount) <> 0) bad",
            self.account,
        )
        assert unbalanced == 0


async def _fresh(dsn: str) -> str:
    target = await replay.fresh_database(dsn, "ledger_model_test")
    conn = await asyncpg.connect(target)
    try:
        await apply_migrations(conn, "ledger", "tollway.ledger")
    finally:
        await conn.close()
    return target


def test_the_ledger_agrees_with_a_reference_model(stack) -> None:
    harness = Harness(asyncio.run(_fresh(stack.dsn)))
    LedgerModel.harness = harness
    try:
        LedgerModel.TestCase.settings = settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        LedgerModel.TestCase().runTest()
    finally:
        harness.close()
