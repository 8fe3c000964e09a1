"""Re-rating booked upstream costs: exact amounts, one rounding per attempt, ``per_request`` only
for a call that reached the upstream, signs both ways, earlier re-ratings counted, bookings in
another currency or without tokens left alone, and postings that sum to zero between the
channel's payable and expense accounts only.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tollway.edge import cost_rerates
from tollway.edge.route_tree import CostPrices
from tollway.events.ledger import (
    OPERATOR_ONLY,
    UpstreamCostBooked,
    UpstreamCostRerateApplied,
    UpstreamCostRerated,
    UpstreamCostRerateRefused,
)
from tollway.events.pricing import CostPrice, Usage
from tollway.events.recon import UpstreamCostReported
from tollway.ledger import cost_rerate

AT = datetime(2026, 11, 2, 12, tzinfo=UTC)
SEL = cost_rerate.Selection("openai-pool", AT, datetime(2026, 11, 3, tzinfo=UTC))
# 0.7 / 2.8 CNY per 1M input / output tokens and 0.00001 CNY per call, in micro-units.
COST = CostPrice(currency="CNY", input=700_000, output=2_800_000, per_request=10)


def _booking(
    n: int = 1,
    *,
    original: int,
    usage: Usage | None,
    rerated_so_far: int = 0,
    currency: str = "CNY",
    reached: bool = True,
) -> cost_rerate.Booking:
    return cost_rerate.Booking(
        event_id=f"cost-{n}",
        attempt_event_id=f"attempt-{n}",
        request_id=f"req-{n}",
        attempt=1,
        occurred_at=AT,
        currency=currency,
        original=original,
        rerated_so_far=rerated_so_far,
        usage=usage,
        reached=reached,
    )


def test_a_lower_cost_price_gives_back_the_exact_difference_with_per_request() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=500)
    # Booked at 1.4 / 5.6 per 1M and 0.00002 per call: 1400 + 2800 + 20 = 4220 micro.
    plan = cost_rerate.plan_account("t-1", SEL, [_booking(original=4_220, usage=usage)], COST)

    [line] = plan.lines
    assert line.rerated == 700 + 1_400 + 10
    assert line.difference == 2_110 - 4_220
    assert (plan.booked, plan.rerated, plan.difference) == (4_220, 2_110, -2_110)
    assert plan.changed == (line,)
    assert plan.skipped == ()


def test_a_higher_cost_price_adds_the_exact_difference() -> None:
    usage = Usage(input_tokens=3, output_tokens=0)
    plan = cost_rerate.plan_account(
        "t-1",
        SEL,
        [_booking(original=11, usage=usage)],
        COST.model_copy(update={"input": 9_000_000}),
    )

    # 3 tokens at 9 per 1M = 27 micro exactly, plus the call's 10.
    assert plan.rerated == 37
    assert plan.difference == 26


def test_the_attempt_is_rounded_up_once_not_per_class() -> None:
    # 1 input and 1 output token at 0.4 per 1M each: 0.8 micro in all, rounded up once to 1.
    cost = CostPrice(currency="CNY", input=400_000, output=400_000)
    plan = cost_rerate.plan_account(
        "t-1", SEL, [_booking(original=2, usage=Usage(input_tokens=1, output_tokens=1))], cost
    )

    assert plan.rerated == 1  # 0.8 micro rounded up once; per class it would be 2
    assert plan.difference == -1


def test_an_attempt_that_never_reached_the_upstream_costs_no_per_request() -> None:
    usage = Usage(input_tokens=1_000)
    plan = cost_rerate.plan_account(
        "t-1", SEL, [_booking(original=5, usage=usage, reached=False)], COST
    )

    assert plan.rerated == 700


def test_earlier_rerates_count_and_the_same_price_again_books_nothing() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=500)
    # Booked 4220, re-rated once to 2110 (-2110): re-rating at that price again moves nothing.
    again = _booking(original=4_220, usage=usage, rerated_so_far=-2_110)
    plan = cost_rerate.plan_account("t-1", SEL, [again], COST)

    [line] = plan.lines
    assert again.booked == 2_110
    assert line.difference == 0
    assert plan.changed == ()
    assert plan.difference == 0


def test_bookings_in_another_currency_or_without_tokens_are_left_alone() -> None:
    usage = Usage(input_tokens=10)
    plan = cost_rerate.plan_account(
        "t-1",
        SEL,
        [
            _booking(1, original=7, usage=usage, currency="USD"),
            _booking(2, original=7, usage=None),
            _booking(3, original=7, usage=usage),
        ],
        COST,
    )

    assert [(s.request_id, s.code, s.currency) for s in plan.skipped] == [
        ("req-1", cost_rerate.CURRENCY_MISMATCH, "USD"),
        ("req-2", cost_rerate.NO_USAGE, "CNY"),
    ]
    assert [line.booking.request_id for line in plan.lines] == ["req-3"]
    assert plan.other_currencies == ("USD",)
    assert plan.booked == 7  # only what is re-rated is counted


@pytest.mark.parametrize(("difference", "expense"), [(25, 25), (-25, -25)])
def test_postings_move_between_the_channel_operator_accounts_either_way(
    difference: int, expense: int
) -> None:
    postings = cost_rerate.postings("openai-pool", "CNY", difference)

    assert sum(p.amount for p in postings) == 0
    by_account = {p.account: p.amount for p in postings}
    assert by_account == {
        "system/upstream_expense/openai-pool": expense,
        "system/upstream_payable/openai-pool": -expense,
    }
    assert {p.unit for p in postings} == {"CNY"}


def test_a_zero_difference_posts_nothing() -> None:
    assert cost_rerate.postings("openai-pool", "CNY", 0) == []


def test_the_edge_reads_the_corrected_cost_price_exactly() -> None:
    given = CostPrices(
        currency="CNY", input="0.7", output="2.8", cached_input="0.07", per_request="0.00001"
    )

    assert cost_rerates.cost_price(given) == CostPrice(
        currency="CNY", input=700_000, output=2_800_000, cached_input=70_000, per_request=10
    )
    no_call = CostPrices(currency="USD", input="1", output="2")
    assert cost_rerates.cost_price(no_call).per_request == 0


def test_the_dry_run_totals_add_up_per_channel_and_currency() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=500)
    plans = [
        cost_rerate.plan_account(a, SEL, [_booking(original=4_220, usage=usage)], COST)
        for a in ("t-1", "t-2")
    ]
    views = [cost_rerates.account_view(p) for p in plans]

    [total] = cost_rerates.totals(views)
    assert (total["channel_id"], total["currency"]) == ("openai-pool", "CNY")
    assert (total["accounts"], total["attempts"]) == (2, 2)
    assert total["difference_micro"] == 2 * -2_110
    assert total["difference"] == "-0.004220"


def test_every_operator_cost_entry_type_is_kept_from_tenants() -> None:
    assert {
        UpstreamCostBooked.TYPE,
        UpstreamCostRerated.TYPE,
        UpstreamCostRerateApplied.TYPE,
        UpstreamCostRerateRefused.TYPE,
        UpstreamCostReported.TYPE,
    } <= OPERATOR_ONLY
