from __future__ import annotations

import pytest

from tollway.researcher import admission, errors, plan
from tollway.researcher.market import CsvDataSource

EST = plan.Estimate(
    calls=3,
    input_tokens=900,
    max_output_tokens=900,
    buckets=(plan.BucketRange("credit", 100, 5_000),),
    seconds=1.5,
)


def test_tickers_come_from_the_field_then_the_topic_then_the_whole_set() -> None:
    source = CsvDataSource()
    parse = admission.parse
    assert admission.tickers(parse(b'{"topic": "x", "ticker": "nova"}'), source) == ["NOVA"]
    assert admission.tickers(parse(b'{"topic": "GLOBX vs ACME?"}'), source) == ["GLOBX", "ACME"]
    assert admission.tickers(parse(b'{"topic": "markets"}'), source) == source.tickers()
    with pytest.raises(errors.InvalidRequestError) as caught:
        admission.tickers(parse(b'{"topic": "x", "ticker": "ZZZ"}'), source)
    assert caught.value.code == "unknown_ticker"


def test_an_invalid_body_names_the_field() -> None:
    with pytest.raises(errors.InvalidRequestError) as caught:
        admission.parse(b'{"topic": "", "mode": "quick"}')
    assert caught.value.param == "topic"
    assert caught.value.body()["error"]["type"] == "invalid_request_error"


def test_a_balance_below_the_upper_estimate_is_refused_unless_capped() -> None:
    with pytest.raises(errors.InsufficientBudgetError) as caught:
        admission.check_money(EST, {}, {"credit": 4_999})
    assert "credit: needs 0.005000, has 0.004999" in caught.value.message
    assert caught.value.status == 402
    assert admission.check_money(EST, {"credit": 4_000}, {"credit": 4_999}) == {"credit": 4_000}
    assert admission.check_money(EST, {}, {"credit": 5_000}) == {"credit": 5_000}


def test_a_cap_on_a_bucket_the_run_does_not_use_is_a_400() -> None:
    with pytest.raises(errors.InvalidRequestError) as caught:
        admission.check_money(EST, {"wallet": 1}, {"credit": 10_000})
    assert caught.value.param == "cap.wallet"
