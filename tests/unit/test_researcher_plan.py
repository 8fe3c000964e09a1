from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.edge.chat import estimate_tokens
from tollway.events.pricing import Price, Usage, cost_micro
from tollway.researcher import plan
from tollway.researcher.plan import Candidate

FACTS = "ACME: Last close 179.82; Total return 50.30%"
ROUTES = {
    "gpt-4o-mini": [
        Candidate("direct", "credit", Price(input=150_000, output=600_000)),
        Candidate("direct", "credit", Price(input=200_000, output=700_000)),
        Candidate("pool", "wallet", Price(input=1_000_000, output=4_000_000)),
    ],
    "claude-3-5-haiku": [
        Candidate("direct", "credit", Price(input=800_000, output=4_000_000)),
        Candidate("pool", "wallet", Price(input=5_000_000, output=25_000_000)),
    ],
}


def _estimate(mode: plan.Mode, route_types: list[plan.RouteType] | None = None) -> plan.Estimate:
    return plan.estimate(
        plan.plan_calls(mode, {}),
        topic="ACME",
        facts=FACTS,
        routes=ROUTES,
        route_types=route_types or ["direct"],
        seconds_per_call=0.5,
    )


def test_modes_differ_in_sections_depth_and_tiers() -> None:
    quick, standard, deep = (plan.plan_calls(m, {}) for m in ("quick", "standard", "deep"))
    assert len(quick) == 3
    assert len(standard) == 5
    assert len(deep) == 13
    assert {c.model for c in quick} == {"gpt-4o-mini"}
    assert {c.model for c in deep} == {"gpt-4o-mini", "claude-3-5-haiku"}
    assert [c.step for c in deep[:2]] == ["draft", "revise"]
    assert deep[-1].step == "summary"


def test_models_can_be_chosen_per_tier() -> None:
    calls = plan.plan_calls("deep", {"strong": "gpt-4o-mini"})
    assert {c.model for c in calls} == {"gpt-4o-mini"}


@given(draft=st.text(max_size=3 * plan.DRAFT_QUOTE_CHARS))
def test_the_worst_input_count_covers_what_the_gateway_will_count_for_any_draft(draft) -> None:
    [_, revise, *_] = plan.plan_calls("deep", {})
    sent = plan.messages(revise, "ACME", FACTS, draft)
    assert plan.worst_input_tokens(revise, "ACME", FACTS) >= estimate_tokens(sent)


def test_the_upper_estimate_is_each_calls_worst_case_on_the_dearest_route_of_the_bucket() -> None:
    calls = plan.plan_calls("quick", {})
    expected = sum(
        cost_micro(
            Usage(
                input_tokens=plan.worst_input_tokens(c, "ACME", FACTS), output_tokens=c.max_tokens
            ),
            Price(input=200_000, output=700_000),
        )
        for c in calls
    )
    est = _estimate("quick")
    [bucket] = est.buckets
    assert (bucket.bucket, bucket.high_micro) == ("credit", expected)
    assert 0 < bucket.low_micro < bucket.high_micro


def test_pool_only_runs_are_estimated_in_the_pool_bucket() -> None:
    assert [b.bucket for b in _estimate("deep", ["pool"]).buckets] == ["wallet"]


def test_a_model_without_a_usable_route_cannot_be_estimated() -> None:
    with pytest.raises(LookupError):
        plan.estimate(
            plan.plan_calls("quick", {"fast": "nope"}),
            topic="x",
            facts=FACTS,
            routes=ROUTES,
            route_types=["direct"],
            seconds_per_call=1,
        )


def test_a_cap_replaces_the_upper_estimate_and_shortfall_names_what_is_missing() -> None:
    est = _estimate("deep")
    high = est.high()["credit"]
    assert plan.envelope(est, {}) == {"credit": high}
    assert plan.envelope(est, {"credit": 10}) == {"credit": 10}
    assert plan.shortfall({"credit": high}, {"credit": high - 1}) == {"credit": 1}
    assert plan.shortfall({"credit": high}, {"credit": high}) == {}
    assert plan.shortfall({"credit": 5}, {}) == {"credit": 5}


def test_the_first_call_of_each_bucket_is_its_worst_case_on_the_dearest_route() -> None:
    [first, *_] = plan.plan_calls("deep", {})
    worst = Usage(
        input_tokens=plan.worst_input_tokens(first, "ACME", FACTS), output_tokens=first.max_tokens
    )

    est = _estimate("deep")

    assert est.first_call_micro == {
        "credit": cost_micro(worst, Price(input=200_000, output=700_000))
    }
    assert est.first_call_micro["credit"] < est.high()["credit"]
