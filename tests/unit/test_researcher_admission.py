from __future__ import annotations

import orjson
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


def test_tickers_come_from_the_field_then_the_topic() -> None:
    source = CsvDataSource()
    parse = admission.parse
    assert admission.tickers(parse(b'{"topic": "x", "ticker": "nova"}'), source) == ["NOVA"]
    assert admission.tickers(parse(b'{"topic": "GLOBX vs ACME?"}'), source) == ["GLOBX", "ACME"]
    with pytest.raises(errors.InvalidRequestError) as caught:
        admission.tickers(parse(b'{"topic": "x", "ticker": "ZZZ"}'), source)
    assert caught.value.code == "unknown_ticker"


@pytest.mark.parametrize(
    ("topic", "named"), [("Is Apple a buy?", ""), ("AAPL vs MSFT", " (no data for AAPL, MSFT)")]
)
def test_a_topic_the_data_source_has_nothing_on_is_refused_listing_what_it_has(
    topic: str, named: str
) -> None:
    source = CsvDataSource()

    with pytest.raises(errors.InvalidRequestError) as caught:
        admission.tickers(admission.parse(orjson.dumps({"topic": topic})), source)

    assert (caught.value.code, caught.value.param) == ("unknown_topic", "topic")
    assert f"has{named}: " in str(caught.value)
    assert "ACME, GLOBX, NOVA" in str(caught.value)


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


def test_a_plan_model_the_key_may_not_call_is_refused_naming_it() -> None:
    calls = plan.plan_calls("quick", {})

    admission.check_models(calls, ["gpt-4o-mini", "claude-3-5-haiku", "other"])
    with pytest.raises(errors.InvalidRequestError) as caught:
        admission.check_models(calls, ["claude-3-5-haiku"])

    assert (caught.value.code, caught.value.param) == ("model_not_allowed", "models")
    assert "may not call gpt-4o-mini" in str(caught.value)
    assert "(it may call: claude-3-5-haiku)" in str(caught.value)


def test_a_cap_below_the_worst_case_of_one_call_is_refused_naming_both() -> None:
    est = plan.Estimate(
        calls=3,
        input_tokens=900,
        max_output_tokens=900,
        buckets=(plan.BucketRange("credit", 100, 5_000),),
        seconds=1.5,
        first_call_micro={"credit": 1_700},
    )

    with pytest.raises(errors.InvalidRequestError) as caught:
        admission.check_money(est, {"credit": 1_699}, {"credit": 10_000})

    assert (caught.value.status, caught.value.param) == (400, "cap.credit")
    assert caught.value.code == "cap_below_one_call"
    assert "cap.credit is 0.001699" in caught.value.message
    assert "up to 0.001700" in caught.value.message
    assert admission.check_money(est, {"credit": 1_700}, {"credit": 10_000}) == {"credit": 1_700}


def test_route_types_the_key_may_not_use_are_refused_before_the_estimate() -> None:
    req = admission.parse(b'{"topic": "ACME"}')

    with pytest.raises(errors.InvalidRequestError) as caught:
        admission.check_route_types(req, ("pool",))

    assert (caught.value.param, caught.value.code) == ("route_types", "route_type_not_allowed")
    assert "may not use direct routes" in caught.value.message
    assert "it may use: pool" in caught.value.message
    admission.check_route_types(req, ("direct", "pool"))
    admission.check_route_types(req, None)
