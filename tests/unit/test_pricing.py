"""The one cost-rounding rule and exact decimal parsing of amounts."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.events.pricing import (
    MAX_AMOUNT_MICRO,
    AmountError,
    Price,
    Usage,
    cost_micro,
    format_micro,
    parse_amount,
    parse_count,
)

tokens = st.integers(min_value=0, max_value=10_000_000)
prices = st.integers(min_value=0, max_value=1_000_000_000)


def test_cost_is_rounded_up_to_the_next_micro_unit() -> None:
    usage = Usage(input_tokens=6, output_tokens=34)
    price = Price(input=150_000, output=600_000)
    # exact: (6 * 150000 + 34 * 600000) / 1e6 = 21.3 micro -> 22
    assert cost_micro(usage, price) == 22


def test_cached_input_tokens_use_the_cached_price() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=0, cached_input_tokens=400_000)
    price = Price(input=1_000_000, output=0, cached_input=250_000)
    assert cost_micro(usage, price) == 600_000 + 100_000


def test_cached_tokens_beyond_input_are_not_discounted_twice() -> None:
    usage = Usage(input_tokens=10, cached_input_tokens=50)
    assert cost_micro(usage, Price(input=1_000_000, output=0, cached_input=0)) == 0


@given(tokens, tokens, prices, prices)
def test_cost_is_the_exact_price_rounded_up_never_below(i: int, o: int, pi: int, po: int) -> None:
    cost = cost_micro(Usage(input_tokens=i, output_tokens=o), Price(input=pi, output=po))
    exact = Fraction(i * pi + o * po, 1_000_000)
    assert exact <= cost < exact + 1


@given(tokens, tokens, tokens, prices, prices)
def test_cost_is_monotonic_in_tokens(i: int, o: int, extra: int, pi: int, po: int) -> None:
    price = Price(input=pi, output=po)
    base = cost_micro(Usage(input_tokens=i, output_tokens=o), price)
    assert cost_micro(Usage(input_tokens=i + extra, output_tokens=o), price) >= base
    assert cost_micro(Usage(input_tokens=i, output_tokens=o + extra), price) >= base


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("0.000001", 1),
        ("1", 1_000_000),
        ("12.5", 12_500_000),
        ("007.250", 7_250_000),
        (7, 7_000_000),
        ("1000000000", MAX_AMOUNT_MICRO),
    ],
)
def test_amounts_parse_exactly(text: str | int, micro: int) -> None:
    assert parse_amount(text) == micro


@pytest.mark.parametrize(
    "text",
    [
        "1.0000001",  # seven decimals
        "abc",
        "1.2.3",
        "1e5",
        "0x10",
        "1,5",
        "+-5",
        "--5",
        "-5",  # a top-up cannot be negative
        "+5",  # nor carry a sign at all
        "\u0665",  # Arabic-Indic five
        "\uff15",  # full-width five
        "\U0001d7d3",  # mathematical bold five
        "5\u0665",
        " 5",
        "5 ",
        "5\x00",
        "",
        ".5",
        "5.",
        "0",
        "0.000000",
        "1000000000.000001",  # one micro beyond the largest single amount
        "9" * 30,
        "1" * 5000,
        True,
        5.5,
        None,
        [],
    ],
)
def test_amounts_that_are_not_exact_ascii_decimals_in_range_are_refused(text: object) -> None:
    with pytest.raises(AmountError, match=r"^Invalid value for 'amount': ") as caught:
        parse_amount(text)
    assert caught.value.field == "amount"


def test_a_sign_is_taken_only_where_an_amount_may_be_negative() -> None:
    assert parse_amount("-3.25", sign="non_zero") == -3_250_000
    assert parse_amount("+3", sign="non_zero") == 3_000_000
    assert parse_amount("0", sign="non_negative") == 0
    for text in ("0", "+-1", "-+1", "--1", "-0.000000"):
        with pytest.raises(AmountError):
            parse_amount(text, sign="non_zero")
    with pytest.raises(AmountError, match=r"'prices\.input'"):
        parse_amount("-1", field="prices.input", sign="non_negative")


def test_counts_are_positive_ascii_whole_numbers_in_range() -> None:
    assert parse_count("1000", field="amount") == 1000
    for text in ("0", "-1", "1.5", "\u0665", "\uff15", "10000000000000001", "", " 1"):
        with pytest.raises(AmountError, match="'amount'"):
            parse_count(text, field="amount")


@given(st.integers(min_value=-MAX_AMOUNT_MICRO, max_value=MAX_AMOUNT_MICRO).filter(bool))
def test_format_and_parse_round_trip(micro: int) -> None:
    assert parse_amount(format_micro(micro), sign="non_zero") == micro
