"""What an attempt costs the operator at its channel's cost price, and how it is booked (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tollway.events.envelope import Envelope, make
from tollway.events.gateway import AttemptFinished, Candidate, RequestReceived
from tollway.events.ids import derived_id
from tollway.events.ledger import UpstreamCostBooked, UpstreamLossRecorded
from tollway.events.pricing import CostPrice, Price, Usage
from tollway.ledger import domain, fold, fold_usage, losses, upstream_costs

AT = datetime(2026, 4, 1, 23, 59, 59, tzinfo=UTC)
COST = CostPrice(currency="USD", input=120_000, output=480_000, per_request=2_000)


def _candidate(cost: CostPrice | None = COST) -> Candidate:
    return Candidate(
        channel_id="ch1",
        channel="Channel 1",
        brand="openai",
        route_type="direct",
        bucket="credit",
        upstream_model="m",
        price=Price(input=150_000, output=600_000),
        cost=cost,
    )


def _attempt(
    outcome: str = "ok",
    usage: Usage | None = None,
    cost: CostPrice | None = COST,
    *,
    delivered: bool = False,
) -> Envelope[AttemptFinished]:
    attempt = AttemptFinished(
        request_id="req1",
        account_id="acct",
        attempt=2,
        candidate=_candidate(cost),
        outcome=outcome,  # type: ignore[arg-type]
        latency_ms=10,
        usage=usage or Usage(),
        delivered=delivered,
        key_id="key1",
        project_id="proj1",
        catalog_model="gpt-x",
    )
    return make(attempt, occurred_at=AT)


def test_a_served_attempt_costs_its_tokens_rounded_up_once_plus_the_per_request_cost() -> None:
    # 1000 * 0.12 + 333 * 0.48 micro per token = 279.84 micro -> 280, plus 2000 per call.
    usage = Usage(input_tokens=1000, output_tokens=333)
    assert upstream_costs.cost_of(_attempt(usage=usage).payload) == 280 + 2_000


def test_a_failed_attempt_that_reached_the_upstream_costs_its_reported_tokens_and_the_call() -> (
    None
):
    usage = Usage(input_tokens=500, output_tokens=0)
    assert upstream_costs.cost_of(_attempt("timeout", usage).payload) == 60 + 2_000
    assert upstream_costs.cost_of(_attempt("http_error").payload) == 2_000


def test_a_call_that_never_left_the_router_costs_nothing() -> None:
    assert upstream_costs.cost_of(_attempt("connect_error").payload) == 0
    assert upstream_costs.decide(_attempt("connect_error")) is None


def test_a_channel_without_a_cost_price_books_no_cost() -> None:
    usage = Usage(input_tokens=1000, output_tokens=1000)
    assert upstream_costs.decide(_attempt(usage=usage, cost=None)) is None


def test_the_booking_moves_the_cost_currency_between_the_channels_operator_accounts() -> None:
    env = _attempt("http_error", Usage(input_tokens=10_000))
    booked = upstream_costs.decide(env)

    assert booked is not None
    payload = booked.payload
    assert isinstance(payload, UpstreamCostBooked)
    assert booked.id == derived_id(env.id, "upstream_cost")  # idempotent by the attempt's id
    assert booked.occurred_at == env.occurred_at
    assert (payload.amount_micro, payload.currency, payload.served) == (3_200, "USD", False)
    assert {(p.account, p.unit, p.amount) for p in payload.postings} == {
        ("system/upstream_payable/ch1", "USD", -3_200),
        ("system/upstream_expense/ch1", "USD", 3_200),
    }
    domain.check_balanced(payload.postings)
    assert not any(p.account.startswith("acct") for p in payload.postings)


def test_the_projection_row_carries_what_reports_group_by_with_the_utc_day() -> None:
    env = make(
        _attempt(usage=Usage(output_tokens=1000)).payload,
        occurred_at=AT.astimezone(UTC) + timedelta(seconds=2),  # the next UTC day
    )
    booked = upstream_costs.decide(env)
    assert booked is not None

    row = upstream_costs.row_of(booked)

    assert row.day == date(2026, 4, 2)
    assert (row.channel_id, row.brand, row.route_type, row.catalog_model) == (
        "ch1",
        "openai",
        "direct",
        "gpt-x",
    )
    assert (row.account_id, row.key_id, row.project_id) == ("acct", "key1", "proj1")
    assert (row.served, row.currency, row.cost_micro) == (True, "USD", 480 + 2_000)
    assert (row.event_id, row.cause_id) == (booked.id, env.id)


def test_a_delivered_attempt_is_served_even_when_it_ended_badly() -> None:
    env = _attempt("protocol_error", Usage(output_tokens=10), delivered=True)
    booked = upstream_costs.decide(env)
    assert booked is not None
    assert booked.payload.served is True  # type: ignore[attr-defined]


@pytest.mark.parametrize("cost", [COST, None])
def test_a_failed_attempts_tokens_are_the_operators_expense_once(cost: CostPrice | None) -> None:
    """With a cost price the real cost is booked and no sell-price loss; without, the loss."""
    usage = Usage(input_tokens=1000, output_tokens=100)
    env = _attempt("timeout", usage, cost)

    decision = fold_usage.decide_attempt(fold.State(), env)

    events = [item.payload for kind, item in decision.steps if kind == "journal"]
    if cost is None:
        assert [type(e) for e in events] == [UpstreamLossRecorded]
        assert decision.costs == []
    else:
        assert losses.loss_of(env.payload) == 0
        assert [type(e) for e in events] == [UpstreamCostBooked]
        assert [r.cost_micro for r in decision.costs] == [120 + 48 + 2_000]


def test_the_fold_books_the_served_attempts_cost_and_keeps_it_off_the_receipt() -> None:
    plan = [_candidate()]
    req = make(
        RequestReceived(
            request_id="req1",
            edge_id="e",
            account_id="acct",
            key_id="key1",
            project_id="proj1",
            catalog_model="gpt-x",
            body={},
            plan=plan,
            estimated_input_tokens=10,
            max_output_tokens=100,
            deadline_at=AT + timedelta(minutes=5),
        ),
        occurred_at=AT,
    )
    state = fold.State(
        units={("acct", "credit"): "credit"}, balances={("acct/credit", "credit"): 10**9}
    )
    effects = fold.Effects()
    fold.evolve(state, effects, fold.decide_request(state, req, 0))
    fold.evolve(
        state, effects, fold_usage.decide_attempt(state, _attempt(usage=Usage(input_tokens=5)))
    )

    assert [r.cost_micro for r in effects.costs] == [1 + 2_000]
    assert state.balances[("system/upstream_expense/ch1", "USD")] == 2_001
    receipt = state.receipts["req1"].body
    assert "cost" not in receipt["attempts"][0]
    assert "USD" not in str(receipt)
