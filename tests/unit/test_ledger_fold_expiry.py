"""A hold's life after it is placed, in the fold (tollway.ledger.fold_expiry): pure decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tollway.events.envelope import Envelope, make
from tollway.events.gateway import Candidate, HoldExtensionRequested, RequestReceived
from tollway.events.ledger import ClockTicked, HoldExpired, HoldExtended
from tollway.events.pricing import Price
from tollway.ledger import fold, fold_expiry
from tollway.ledger.resident import Memory, Resident, absorb, child

AT = datetime(2026, 4, 1, tzinfo=UTC)
CREDIT = Candidate(
    channel_id="c",
    channel="c",
    brand="b",
    route_type="direct",
    bucket="credit",
    upstream_model="m",
    price=Price(input=150_000, output=600_000),
)


def _placed(state: fold.State, request_id: str) -> fold.Hold:
    req = RequestReceived(
        request_id=request_id,
        edge_id="e",
        account_id="a",
        key_id="k",
        project_id="p",
        catalog_model="m",
        body={},
        plan=[CREDIT],
        estimated_input_tokens=100,
        max_output_tokens=1000,
        deadline_at=AT + timedelta(minutes=5),
    )
    fold.evolve(state, fold.Effects(), fold.decide_request(state, make(req, occurred_at=AT), 0))
    return state.holds[request_id][0]


def _state() -> fold.State:
    return fold.State(units={("a", "credit"): "credit"}, balances={("a/credit", "credit"): 10**9})


def _tick(minutes: int) -> Envelope[ClockTicked]:
    at = AT + timedelta(minutes=minutes)
    return make(
        ClockTicked(partition=0, partitions=1, expire_before=at, requests_before=10),
        occurred_at=at,
    )


def test_a_tick_expires_the_due_holds_and_gives_their_money_back() -> None:
    state = _state()
    first, second = _placed(state, "r1"), _placed(state, "r2")
    before = state.available("a", "credit", "credit")
    decision = fold_expiry.decide_tick(state, _tick(10), [first, second])
    fold.evolve(state, fold.Effects(), decision)
    expired = [env.payload for kind, env in decision.steps if kind == "journal"]
    assert [type(e) for e in expired] == [HoldExpired, HoldExpired]
    assert all(sum(p.amount for p in e.postings) == 0 for e in expired)
    assert state.available("a", "credit", "credit") == before + first.amount + second.amount
    assert {h.status for r in ("r1", "r2") for h in state.holds[r]} == {"expired"}
    # Each receipt shows the balance once its own hold was back (the second sees both).
    assert state.receipts["r1"].body["balance_after_micro"] == before + first.amount
    assert state.receipts["r2"].body["balance_after_micro"] == before + first.amount + second.amount
    assert state.receipts["r2"].status == "expired"


def test_an_extension_moves_an_open_hold_later_and_never_earlier() -> None:
    state = _state()
    hold = _placed(state, "r1")

    def ask(account: str, minutes: int) -> Envelope[HoldExtensionRequested]:
        return make(
            HoldExtensionRequested(
                request_id="r1",
                account_id=account,
                hold_id=hold.hold_id,
                deadline_at=AT + timedelta(minutes=minutes),
            ),
            occurred_at=AT,
        )

    assert not fold_expiry.decide_extension(state, ask("a", 1)).steps  # earlier: nothing
    assert not fold_expiry.decide_extension(state, ask("other", 9)).steps  # not its hold
    decision = fold_expiry.decide_extension(state, ask("a", 9))
    fold.evolve(state, fold.Effects(), decision)
    (_, env), *_ = decision.steps
    assert isinstance(env.payload, HoldExtended)
    assert state.holds["r1"][0].deadline_at == AT + timedelta(minutes=9)
    assert state.receipts["r1"].body["hold"]["extensions"] == 1


def test_a_layer_changes_nothing_below_it_until_absorbed() -> None:
    base = Memory(state=_state())
    _placed(base.state, "r1")
    snapshot = (dict(base.state.balances), dict(base.state.holds), base.state.receipts["r1"].body)
    layer = child(base)
    hold = layer.state.holds["r1"][0]
    decision = fold_expiry.decide_tick(layer.state, _tick(10), [hold])
    fold.evolve(layer.state, fold.Effects(), decision)
    assert layer.state.holds["r1"][0].status == "expired"
    assert (dict(base.state.balances), dict(base.state.holds)) == snapshot[:2]
    assert base.state.receipts["r1"].body == snapshot[2]
    assert base.state.receipts["r1"].body["status"] != "expired"
    absorb(base, layer)
    assert base.state.holds["r1"][0].status == "expired"


def test_a_hold_extended_after_its_batch_is_written_as_a_change_not_a_new_hold() -> None:
    state = _state()
    hold = _placed(state, "r1")
    ask = HoldExtensionRequested(
        request_id="r1", account_id="a", hold_id=hold.hold_id, deadline_at=AT + timedelta(hours=1)
    )
    effects = fold.Effects()  # a later batch's
    fold.evolve(state, effects, fold_expiry.decide_extension(state, make(ask, occurred_at=AT)))
    assert hold.hold_id in effects.changed
    assert hold.hold_id not in effects.opened


def test_a_transaction_keeps_nothing_of_a_partition_revoked_under_it() -> None:
    resident = Resident()
    resident.install(0, Memory(state=_state()))
    call = resident.call()
    _placed(call.memory(0).state, "r1")
    resident.returned(call)
    resident.drop([0])  # revoked mid-batch
    resident.install(0, Memory(state=_state()))  # and assigned again, loaded afresh
    resident.commit()
    kept = resident.committed(0)
    assert kept is None or "r1" not in kept.state.holds


def test_a_partition_read_again_mid_call_is_kept_once_the_batch_commits() -> None:
    resident = Resident()
    call = resident.call()
    call.forget(0)  # a per-event record first: the partition is read again from Postgres
    loaded = call.memory(0).state
    loaded.units.update(_state().units)
    loaded.balances.update(_state().balances)
    _placed(loaded, "r1")
    resident.returned(call)
    resident.commit()
    kept = resident.committed(0)
    assert kept is not None
    assert "r1" in kept.state.holds
