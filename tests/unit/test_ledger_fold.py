"""The ledger's folded hot path (tollway.ledger.fold): the decisions production runs, pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tollway.events.envelope import Envelope, make
from tollway.events.gateway import Candidate, RequestFinished, RequestReceived
from tollway.events.ids import derived_id
from tollway.events.ledger import HoldPlaced, HoldRejected, HoldReleased, HoldSettled
from tollway.events.pricing import Price, Usage, cost_micro, worst_case_micro
from tollway.ledger import fold, fold_usage

AT = datetime(2026, 4, 1, tzinfo=UTC)


def _candidate(name: str, bucket: str, p_in: int, p_out: int) -> Candidate:
    return Candidate(
        channel_id=name,
        channel=name,
        brand="b",
        route_type="direct",
        bucket=bucket,
        upstream_model="m",
        price=Price(input=p_in, output=p_out),
    )


def _request(plan: list[Candidate], max_out: int = 1000) -> Envelope[RequestReceived]:
    req = RequestReceived(
        request_id=f"req_{max_out}_{len(plan)}_{plan[0].channel}",
        edge_id="e",
        account_id="a",
        key_id="k",
        project_id="p",
        catalog_model="m",
        body={},
        plan=plan,
        estimated_input_tokens=100,
        max_output_tokens=max_out,
        deadline_at=AT + timedelta(minutes=5),
    )
    return make(req, occurred_at=AT)


def _state(credit: int, wallet: int | None = None) -> fold.State:
    state = fold.State(units={("a", "credit"): "credit"}, balances={("a/credit", "credit"): credit})
    if wallet is not None:
        state.units[("a", "wallet")] = "wallet"
        state.balances[("a/wallet", "wallet")] = wallet
    return state


def _apply(state: fold.State, decision: fold.Decision) -> fold.Effects:
    effects = fold.Effects()
    fold.evolve(state, effects, decision)
    return effects


def _journal(decision: fold.Decision) -> list[object]:
    return [item.payload for kind, item in decision.steps if kind == "journal"]


@given(st.integers(0, 10**6), st.integers(1, 4000))
def test_a_hold_is_placed_only_when_the_bucket_covers_its_worst_case(
    available: int, max_out: int
) -> None:
    plan = [_candidate("a", "credit", 150_000, 600_000)]
    worst = worst_case_micro(100, max_out, plan[0].price)
    events = _journal(fold.decide_request(_state(available), _request(plan, max_out), 0))
    if worst <= available:
        assert [type(e) for e in events] == [HoldPlaced]
    else:
        assert [type(e) for e in events] == [HoldRejected]


def test_the_hold_covers_the_dearest_candidate_of_the_primary_bucket() -> None:
    plan = [
        _candidate("a", "credit", 100, 1000),
        _candidate("b", "credit", 200, 3000),
        _candidate("c", "wallet", 10**9, 10**9),
    ]
    decision = fold.decide_request(_state(10**12, wallet=0), _request(plan), 0)
    placed, refused = _journal(decision)
    assert isinstance(placed, HoldPlaced)
    assert placed.amount_micro == worst_case_micro(100, 1000, plan[1].price)
    assert isinstance(refused, HoldRejected)
    assert refused.limit == "bucket:wallet"


def test_a_placed_hold_is_folded_so_the_next_request_sees_less() -> None:
    plan = [_candidate("a", "credit", 150_000, 600_000)]
    worst = worst_case_micro(100, 1000, plan[0].price)
    state = _state(worst + worst // 2)
    first = fold.decide_request(state, _request(plan), 0)
    _apply(state, first)
    assert state.available("a", "credit", "credit") == worst // 2
    second = _request([_candidate("z", "credit", 150_000, 600_000)])
    assert [type(e) for e in _journal(fold.decide_request(state, second, 1))] == [HoldRejected]


def test_a_served_finish_settles_its_hold_and_releases_the_other_bucket() -> None:
    plan = [_candidate("a", "credit", 150_000, 600_000), _candidate("w", "wallet", 1, 1)]
    state = _state(10**9, wallet=10**9)
    req = _request(plan)
    effects = _apply(state, fold.decide_request(state, req, 0))
    assert len(effects.opened) == 2
    usage = Usage(input_tokens=80, output_tokens=300)
    fin = RequestFinished(
        request_id=req.payload.request_id,
        account_id="a",
        hold_id="hold_" + derived_id(req.id, "hold"),
        served_attempt=1,
        served_channel_id="a",
        served_bucket="credit",
        usage=usage,
        price=plan[0].price,
        status=200,
        attempts=1,
    )
    decision = fold_usage.decide_finish(state, make(fin, occurred_at=AT + timedelta(seconds=3)))
    settled, released = _journal(decision)
    assert isinstance(settled, HoldSettled)
    assert settled.charged_micro == cost_micro(usage, plan[0].price)
    assert isinstance(released, HoldReleased)
    assert released.bucket == "wallet"
    _apply(state, decision)
    assert {h.status for h in state.holds[req.payload.request_id]} == {"settled", "released"}
    assert state.available("a", "credit", "credit") == 10**9 - settled.charged_micro
    receipt = state.receipts[req.payload.request_id].body
    assert receipt["status"] == "settled"
    assert receipt["balance_after_micro"] == 10**9 - settled.charged_micro


def test_deciding_twice_over_the_same_state_gives_the_same_events() -> None:
    plan = [_candidate("a", "credit", 150_000, 600_000)]
    req = _request(plan)
    one = fold.decide_request(_state(10**9), req, 0)
    two = fold.decide_request(_state(10**9), req, 0)
    assert [item for _, item in one.steps] == [item for _, item in two.steps]
