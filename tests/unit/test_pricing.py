"""The one cost-rounding rule and exact decimal parsing of amounts."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.events.pricing import Price, Usage, cost_micro, format_micro, to_micro

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
        ("0", 0),
        ("1", 1_000_000),
        ("12.5", 12_500_000),
        ("0.000001", 1),
        ("-3.25", -3_250_000),
        (".5", 500_000),
        (7, 7_000_000),
    ],
)
def test_amounts_parse_exactly(text: str | int, micro: int) -> None:
    assert to_micro(text) == micro


@pytest.mark.parametrize("text", ["1.0000001", "abc", "1.2.3", "1e5", "0x10", "1,5"])
def test_amounts_that_are_not_exact_decimals_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"decimal|places"):
        to_micro(text)


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_and_parse_round_trip(micro: int) -> None:
    assert to_micro(format_micro(micro)) == micro
