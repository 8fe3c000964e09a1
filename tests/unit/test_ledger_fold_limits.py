"""Budgets and task envelopes in the fold (tollway.ledger.fold_limits): pure decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.events.envelope import Envelope, decode, make
from tollway.events.gateway import Candidate, RequestFinished, RequestReceived, RequestRejected
from tollway.events.ledger import ClockTicked, HoldPlaced, HoldRejected
from tollway.events.limits import (
    BudgetRemoved,
    BudgetSet,
    BudgetThresholdCrossed,
    TaskBudget,
    TaskClosed,
    TaskOpened,
)
from tollway.events.pricing import Price, Usage, worst_case_micro
from tollway.ledger import fold, fold_expiry, fold_limits, fold_usage
from tollway.ledger import limits_domain as ld
from tollway.ledger.fold_limits import BudgetUsage, UsageRow

AT = datetime(2026, 4, 1, 12, tzinfo=UTC)
PRICE = Price(input=150_000, output=600_000)


def _candidate(name: str, bucket: str = "credit", route_type: str = "direct") -> Candidate:
    return Candidate(
        channel_id=name,
        channel=name,
        brand="b",
        route_type=route_type,
        bucket=bucket,
        upstream_model="m",
        price=PRICE,
    )


DIRECT = _candidate("d1")
POOL = _candidate("p1", bucket="wallet", route_type="pool")


def _request(
    n: int,
    *,
    plan: list[Candidate] | None = None,
    task_id: str | None = None,
    at: datetime = AT,
    max_out: int = 100,
) -> Envelope[RequestReceived]:
    req = RequestReceived(
        request_id=f"req_{n}",
        edge_id="e",
        account_id="a",
        key_id="k",
        project_id="p",
        task_id=task_id,
        catalog_model="m",
        body={},
        plan=plan or [DIRECT],
        estimated_input_tokens=100,
        max_output_tokens=max_out,
        deadline_at=at + timedelta(minutes=5),
    )
    return make(req, occurred_at=at)


def _budget(amount: int, **kw: str) -> ld.Budget:
    fields = {
        "budget_id": "b1",
        "name": "team",
        "scope": "account",
        "scope_id": "a",
        "window": "lifetime",
        "timezone": "UTC",
        "unit": "credit",
        "bucket": None,
        "mode": "hard",
    } | kw
    return ld.Budget(amount=amount, **fields)  # type: ignore[arg-type]


def _state(*budgets: ld.Budget, credit: int = 10**9, wallet: int = 0) -> fold.State:
    state = fold.State(
        units={("a", "credit"): "credit", ("a", "wallet"): "wallet"},
        balances={("a/credit", "credit"): credit, ("a/wallet", "wallet"): wallet},
    )
    state.budgets["a"] = tuple(budgets)
    for b in budgets:
        state.usage[b.budget_id] = BudgetUsage({})
    return state


def _apply(state: fold.State, decision: fold.Decision) -> fold.Effects:
    effects = fold.Effects()
    fold.evolve(state, effects, decision)
    return effects


def _payloads(decision: fold.Decision) -> list[object]:
    """Journal events and messages, in order (messages decoded from their wire form)."""
    return [
        item.payload if kind == "journal" else decode(item.value).payload
        for kind, item in decision.steps
    ]


WORST = worst_case_micro(100, 100, PRICE)


@settings(max_examples=100, deadline=None)
@given(amount=st.integers(1, 40 * WORST), requests=st.integers(1, 45))
def test_holds_racing_for_a_hard_budget_never_overshoot_it(amount: int, requests: int) -> None:
    state = _state(_budget(amount))
    placed = 0
    for n in range(requests):
        decision = fold.decide_request(state, _request(n), n)
        _apply(state, decision)
        placed += sum(isinstance(p, HoldPlaced) for p in _payloads(decision))
    held = state.usage["b1"].used(None)
    assert held == placed * WORST <= amount
    assert placed == min(requests, amount // WORST)


def test_a_refusal_by_a_budget_names_it_and_reaches_the_client_as_402() -> None:
    state = _state(_budget(WORST + 1, name="team"))
    _apply(state, fold.decide_request(state, _request(1), 1))

    payloads = _payloads(fold.decide_request(state, _request(2), 2))

    rejected, reply = payloads
    assert isinstance(rejected, HoldRejected)
    assert rejected.limit == "budget:team"
    assert isinstance(reply, RequestRejected)
    assert (reply.status, reply.code) == (402, "budget_exceeded")


def test_usage_outside_the_budget_window_does_not_count() -> None:
    state = _state(_budget(WORST, window="day"))
    yesterday = _request(1, at=AT - timedelta(days=1))
    _apply(state, fold.decide_request(state, yesterday, 1))

    today = fold.decide_request(state, _request(2), 2)

    assert isinstance(_payloads(today)[0], HoldPlaced)


def test_a_task_request_is_refused_when_its_task_is_unknown_closed_or_off_route() -> None:
    state = _state()
    state.tasks[("a", "closed")] = ld.TaskRule("closed", "closed", ("direct",), "any")
    state.tasks[("a", "pool-only")] = ld.TaskRule("pool-only", "open", ("pool",), "any")

    outcomes = []
    for n, task in enumerate(["missing", "closed", "pool-only"]):
        reply = _payloads(fold.decide_request(state, _request(n, task_id=task), n))[-1]
        assert isinstance(reply, RequestRejected)
        outcomes.append((reply.status, reply.code, reply.limit))

    assert outcomes == [
        (404, "task_not_found", "task:missing"),
        (402, "task_closed", "task:closed"),
        (403, "route_type_not_allowed", "task:pool-only"),
    ]


def test_a_task_keeps_only_the_first_refusal_by_its_own_envelope() -> None:
    envelope = _budget(
        WORST, budget_id="task:t:credit", scope="task", scope_id="t", bucket="credit"
    )
    state = _state(envelope)
    state.tasks[("a", "t")] = ld.TaskRule("t", "open", ("direct",), "any")
    _apply(state, fold.decide_request(state, _request(1, task_id="t"), 1))

    first = _apply(state, fold.decide_request(state, _request(2, task_id="t"), 2))
    second = _apply(state, fold.decide_request(state, _request(3, task_id="t"), 3))

    assert list(first.task_stops) == [("t", "a")]
    assert "exhausted" in first.task_stops[("t", "a")]
    assert second.task_stops == {}
    assert state.tasks[("a", "t")].stopped_by == first.task_stops[("t", "a")]


def test_a_task_may_only_hold_in_the_buckets_of_its_envelope() -> None:
    envelope = _budget(
        10**9, budget_id="task:t:credit", scope="task", scope_id="t", bucket="credit"
    )
    state = _state(envelope, wallet=10**9)
    state.tasks[("a", "t")] = ld.TaskRule("t", "open", ("direct", "pool"), "any")

    payloads = _payloads(
        fold.decide_request(state, _request(1, plan=[DIRECT, POOL], task_id="t"), 1)
    )

    placed, refused = payloads[0], payloads[1]
    assert isinstance(placed, HoldPlaced)
    assert placed.bucket == "credit"
    assert isinstance(refused, HoldRejected)
    assert (refused.bucket, refused.limit) == ("wallet", "task:t")


def _finish(n: int, hold_id: str, output_tokens: int, *, served: bool = True) -> Envelope[Any]:
    fin = RequestFinished(
        request_id=f"req_{n}",
        account_id="a",
        hold_id=hold_id,
        served_attempt=1 if served else None,
        served_channel_id="d1" if served else None,
        usage=Usage(input_tokens=100, output_tokens=output_tokens) if served else Usage(),
        price=PRICE if served else None,
        status=200 if served else 502,
        attempts=1,
    )
    return make(fin, occurred_at=AT + timedelta(seconds=n))


def _hold_of(state: fold.State, n: int) -> str:
    return state.holds[f"req_{n}"][0].hold_id


def test_a_finish_turns_held_into_spent_and_journals_each_threshold_once() -> None:
    state = _state(_budget(4 * WORST, window="month"))
    crossings = []
    for n in range(4):
        _apply(state, fold.decide_request(state, _request(n), n))
        decision = fold_usage.decide_finish(state, _finish(n, _hold_of(state, n), 100))
        _apply(state, decision)
        crossings += [
            p.percent for p in _payloads(decision) if isinstance(p, BudgetThresholdCrossed)
        ]

    rows = list(state.usage["b1"].rows.values())
    assert all(r.held == 0 and r.spent == WORST for r in rows)
    assert crossings == [50, 80, 100]


def test_an_unserved_finish_frees_the_budget() -> None:
    state = _state(_budget(WORST))
    _apply(state, fold.decide_request(state, _request(1), 1))
    effects = _apply(
        state, fold_usage.decide_finish(state, _finish(1, _hold_of(state, 1), 0, served=False))
    )

    assert [(r.held, r.spent) for r in effects.usage_changed.values()] == [(0, 0)]
    assert isinstance(_payloads(fold.decide_request(state, _request(2), 2))[0], HoldPlaced)


def test_an_expired_hold_stops_counting_and_a_late_capture_counts_its_charge() -> None:
    state = _state(_budget(10 * WORST))
    _apply(state, fold.decide_request(state, _request(1), 1))
    tick = make(
        ClockTicked(partition=0, partitions=1, expire_before=AT + timedelta(hours=1)),
        occurred_at=AT + timedelta(hours=1),
    )
    _apply(state, fold_expiry.decide_tick(state, tick, state.holds["req_1"]))
    after_expiry = state.request_usage["req_1"][0]

    _apply(state, fold_usage.decide_finish(state, _finish(1, _hold_of(state, 1), 100)))

    assert (after_expiry.held, after_expiry.spent) == (0, 0)
    captured = state.request_usage["req_1"][0]
    assert (captured.held, captured.spent) == (0, WORST)
    assert state.usage["b1"].rows[captured.hold_id] == captured


def test_a_token_budget_counts_a_request_once_across_its_buckets() -> None:
    tokens = _budget(10**6, unit="tokens")
    state = _state(tokens, wallet=10**9)

    effects = _apply(state, fold.decide_request(state, _request(1, plan=[DIRECT, POOL]), 1))

    amounts = sorted(r.held for r in effects.usage_new.values())
    assert amounts == [0, 200]  # input estimate + max output, on the first hold only


def test_usage_rows_evolve_into_the_request_and_the_budget_alike() -> None:
    state = _state(_budget(10 * WORST))
    effects = _apply(state, fold.decide_request(state, _request(1), 1))

    (row,) = effects.usage_new.values()
    assert isinstance(row, UsageRow)
    assert state.request_usage["req_1"] == (row,)
    assert state.usage["b1"].rows == {row.hold_id: row}
    assert (row.held, row.spent, row.channels, row.at) == (WORST, 0, ("d1",), AT)


def test_a_budget_id_another_account_has_is_left_alone() -> None:
    state = _state()
    state.budget_owners["b9"] = "other"
    set_it = make(
        BudgetSet(
            budget_id="b9",
            account_id="a",
            name="n",
            scope="account",
            scope_id="a",
            unit="credit",
            amount=5,
        ),
        occurred_at=AT,
    )

    effects = _apply(state, fold.Decision(defined=fold_limits.decide_definition(state, set_it)))

    assert effects.budget_changes == {}
    assert state.budgets["a"] == ()


def test_an_opened_task_brings_its_envelope_and_closing_it_refuses_its_calls() -> None:
    state = _state()
    opened = make(
        TaskOpened(
            task_id="t",
            account_id="a",
            project_id="p",
            key_id="k",
            budgets=[TaskBudget(bucket="credit", unit="credit", amount_micro=WORST)],
        ),
        occurred_at=AT,
    )
    _apply(state, fold.Decision(defined=fold_limits.decide_definition(state, opened)))
    placed = _payloads(fold.decide_request(state, _request(1, task_id="t"), 1))[0]
    closed = make(TaskClosed(task_id="t", account_id="a"), occurred_at=AT)
    effects = _apply(state, fold.Decision(defined=fold_limits.decide_definition(state, closed)))

    assert [b.budget_id for b in state.budgets["a"]] == ["task:t:credit"]
    assert isinstance(placed, HoldPlaced)
    assert list(effects.tasks_closed) == [("t", "a")]
    reply = _payloads(fold.decide_request(state, _request(2, task_id="t"), 2))[-1]
    assert isinstance(reply, RequestRejected)
    assert reply.code == "task_closed"


def test_a_removed_budget_stops_limiting_but_keeps_its_usage() -> None:
    state = _state(_budget(WORST))
    state.budget_owners["b1"] = "a"
    _apply(state, fold.decide_request(state, _request(1), 1))
    removed = make(BudgetRemoved(budget_id="b1", account_id="a"), occurred_at=AT)
    _apply(state, fold.Decision(defined=fold_limits.decide_definition(state, removed)))

    assert isinstance(_payloads(fold.decide_request(state, _request(2), 2))[0], HoldPlaced)
    assert state.usage["b1"].used(None) == WORST
