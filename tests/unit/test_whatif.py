"""What-if routing: the policy document, the pricing of one request under it, the sums."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.events.pricing import CostPrice, Price, Usage, cost_micro, upstream_cost_micro
from tollway.whatif.decode import Decoder
from tollway.whatif.engine import Channels, Circuits, LoggedRequest, Route, price_request
from tollway.whatif.policy import Policy, PolicyError, load_policy, parse_policy

if TYPE_CHECKING:
    from tollway.whatif.report import Report
from tollway.whatif.source import price_all

DIRECT = Route(
    "openai-direct",
    "openai-direct",
    "direct",
    "credit",
    Price(input=150_000, output=600_000),
    CostPrice(input=100_000, output=400_000, currency="credit"),
)
BACKUP = Route(
    "openai-backup", "openai-backup", "direct", "credit", Price(input=150_000, output=600_000)
)
POOL = Route(
    "openai-pool",
    "openai-pool",
    "pool",
    "wallet",
    Price(input=1_000_000, output=4_000_000),
    CostPrice(input=700_000, output=2_000_000, currency="CNY", per_request=3),
)
PLAN = (DIRECT, BACKUP, POOL)
USAGE = Usage(input_tokens=1234, output_tokens=567)
T0 = 1_800_000_000_000_000


def request(
    served: Route | None = DIRECT,
    *,
    at: int = T0,
    skipped: frozenset[str] = frozenset(),
    **who: str,
) -> LoggedRequest:
    return LoggedRequest(
        request_id=f"r{at}",
        at_us=at,
        account_id="a",
        key_id=who.get("key", "k1"),
        project_id=who.get("project", "p1"),
        model=who.get("model", "gpt-4o-mini"),
        plan=PLAN,
        served=served,
        usage=USAGE if served else None,
        skipped_open=skipped,
    )


def priced(req: LoggedRequest, policy: Policy, circuits: Circuits | None = None):
    return price_request(req, policy, (circuits or Circuits()).seal(), Channels())


# -- the policy document --------------------------------------------------------------------


def test_reads_a_toml_policy_with_every_kind_of_rule() -> None:
    policy = load_policy(
        """
        [[rules]]
        model = "gpt-4o-mini"
        project = "p1"
        route_type = "pool"

        [[rules]]
        key = "k9"
        channel = "openai-backup"

        [[primary]]
        model = "claude-3-5-haiku"
        channel = "anthropic-backup"

        [prices.openai-pool]
        sell = { input = "0.9", output = "3.6" }
        cost = { currency = "CNY", input = "0.5", output = "2", per_request = "0.000003" }

        [units]
        wallet = "CNY"
        """,
        "p.toml",
    )
    assert policy.rules[0].route_type == "pool"
    assert policy.rules[1].channel == "openai-backup"
    assert policy.primary[0].channel == "anthropic-backup"
    assert policy.prices["openai-pool"].sell == Price(input=900_000, output=3_600_000)
    cost = policy.prices["openai-pool"].cost
    assert cost == CostPrice(input=500_000, output=2_000_000, currency="CNY", per_request=3)
    assert policy.units == {"wallet": "CNY"}


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"rules": [{"model": "m"}]}, "rules[0]", "exactly one of"),
        ({"rules": [{"route_type": "pool", "channel": "c"}]}, "rules[0]", "exactly one of"),
        ({"rules": [{"route_type": "cheap"}]}, "rules[0].route_type", "'direct' or 'pool'"),
        ({"rules": [{"channel": "c", "modle": "m"}]}, "rules[0].modle", "unknown field"),
        ({"prices": {"c": {"sell": {"input": "1e3", "output": "1"}}}}, "prices.c.sell", "ASCII"),
        ({"prices": {"c": {"sell": {"input": "1", "outptu": "1"}}}}, "prices.c.sell", "outptu"),
        ({"prices": {"c": {"cost": {"input": "1", "output": "1"}}}}, "prices.c.cost.currency", ""),
        ({"primary": [{"model": "m"}]}, "primary[0].channel", "required"),
        ({"prices": {"c": {"sell": "cheap"}}}, "prices.c.sell", "a table of prices"),
        ({"units": {"wallet": 5}}, "units.wallet", "string"),
        ({}, "policy", "changes nothing"),
        ([], "policy", "expected an object"),
    ],
)
def test_refuses_a_policy_it_cannot_apply_naming_the_field(
    data: object, field: str, words: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(data)
    assert caught.value.field == field
    assert words in caught.value.message


def test_refuses_text_that_is_not_json() -> None:
    with pytest.raises(PolicyError, match="not valid JSON"):
        load_policy("{rules: ", "p.json")


# -- routing rules --------------------------------------------------------------------------


def test_a_channel_rule_moves_the_request_and_prices_the_same_tokens_there() -> None:
    out = priced(request(), parse_policy({"rules": [{"channel": "openai-pool"}]}))
    assert out.kind == "compared"
    assert out.current is not None
    assert out.alternative is not None
    assert out.current.charge_micro == cost_micro(USAGE, DIRECT.price)
    assert out.alternative.route is POOL
    assert out.alternative.charge_micro == cost_micro(USAGE, POOL.price)
    assert POOL.cost is not None
    assert out.alternative.cost_micro == upstream_cost_micro(USAGE, POOL.cost)


def test_a_rule_selects_by_model_project_and_key_only() -> None:
    policy = parse_policy(
        {"rules": [{"model": "gpt-4o-mini", "project": "p2", "channel": "openai-pool"}]}
    )
    assert priced(request(project="p1"), policy).alternative.route is DIRECT  # type: ignore[union-attr]
    assert priced(request(project="p2"), policy).alternative.route is POOL  # type: ignore[union-attr]
    assert priced(request(project="p2", model="o"), policy).alternative.route is DIRECT  # type: ignore[union-attr]


def test_a_route_type_rule_takes_the_first_route_of_that_type_in_the_plan() -> None:
    out = priced(request(served=POOL), parse_policy({"rules": [{"route_type": "direct"}]}))
    assert out.alternative is not None
    assert out.alternative.route is DIRECT


def test_a_request_already_on_the_asked_route_type_stays_where_it_was_served() -> None:
    out = priced(request(served=BACKUP), parse_policy({"rules": [{"route_type": "direct"}]}))
    assert out.alternative is not None
    assert out.alternative.route is BACKUP


def test_a_primary_rule_puts_the_channel_first() -> None:
    out = priced(
        request(), parse_policy({"primary": [{"model": "gpt-4o-mini", "channel": "openai-pool"}]})
    )
    assert out.alternative is not None
    assert out.alternative.route is POOL


def test_a_price_override_reprices_requests_left_on_their_channel() -> None:
    policy = parse_policy({"prices": {"openai-direct": {"sell": {"input": "1", "output": "2"}}}})
    out = priced(request(), policy)
    assert out.alternative is not None
    assert out.alternative.route.channel_id == "openai-direct"
    assert out.alternative.charge_micro == cost_micro(
        USAGE, Price(input=1_000_000, output=2_000_000)
    )
    assert out.alternative.cost_micro == out.current.cost_micro  # type: ignore[union-attr]


def test_a_channel_without_a_cost_price_has_an_unknown_cost_never_zero() -> None:
    out = priced(request(served=BACKUP), parse_policy({"rules": [{"channel": "openai-pool"}]}))
    assert out.current is not None
    assert out.current.cost_micro is None


def test_a_channel_no_plan_or_override_prices_is_unroutable() -> None:
    out = priced(request(), parse_policy({"rules": [{"channel": "elsewhere"}]}))
    assert out.kind == "unroutable"


def test_an_override_can_describe_a_channel_no_plan_shows() -> None:
    policy = parse_policy(
        {
            "rules": [{"channel": "new-pool"}],
            "prices": {
                "new-pool": {
                    "sell": {"input": "0.5", "output": "1"},
                    "bucket": "wallet",
                    "route_type": "pool",
                }
            },
        }
    )
    out = priced(request(), policy)
    assert out.alternative is not None
    assert out.alternative.charge_micro == cost_micro(USAGE, Price(input=500_000, output=1_000_000))


# -- circuits ------------------------------------------------------------------------------


def test_a_target_whose_circuit_was_open_then_would_have_failed() -> None:
    circuits = Circuits()
    circuits.observe("openai-pool", T0 - 10, is_open=True)
    circuits.observe("openai-pool", T0 + 10, is_open=False)
    policy = parse_policy({"rules": [{"channel": "openai-pool"}]})
    assert priced(request(), policy, circuits).kind == "alternative_failed"
    later = Circuits()
    later.observe("openai-pool", T0 - 10, is_open=True)
    later.observe("openai-pool", T0 - 5, is_open=False)
    assert priced(request(), policy, later).kind == "compared"


def test_a_candidate_the_request_itself_skipped_as_open_would_have_failed() -> None:
    policy = parse_policy({"rules": [{"channel": "openai-pool"}]})
    out = priced(request(skipped=frozenset({"openai-pool"})), policy)
    assert out.kind == "alternative_failed"
    assert "circuit_open" in out.reason


def test_a_route_type_rule_skips_open_candidates_and_fails_when_all_are_open() -> None:
    circuits = Circuits()
    circuits.observe("openai-direct", T0 - 1, is_open=True)
    policy = parse_policy({"rules": [{"route_type": "direct"}]})
    out = priced(request(served=POOL), policy, circuits)
    assert out.alternative is not None
    assert out.alternative.route is BACKUP
    circuits = Circuits()
    circuits.observe("openai-direct", T0 - 1, is_open=True)
    circuits.observe("openai-backup", T0 - 1, is_open=True)
    assert priced(request(served=POOL), policy, circuits).kind == "alternative_failed"


def test_an_open_primary_leaves_the_request_where_its_plan_served_it() -> None:
    circuits = Circuits()
    circuits.observe("openai-pool", T0 - 1, is_open=True)
    policy = parse_policy({"primary": [{"model": "gpt-4o-mini", "channel": "openai-pool"}]})
    out = priced(request(), policy, circuits)
    assert out.alternative is not None
    assert out.alternative.route is DIRECT


# -- the report ----------------------------------------------------------------------------


def _report(
    requests: list[LoggedRequest], policy: Policy, circuits: Circuits | None = None
) -> Report:
    start = datetime(2027, 1, 1, tzinfo=UTC)
    sealed = (circuits or Circuits()).seal()
    return price_all(requests, sealed, Channels(), policy, start=start, end=start)


def test_failed_and_unserved_requests_are_counted_apart_not_priced() -> None:
    circuits = Circuits()
    circuits.observe("openai-pool", T0 + 5, is_open=True)
    reqs = [request(at=T0), request(at=T0 + 10), request(served=None, at=T0 + 20)]
    data = _report(reqs, parse_policy({"rules": [{"channel": "openai-pool"}]}), circuits).as_json()
    assert data["requests"] == 3
    assert data["compared"] == 1
    assert data["apart"]["alternative_failed"]["requests"] == 1
    assert data["apart"]["not_served"]["requests"] == 1
    assert data["total"]["alternative"]["charge_micro"] == {"wallet": cost_micro(USAGE, POOL.price)}


def test_margin_is_taken_only_where_the_cost_is_in_the_buckets_unit() -> None:
    policy = parse_policy({"rules": [{"channel": "openai-pool"}], "units": {"credit": "credit"}})
    data = _report([request()], policy).as_json()
    assert DIRECT.cost is not None
    cur = data["total"]["current"]
    assert cur["margin_micro"] == {
        "credit": cost_micro(USAGE, DIRECT.price) - upstream_cost_micro(USAGE, DIRECT.cost)
    }
    alt = data["total"]["alternative"]
    assert alt["margin_micro"] == {}  # wallet's unit is not given
    assert alt["margin_unknown"] == 1


tokens = st.integers(min_value=0, max_value=2_000_000)


@given(st.lists(st.tuples(tokens, tokens, st.sampled_from(PLAN)), min_size=1, max_size=40))
def test_sums_are_exact_sums_of_each_requests_one_rounding(
    rows: list[tuple[int, int, Route]],
) -> None:
    reqs = [
        LoggedRequest(
            f"r{i}",
            T0 + i,
            "a",
            "k",
            "p",
            "gpt-4o-mini",
            PLAN,
            served,
            Usage(input_tokens=i_tok, output_tokens=o_tok),
        )
        for i, (i_tok, o_tok, served) in enumerate(rows)
    ]
    policy = parse_policy({"rules": [{"channel": "openai-pool"}]})
    data = _report(reqs, policy).as_json()
    want_alt = sum(cost_micro(r.usage, POOL.price) for r in reqs if r.usage)
    assert data["total"]["alternative"]["charge_micro"] == {"wallet": want_alt}
    want_cur: dict[str, int] = {}
    for r in reqs:
        assert r.served is not None
        assert r.usage is not None
        want_cur[r.served.bucket] = want_cur.get(r.served.bucket, 0) + cost_micro(
            r.usage, r.served.price
        )
    assert data["total"]["current"]["charge_micro"] == want_cur
    diff = data["total"]["difference"]["charge_micro"]
    assert diff["wallet"] == want_alt - want_cur.get("wallet", 0)
    by_model = data["groups"]["model"][0]
    assert by_model["alternative"] == data["total"]["alternative"]
    csv_text = _report(reqs, policy).as_csv()
    assert f"total,all,charge_micro,wallet,{want_cur.get('wallet', 0)},{want_alt}," in csv_text


def test_a_record_that_does_not_decode_is_counted_and_skipped_not_fatal() -> None:
    decoder = Decoder(0, 2**62)
    decoder.feed(b'{"id":"e1","type":"request.received","payload":{"plan":[{"channel_id":1}]}}')
    decoder.feed(b'{"id":"e2","type":"request.finished", not json')
    decoder.feed(b"\x00\x01")
    assert decoder.unreadable == 2
    assert decoder.requests() == []


@given(
    st.lists(st.tuples(st.sampled_from(PLAN), st.integers(-50, 50), st.booleans()), max_size=12),
    st.sampled_from([{"route_type": "pool"}, {"route_type": "direct"}, {"channel": "openai-pool"}]),
    st.sampled_from(PLAN),
)
def test_a_moved_request_never_lands_on_a_channel_open_at_its_time(
    seen: list[tuple[Route, int, bool]], target: dict[str, str], served: Route
) -> None:
    circuits = Circuits()
    for route, offset, is_open in seen:
        circuits.observe(route.channel_id, T0 + offset, is_open=is_open)
    circuits.seal()
    out = price_request(request(served), parse_policy({"rules": [target]}), circuits, Channels())
    if out.kind == "compared" and out.alternative is not None:
        route = out.alternative.route
        assert route is served or not circuits.open_at(route.channel_id, T0)
    else:
        assert out.kind == "alternative_failed"
        assert out.alternative is None
