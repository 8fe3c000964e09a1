"""Budgets and task envelopes folded with the partition's state kept across batches.

For random logs of budgets (hard and soft, money and tokens, windows), task envelopes opened
and closed, requests with and without a task (some beyond a budget or an envelope), attempts,
finishes (served, not served, by the fallback bucket), extensions and clock ticks, the ledger
applied in batches of random sizes with its state resident in memory leaves every projection
(holds, receipts, budget usage, tasks, journal, postings, balances) identical, row for row, to
the same log applied one record at a time, each over state read again from Postgres.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_ledger_fold import (
    CREDIT,
    WALLET,
    Databases,
    Log,
    PerEventHandler,
    _attempt,
    _finish,
    _topup,
    apply,
    databases,
    records,
)
from tollway.events.gateway import HoldExtensionRequested, RequestReceived
from tollway.events.ids import derived_id
from tollway.events.ledger import ClockTicked
from tollway.events.limits import BudgetSet, TaskBudget, TaskClosed, TaskOpened
from tollway.ledger import finance_store
from tollway.ledger.handlers import LedgerHandler

if TYPE_CHECKING:
    from collections.abc import Sequence

    import asyncpg

    from tollway.runtime.consumer import Record

pytestmark = pytest.mark.integration

__all__ = ["databases"]  # the fixture, shared with the fold's own test module

TASK = "t1"


def _request(log: Log, two_buckets: bool, max_out: int, task: bool) -> None:
    env = log.add(
        RequestReceived(
            request_id=f"req_{uuid.uuid4().hex}",
            edge_id="e",
            account_id=log.account,
            key_id="k",
            project_id="p",
            task_id=TASK if task else None,
            catalog_model="m",
            body={},
            plan=[CREDIT, WALLET] if two_buckets else [CREDIT],
            estimated_input_tokens=100,
            max_output_tokens=max_out,
            deadline_at=log.clock + timedelta(seconds=20),
        )
    )
    log.requests.append(env)


def _definitions(log: Log, budget: int, tokens: int, envelope: int) -> None:
    account = log.account
    log.add(
        BudgetSet(
            budget_id=f"{account}-money",
            account_id=account,
            name="money",
            scope="account",
            scope_id=account,
            window="day",
            unit="credit",
            amount=budget,
        )
    )
    log.add(
        BudgetSet(
            budget_id=f"{account}-tokens",
            account_id=account,
            name="tokens",
            scope="key",
            scope_id="k",
            window="hour",
            unit="tokens",
            amount=tokens,
        )
    )
    log.add(
        BudgetSet(
            budget_id=f"{account}-soft",
            account_id=account,
            name="soft",
            scope="project",
            scope_id="p",
            unit="wallet",
            amount=budget // 2 + 1,
            mode="soft",
        )
    )
    log.add(
        TaskOpened(
            task_id=TASK,
            account_id=account,
            project_id="p",
            key_id="k",
            budgets=[TaskBudget(bucket="credit", unit="credit", amount_micro=envelope)],
        )
    )


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("topup"), st.sampled_from(["credit", "wallet"]), st.integers(1, 3000)),
        st.tuples(st.just("request"), st.booleans(), st.integers(1, 4000), st.booleans()),
        st.tuples(
            st.just("attempt"),
            st.integers(0, 30),
            st.sampled_from(["ok", "failed", "cut"]),
            st.booleans(),
        ),
        st.tuples(st.just("finish"), st.integers(0, 30), st.booleans(), st.booleans()),
        st.tuples(st.just("extend"), st.integers(0, 30), st.integers(1, 60)),
        st.tuples(st.just("tick"), st.integers(0, 40)),
        st.tuples(st.just("close_task"), st.just(0)),
    ),
    min_size=1,
    max_size=40,
)


def build_log(steps: Sequence[tuple[Any, ...]], limits: tuple[int, int, int]) -> Log:
    """Definitions, then the envelopes ``steps`` describe (money in micro-units x 1000)."""
    log = Log(account=f"acct-{uuid.uuid4().hex[:12]}")
    _topup(log, "credit", 2_000_000)
    money, tokens, envelope = limits
    _definitions(log, money * 1000, tokens, envelope * 1000)
    for step in steps:
        kind, args = step[0], step[1:]
        pick = args[0] if isinstance(args[0], int) else 0
        req = log.requests[pick % len(log.requests)] if log.requests else None
        if kind == "topup":
            _topup(log, args[0], args[1] * 1000)
        elif kind == "request":
            _request(log, args[0], args[1], args[2])
        elif kind == "attempt" and req is not None:
            _attempt(log, req, 1 + args[0] % 2, args[1], args[2])
        elif kind == "finish" and req is not None:
            _finish(log, req, args[1], args[2])
        elif kind == "extend" and req is not None:
            log.add(
                HoldExtensionRequested(
                    request_id=req.payload.request_id,
                    account_id=log.account,
                    hold_id="hold_" + derived_id(req.id, "hold"),
                    deadline_at=req.payload.deadline_at + timedelta(seconds=args[1]),
                )
            )
        elif kind == "tick":
            cutoff = log.clock - timedelta(seconds=args[0])
            log.add(ClockTicked(partition=0, partitions=1, expire_before=cutoff))
        elif kind == "close_task":
            log.add(TaskClosed(task_id=TASK, account_id=log.account))
    return log


async def apply_resident(
    conn: asyncpg.Connection, handler: LedgerHandler, recs: list[Record], sizes: list[int]
) -> None:
    """Apply ``recs`` in batches of ``sizes`` (cycled), telling the handler of each commit."""
    i = n = 0
    while i < len(recs):
        size = sizes[n % len(sizes)]
        async with conn.transaction():
            await handler(conn, recs[i : i + size])
        handler.committed()
        i, n = i + size, n + 1


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    steps=STEPS,
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=5),
    limits=st.tuples(st.integers(1, 3000), st.integers(100, 20_000), st.integers(1, 2000)),
)
def test_limited_requests_folded_in_resident_batches_equal_the_log_one_record_at_a_time(
    databases: Databases,
    steps: list[tuple[Any, ...]],
    sizes: list[int],
    limits: tuple[int, int, int],
) -> None:
    recs = records(build_log(steps, limits))

    async def run() -> tuple[Any, Any]:
        await apply(databases.per_event, PerEventHandler(), recs, [1])
        await apply_resident(databases.folded, LedgerHandler(resident=True), recs, sizes)
        return (
            await finance_store.table_digests(databases.per_event),
            await finance_store.table_digests(databases.folded),
        )

    per_event, folded = databases.loop.run_until_complete(run())
    assert folded == per_event
