"""Pure hard-limit decisions: windows on event time, task route rules, holds within budgets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.events.gateway import Candidate, RequestFinished, RequestReceived
from tollway.events.pricing import Price, Usage
from tollway.ledger import limits_domain as ld
from tollway.ledger.fold_limits import UsageRow

NOW = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)


def _cand(name: str, route_type: str, bucket: str, p_out: int = 1_000_000) -> Candidate:
    return Candidate(
        channel_id=name,
        channel=name,
        brand="b",
        route_type=route_type,  # type: ignore[arg-type]
        bucket=bucket,
        upstream_model="m",
        price=Price(input=0, output=p_out),
    )


DIRECT = _cand("d1", "direct", "credit")
BACKUP = _cand("d2", "direct", "credit")
POOL = _cand("p1", "pool", "wallet", 2_000_000)
PLAN = [DIRECT, BACKUP, POOL]


def _req(task_id: str | None = None, max_out: int = 10) -> RequestReceived:
    return RequestReceived(
        request_id="r",
        edge_id="e",
        account_id="a",
        key_id="k",
        project_id="p",
        task_id=task_id,
        catalog_model="m",
        body={},
        plan=PLAN,
        estimated_input_tokens=5,
        max_output_tokens=max_out,
        deadline_at=NOW,
    )


def _budget(amount: int, scope: str = "account", scope_id: str = "a", **kw: Any) -> ld.Budget:
    fields: dict[str, Any] = {
        "budget_id": f"b-{scope}-{scope_id}",
        "name": "n",
        "scope": scope,
        "scope_id": scope_id,
        "window": "lifetime",
        "timezone": "UTC",
        "unit": "credit",
        "bucket": "credit",
        "amount": amount,
        "mode": "hard",
    }
    return ld.Budget(**{**fields, **kw})


def test_rolling_windows_count_back_from_the_event_time() -> None:
    assert ld.window_start("minute", "UTC", NOW) == NOW - timedelta(minutes=1)
    assert ld.window_start("hour", "UTC", NOW) == NOW - timedelta(hours=1)
    assert ld.window_start("lifetime", "UTC", NOW) is None


def test_calendar_windows_start_at_midnight_in_the_budgets_time_zone() -> None:
    day = ld.window_start("day", "Asia/Shanghai", NOW)  # 07:30 on 1 April in Shanghai
    month = ld.window_start("month", "Asia/Shanghai", NOW)

    assert day == datetime(2026, 3, 31, 16, 0, tzinfo=UTC)
    assert month == datetime(2026, 3, 31, 16, 0, tzinfo=UTC)
    assert ld.window_start("month", "UTC", NOW) == datetime(2026, 3, 1, tzinfo=UTC)


def test_task_route_types_and_fallback_rules_cut_the_plan() -> None:
    def rule(types: tuple[str, ...], fallback: str) -> ld.TaskRule:
        return ld.TaskRule("t", "open", types, fallback)

    assert ld.allowed_plan(PLAN, None) == PLAN
    assert ld.allowed_plan(PLAN, rule(("pool",), "any")) == [POOL]
    assert ld.allowed_plan(PLAN, rule(("direct", "pool"), "same_route_type")) == [DIRECT, BACKUP]
    assert ld.allowed_plan([POOL, DIRECT], rule(("direct", "pool"), "none")) == [POOL]
    assert ld.allowed_plan(PLAN, rule(("direct", "pool"), "any")) == PLAN
    assert ld.allowed_plan([POOL, DIRECT, BACKUP], rule(("direct",), "same_route_type")) == [
        DIRECT,
        BACKUP,
    ]


def test_no_fallback_means_the_primary_alone_not_a_backup_of_its_route_type_and_bucket() -> None:
    none = ld.TaskRule("t", "open", ("direct", "pool"), "none")

    assert ld.allowed_plan(PLAN, none) == [DIRECT]  # not BACKUP, though direct and credit too
    assert ld.allowed_plan(PLAN, ld.TaskRule("t", "open", ("pool",), "none")) == [POOL]


def test_one_group_per_bucket_reserving_its_worst_case() -> None:
    groups = ld.bucket_groups(PLAN, est_in=5, max_out=10)

    assert [(g.bucket, [c.channel_id for c in g.candidates]) for g in groups] == [
        ("credit", ["d1", "d2"]),
        ("wallet", ["p1"]),
    ]
    assert [g.worst_micro for g in groups] == [10, 20]
    assert groups[0].tokens == 15


def test_a_hold_beyond_a_task_envelope_is_refused_naming_the_task() -> None:
    task = _budget(25, "task", "t1", budget_id="task:t1:credit")
    state = ld.LimitState(budgets=[task], used={"task:t1:credit": 20})
    [group, _] = ld.bucket_groups(PLAN, 5, 10)

    charges, refusal = ld.decide_group(state, _req("t1"), group, "credit", available=10**9)

    assert charges == []
    assert refusal is not None
    assert refusal.limit == "task:t1"
    assert refusal.code == "task_budget_insufficient"
    assert "t1" in refusal.message
    # Not "exhausted": 5 remain, and the message says what this request needs.
    assert "exhausted" not in refusal.message
    assert "worst case does not fit" in refusal.message
    assert "needs up to 10 micro-credit" in refusal.message
    assert "5 of 25 remain" in refusal.message


def test_a_task_envelope_with_nothing_left_is_exhausted() -> None:
    task = _budget(25, "task", "t1", budget_id="task:t1:credit")
    state = ld.LimitState(budgets=[task], used={"task:t1:credit": 25})
    [group, _] = ld.bucket_groups(PLAN, 5, 10)

    _, refusal = ld.decide_group(state, _req("t1"), group, "credit", available=10**9)

    assert refusal is not None
    assert refusal.code == "task_budget_exhausted"
    assert "exhausted" in refusal.message


def test_the_bucket_balance_is_checked_before_budgets() -> None:
    state = ld.LimitState(budgets=[_budget(1000)], used={})
    [group, _] = ld.bucket_groups(PLAN, 5, 10)

    _, refusal = ld.decide_group(state, _req(), group, "credit", available=9)

    assert refusal is not None
    assert refusal.limit == "bucket:credit"


def test_budgets_of_other_scopes_buckets_or_channels_do_not_apply() -> None:
    budgets = [
        _budget(1, "key", "other-key"),
        _budget(1, "task", "t-other"),
        _budget(1, "channel", "p1"),
        _budget(1, bucket="wallet", unit="CNY"),
        _budget(1, mode="soft"),
    ]
    state = ld.LimitState(budgets=budgets, used={})
    [group, _] = ld.bucket_groups(PLAN, 5, 10)

    _, refusal = ld.decide_group(state, _req(), group, "credit", available=10**9)

    assert refusal is None


def test_a_token_budget_counts_a_request_once_across_its_buckets() -> None:
    tokens = _budget(15, unit="tokens", bucket=None)
    state = ld.LimitState(budgets=[tokens], used={})
    credit, wallet = ld.bucket_groups(PLAN, 5, 10)

    first, refused_first = ld.decide_group(state, _req(), credit, "credit", 10**9)
    ld.apply_charges(state, first)
    second, refused_second = ld.decide_group(state, _req(), wallet, "CNY", 10**9)

    assert (refused_first, refused_second) == (None, None)
    assert [c.amount for c in first] == [15]
    assert [c.amount for c in second] == [0]


def test_thresholds_are_crossed_once_each() -> None:
    assert ld.crossed(100, 0, 49) == []
    assert ld.crossed(100, 49, 50) == [50]
    assert ld.crossed(100, 50, 100) == [80, 100]
    assert ld.crossed(100, 100, 120) == []


def test_spend_counts_only_on_the_served_hold_and_tokens_once() -> None:
    budgets = {"m": _budget(100, budget_id="m"), "t": _budget(100, unit="tokens", budget_id="t")}
    rows = [
        UsageRow("m", "h1", "r", NOW, 10, 0, ("d1", "d2")),
        UsageRow("t", "h1", "r", NOW, 10, 0, ("d1", "d2")),
        UsageRow("t", "h2", "r", NOW, 10, 0, ("p1",)),
    ]
    fin = RequestFinished(
        request_id="r",
        account_id="a",
        hold_id="h1",
        served_attempt=1,
        served_channel_id="p1",
        served_bucket="wallet",
        usage=Usage(input_tokens=3, output_tokens=4),
        price=Price(input=1, output=1),
        status=200,
        attempts=1,
    )

    spends = ld.spend_of_request(rows, budgets, fin, settled_hold="h2", charged=9)

    assert [(s.budget_id, s.hold_id, s.amount) for s in spends] == [
        ("m", "h1", 0),
        ("t", "h1", 0),
        ("t", "h2", 7),
    ]


# An operation: place a hold of worst case w (index 0), or settle open hold #i charging a
# fraction of what it held (index 1).
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("hold"), st.integers(1, 20), st.just(0.0)),
        st.tuples(st.just("settle"), st.integers(0, 50), st.floats(0, 1)),
    ),
    max_size=80,
)


@settings(max_examples=300)
@given(ops=OPS, amount=st.integers(1, 200), balance=st.integers(0, 400))
def test_no_sequence_of_holds_and_settles_exceeds_a_hard_limit(
    ops: list[tuple[str, int, float]], amount: int, balance: int
) -> None:
    budget = _budget(amount, "task", "t", budget_id="task")
    open_holds: list[int] = []
    spent = 0
    available = balance
    for kind, n, fraction in ops:
        if kind == "hold":
            req = _req("t", max_out=n)
            [group, _] = ld.bucket_groups(req.plan, 0, n)
            state = ld.LimitState(budgets=[budget], used={"task": sum(open_holds) + spent})
            charges, refusal = ld.decide_group(state, req, group, "credit", available)
            if refusal is None:
                open_holds.append(group.worst_micro)
                available -= group.worst_micro
                assert [c.amount for c in charges] == [group.worst_micro]
        elif open_holds:
            held = open_holds.pop(n % len(open_holds))
            charge = int(held * fraction)
            spent += charge
            available += held - charge
        assert sum(open_holds) + spent <= amount
        assert available >= 0


def test_a_task_spends_only_from_the_buckets_of_its_envelope() -> None:
    task = _budget(10**6, "task", "t1", budget_id="task:t1:credit")
    state = ld.LimitState(budgets=[task], used={})
    [_, wallet] = ld.bucket_groups(PLAN, 5, 10)

    _, refusal = ld.decide_group(state, _req("t1"), wallet, "CNY", available=10**9)

    assert refusal is not None
    assert (refusal.limit, refusal.code) == ("task:t1", "task_bucket_not_allowed")
