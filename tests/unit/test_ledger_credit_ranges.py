"""The ledger's credit ranges: each decided from the account's own bucket and source only."""

from __future__ import annotations

import pytest

from tollway.events.pricing import MAX_AMOUNT_MICRO, MAX_BALANCE_MICRO, MAX_SOURCE_MICRO
from tollway.ledger import domain


def _credit(**overrides: object) -> domain.Credit:
    values: dict[str, object] = {
        "bucket": "credit",
        "amount": 5,
        "unit": "credit",
        "bucket_unit": "credit",
        "bucket_balance": 0,
        "source_balance": 0,
    }
    return domain.Credit(**(values | overrides))  # type: ignore[arg-type]


def test_a_credit_in_every_range_is_accepted() -> None:
    assert domain.refuse_credit(_credit()) is None
    assert domain.refuse_credit(_credit(bucket_unit=None, unit="USD")) is None
    assert domain.refuse_credit(_credit(amount=MAX_AMOUNT_MICRO)) is None
    edge = _credit(amount=1, bucket_balance=MAX_BALANCE_MICRO - 1)
    assert domain.refuse_credit(edge) is None


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"amount": 0}, "amount_out_of_range"),
        ({"amount": -1}, "amount_out_of_range"),
        ({"amount": MAX_AMOUNT_MICRO + 1}, "amount_out_of_range"),
        ({"amount": 2**64}, "amount_out_of_range"),
        ({"unit": "USD"}, "unit_mismatch"),
        ({"bucket_balance": MAX_BALANCE_MICRO}, "balance_out_of_range"),
        ({"source_balance": -MAX_SOURCE_MICRO}, "source_out_of_range"),
        ({"bucket": "Credit"}, "invalid_bucket"),
        ({"unit": "cr\x00edit"}, "invalid_bucket"),
        ({"unit": ""}, "invalid_bucket"),
    ],
)
def test_a_credit_out_of_range_is_refused_with_a_stable_code(
    overrides: dict[str, object], code: str
) -> None:
    refusal = domain.refuse_credit(_credit(**overrides))
    assert refusal is not None
    assert refusal.code == code
    assert refusal.reason


def test_an_adjustment_may_debit_within_the_same_ranges() -> None:
    assert domain.refuse_credit(_credit(amount=-MAX_AMOUNT_MICRO), signed=True) is None
    too_far = _credit(amount=-1, bucket_balance=-MAX_BALANCE_MICRO)
    assert domain.refuse_credit(too_far, signed=True) is not None
    assert domain.refuse_credit(_credit(amount=-1)) is not None


def test_sources_are_per_account() -> None:
    assert domain.topup_source("acct-a") == "system/topup/acct-a"
    assert domain.adjustment_source("acct-a") == "system/adjustments/acct-a"
    assert domain.topup_source("acct-a") != domain.topup_source("acct-b")
