"""Re-rating past charges: exact amounts, one rounding per request, signs both ways, the
negative-balance rule, and postings that sum to zero between the bucket and the revenue.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tollway.events.pricing import Price, Usage
from tollway.ledger import domain, rerate

AT = datetime(2026, 11, 2, 12, tzinfo=UTC)


def _charge(
    request_id: str = "r1",
    *,
    original: int,
    usage: Usage | None,
    rerated_so_far: int = 0,
    refunded: int = 0,
) -> rerate.Charge:
    return rerate.Charge(
        request_id=request_id,
        original_event_id=f"ev-{request_id}",
        settled_at=AT,
        unit="credit",
        original=original,
        rerated_so_far=rerated_so_far,
        usage=usage,
        refunded=refunded,
    )


def test_a_lower_price_gives_back_the_exact_difference() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=500)
    # Charged at 2 and 8 units per 1M tokens: 1000 * 2 + 500 * 8 = 6000 micro.
    charged = 6_000
    plan = rerate.plan_account(
        "a",
        "credit",
        [_charge(original=charged, usage=usage)],
        Price(input=1_000_000, output=4_000_000),
        available=50_000,
    )

    [line] = plan.lines
    assert line.rerated == 1_000 + 2_000
    assert line.difference == -3_000
    assert (plan.charged, plan.rerated, plan.difference) == (6_000, 3_000, -3_000)
    assert plan.balance_after == 53_000
    assert not plan.overdraws
    assert rerate.refuse(plan, allow_negative=False) is None


def test_a_higher_price_charges_the_exact_difference() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=500)
    plan = rerate.plan_account(
        "a",
        "credit",
        [_charge(original=6_000, usage=usage)],
        Price(input=3_000_000, output=10_000_000),
        available=50_000,
    )

    assert plan.rerated == 3_000 + 5_000
    assert plan.difference == 2_000
    assert plan.balance_after == 48_000


def test_each_request_is_rounded_once_up_never_per_class_and_never_on_the_sum() -> None:
    # Each class's exact cost is a fraction of a micro-unit: 0.4 + 0.4 = 0.8, rounded up to 1.
    usage = Usage(input_tokens=1, output_tokens=1)
    price = Price(input=400_000, output=400_000)
    charges = [_charge(f"r{i}", original=0, usage=usage) for i in range(3)]

    plan = rerate.plan_account("a", "credit", charges, price, available=10)

    assert [line.rerated for line in plan.lines] == [1, 1, 1]  # once per request: 3, not ceil(2.4)
    assert plan.difference == 3


def test_a_charge_capped_at_its_hold_is_rerated_to_its_tokens_full_cost() -> None:
    # Charged 700 (its hold) for tokens that cost 1000 at the old price; the correction charges
    # the tokens at the corrected price, whatever the hold was.
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    plan = rerate.plan_account(
        "a",
        "credit",
        [_charge(original=700, usage=usage)],
        Price(input=1_200, output=0),
        available=1_000,
    )

    assert plan.lines[0].rerated == 1_200
    assert plan.difference == 500


def test_earlier_rerates_count_as_charged_so_the_same_price_twice_moves_nothing() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=500)
    price = Price(input=1_000_000, output=4_000_000)
    again = rerate.plan_account(
        "a",
        "credit",
        [_charge(original=6_000, usage=usage, rerated_so_far=-3_000)],
        price,
        available=0,
    )

    assert again.lines[0].charge.charged == 3_000
    assert again.difference == 0
    assert again.changed == ()


def test_refunded_charges_and_charges_without_usage_are_left_alone_and_counted() -> None:
    usage = Usage(input_tokens=10, output_tokens=10)
    plan = rerate.plan_account(
        "a",
        "credit",
        [
            _charge("kept", original=1, usage=usage),
            _charge("refunded", original=1, usage=usage, refunded=1),
            _charge("blind", original=1, usage=None),
        ],
        Price(input=0, output=0),
        available=0,
    )

    assert [line.charge.request_id for line in plan.lines] == ["kept"]
    assert [(s.request_id, s.code) for s in plan.skipped] == [
        ("refunded", rerate.REFUNDED),
        ("blind", rerate.NO_USAGE),
    ]


def test_a_debit_beyond_the_available_balance_is_refused_unless_allowed() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=0)
    plan = rerate.plan_account(
        "a",
        "credit",
        [_charge(original=1_000, usage=usage)],
        Price(input=3_000_000, output=0),
        available=1_500,
    )

    assert plan.difference == 2_000
    assert plan.balance_after == -500
    assert plan.overdraws
    refusal = rerate.refuse(plan, allow_negative=False)
    assert refusal is not None
    assert refusal.code == rerate.BALANCE_BELOW_OWED
    assert rerate.refuse(plan, allow_negative=True) is None


def test_a_credit_is_never_refused_even_on_a_negative_balance() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=0)
    plan = rerate.plan_account(
        "a",
        "credit",
        [_charge(original=3_000, usage=usage)],
        Price(input=1_000_000, output=0),
        available=-10_000,
    )

    assert plan.difference == -2_000
    assert not plan.overdraws
    assert rerate.refuse(plan, allow_negative=False) is None


def test_postings_sum_to_zero_between_the_bucket_and_the_revenue_either_way() -> None:
    debit = rerate.postings("a", "credit", "credit", "chan", 250)
    credit = rerate.postings("a", "credit", "credit", "chan", -250)

    domain.check_balanced(debit)
    domain.check_balanced(credit)
    assert {(p.account, p.amount) for p in debit} == {
        ("a/credit", -250),
        ("system/revenue/chan", 250),
    }
    assert {(p.account, p.amount) for p in credit} == {
        ("a/credit", 250),
        ("system/revenue/chan", -250),
    }
    assert rerate.postings("a", "credit", "credit", "chan", 0) == []
