"""Top-ups, reversals, adjustments and price changes in the ledger's fold: the decisions, pure.

(tollway.ledger.fold_topup, fold_corrections, fold_prices): what production decides, over
typed state, with no database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tollway.events.envelope import Envelope, make
from tollway.events.gateway import (
    AdjustmentRequested,
    Candidate,
    RequestFinished,
    RequestReceived,
    ReversalRequested,
    TopUpRequested,
)
from tollway.events.ids import derived_id
from tollway.events.ledger import (
    Adjusted,
    CorrectionRefused,
    HoldSettled,
    Posting,
    PriceTableChanged,
    Reversed,
    ToppedUp,
    TopUpRefused,
)
from tollway.events.pricing import MAX_AMOUNT_MICRO, MAX_BALANCE_MICRO, Price, Usage
from tollway.events.routing import PriceTableChangeRequested
from tollway.ledger import fold, fold_corrections, fold_inputs, fold_usage
from tollway.ledger.fold import Original, State

AT = datetime(2026, 5, 1, tzinfo=UTC)
PRICE = Price(input=150_000, output=600_000)


def _env(payload: Any, seconds: int = 0) -> Envelope[Any]:
    return make(payload, occurred_at=AT + timedelta(seconds=seconds))


def _topup(amount: int, key: str = "k1", unit: str = "credit", account: str = "a") -> Any:
    return _env(
        TopUpRequested(
            account_id=account, bucket="credit", unit=unit, amount_micro=amount, idempotency_key=key
        )
    )


def _reversal(original: str, amount: int, key: str = "r1", account: str = "a") -> Any:
    return _env(
        ReversalRequested(
            account_id=account,
            original_event_id=original,
            amount_micro=amount,
            reason="refund",
            idempotency_key=key,
        )
    )


def _adjustment(amount: int, key: str = "j1", bucket: str = "credit") -> Any:
    return _env(
        AdjustmentRequested(
            account_id="a",
            bucket=bucket,
            unit=bucket,
            amount_micro=amount,
            reason="goodwill",
            idempotency_key=key,
        )
    )


def _fold(state: State, env: Envelope[Any]) -> list[Any]:
    """Decide ``env`` over ``state``, fold it in; the journal's payloads."""
    decision = fold_inputs.decide(state, env)
    assert decision is not None
    fold.evolve(state, fold.Effects(), decision)
    return [item.payload for kind, item in decision.steps if kind == "journal"]


def _funded(amount: int = 10_000) -> State:
    state = State()
    _fold(state, _topup(amount, key="funding"))
    return state


# --- top-ups -----------------------------------------------------------------------------------


def test_a_first_top_up_opens_the_bucket_in_its_unit_and_credits_it_from_the_account_source() -> (
    None
):
    state = State()
    decision = fold_inputs.decide(state, _topup(700))
    assert decision is not None
    assert [(b.account_id, b.bucket, b.unit) for b in decision.buckets] == [
        ("a", "credit", "credit")
    ]
    effects = fold.Effects()
    fold.evolve(state, effects, decision)
    (topped,) = [e.payload for e, _ in effects.journal]
    assert isinstance(topped, ToppedUp)
    assert state.units[("a", "credit")] == "credit"
    assert state.available("a", "credit", "credit") == 700
    assert state.balances[("system/topup/a", "credit")] == -700
    assert [(u.account_id, u.key) for u in effects.topups] == [("a", "k1")]


def test_a_top_up_retried_with_its_key_and_payload_decides_nothing() -> None:
    state = _funded()
    assert _fold(state, _topup(500)) != []
    assert _fold(state, _topup(500)) == []
    assert state.available("a", "credit", "credit") == 10_500


def test_a_key_reused_with_another_payload_is_refused_and_credits_nothing() -> None:
    state = _funded()
    _fold(state, _topup(500))
    (refused,) = _fold(state, _topup(501))
    assert isinstance(refused, TopUpRefused)
    assert (refused.code, refused.amount_micro) == ("idempotency_key_reused", 501)
    assert state.available("a", "credit", "credit") == 10_500


def test_another_tenants_key_is_its_own() -> None:
    state = _funded()
    _fold(state, _topup(500, key="shared"))
    (topped,) = _fold(state, _topup(501, key="shared", account="b"))
    assert isinstance(topped, ToppedUp)


def test_top_ups_out_of_range_are_refused_with_stable_codes() -> None:
    state = _funded()
    cases = {
        "unit_mismatch": _topup(5, key="u", unit="USD"),
        "amount_out_of_range": _topup(MAX_AMOUNT_MICRO + 1, key="big"),
        "invalid_bucket": _topup(5, key="n", unit="nul\x00"),
    }
    codes = {}
    for code, env in cases.items():
        (refused,) = _fold(state, env)
        codes[code] = refused.code
    assert codes == {code: code for code in cases}
    state.balances[("a/credit", "credit")] = MAX_BALANCE_MICRO
    (refused,) = _fold(state, _topup(1, key="over"))
    assert refused.code == "balance_out_of_range"


def test_a_top_up_folded_is_spendable_by_the_next_request_of_the_batch() -> None:
    state = State()
    _fold(state, _topup(10**9))
    req = RequestReceived(
        request_id="req-1",
        edge_id="e",
        account_id="a",
        key_id="k",
        project_id="p",
        catalog_model="m",
        body={},
        plan=[_candidate()],
        estimated_input_tokens=10,
        max_output_tokens=100,
        deadline_at=AT + timedelta(minutes=1),
    )
    decision = fold.decide_request(state, _env(req, 1), 0)
    assert [item.type for kind, item in decision.steps if kind == "journal"] == [
        "ledger.hold_placed"
    ]


def _candidate() -> Candidate:
    return Candidate(
        channel_id="ch",
        channel="ch",
        brand="b",
        route_type="direct",
        bucket="credit",
        upstream_model="m",
        price=PRICE,
    )


# --- reversals ---------------------------------------------------------------------------------


def _charged(state: State, charged: int = 3_000) -> str:
    """A served request settled in ``state``: the settlement's event id."""
    state.originals["pending"] = None  # (a marker, like one the store leaves for a reversal)
    req = RequestReceived(
        request_id="req-9",
        edge_id="e",
        account_id="a",
        key_id="k",
        project_id="p",
        catalog_model="m",
        body={},
        plan=[_candidate()],
        estimated_input_tokens=10,
        max_output_tokens=10_000,
        deadline_at=AT + timedelta(minutes=1),
    )
    placed = _env(req, 1)
    fold.evolve(state, fold.Effects(), fold.decide_request(state, placed, 0))
    usage = Usage(input_tokens=0, output_tokens=charged * 10**6 // PRICE.output)
    fin = _env(
        RequestFinished(
            request_id="req-9",
            account_id="a",
            hold_id="hold_" + derived_id(placed.id, "hold"),
            served_attempt=1,
            served_channel_id="ch",
            served_bucket="credit",
            usage=usage,
            price=PRICE,
            status=200,
            attempts=1,
        ),
        2,
    )
    settlement = derived_id(fin.id, "hold_settled")
    state.originals[settlement] = None  # a reversal of the batch names it: the fold records it
    fold.evolve(state, fold.Effects(), fold_usage.decide_finish(state, fin))
    return settlement


def test_a_settlement_a_reversal_names_is_recorded_when_folded() -> None:
    state = _funded()
    settlement = _charged(state)
    original = state.originals[settlement]
    assert original is not None
    assert (original.type, original.request_id, original.reversed) == (
        HoldSettled.TYPE,
        "req-9",
        0,
    )
    assert any(p.account == "system/revenue/ch" and p.amount > 0 for p in original.postings)
    assert state.originals["pending"] is None


def test_a_charge_is_refunded_from_the_channels_revenue_and_noted_on_its_receipt() -> None:
    state = _funded()
    settlement = _charged(state)
    before = state.available("a", "credit", "credit")
    refund = _reversal(settlement, 1_000)
    (reversed_,) = _fold(state, refund)
    assert isinstance(reversed_, Reversed)
    assert reversed_.request_id == "req-9"
    assert {(p.account, p.amount) for p in reversed_.postings} == {
        ("system/revenue/ch", -1_000),
        ("a/credit", 1_000),
    }
    assert state.available("a", "credit", "credit") == before + 1_000
    body = state.receipts["req-9"].body
    assert body["refunds"] == [{"event_id": derived_id(refund.id, "reversed"), "amount": 1_000}]
    assert body["refunded_micro"] == 1_000


def test_reversals_of_one_charge_never_give_back_more_than_it_moved() -> None:
    state = _funded()
    settlement = _charged(state, charged=3_000)
    assert isinstance(_fold(state, _reversal(settlement, 2_000, key="r1"))[0], Reversed)
    (refused,) = _fold(state, _reversal(settlement, 1_001, key="r2"))
    assert isinstance(refused, CorrectionRefused)
    assert refused.reason == "only 1000 micro-credit of the original are left to reverse"
    assert isinstance(_fold(state, _reversal(settlement, 1_000, key="r3"))[0], Reversed)
    original = state.originals[settlement]
    assert original is not None
    assert original.reversed == 3_000


def test_a_rerated_charge_refunds_its_original_plus_its_rerating() -> None:
    state = State()
    state.originals["evt"] = Original(
        event_id="evt",
        type="ledger.hold_settled",
        account_id="a",
        request_id=None,
        bucket="credit",
        postings=(
            Posting(account="a/credit/held", unit="credit", amount=-900),
            Posting(account="system/revenue/ch", unit="credit", amount=900),
        ),
        reversed=100,
        rerated=-300,
    )
    (refused,) = _fold(state, _reversal("evt", 501))
    assert refused.reason == "only 500 micro-credit of the original are left to reverse"
    assert isinstance(_fold(state, _reversal("evt", 500, key="r2"))[0], Reversed)


def test_a_top_up_is_reversed_back_to_its_source() -> None:
    state = State()
    topup = _topup(5_000)
    _fold(state, topup)
    entry = derived_id(topup.id, "topped_up")
    state.originals[entry] = None
    state.originals[entry] = fold.original_of(
        make(
            ToppedUp(
                account_id="a",
                cause_id=topup.id,
                bucket="credit",
                unit="credit",
                amount_micro=5_000,
                idempotency_key="k1",
                postings=[
                    Posting(account="system/topup/a", unit="credit", amount=-5_000),
                    Posting(account="a/credit", unit="credit", amount=5_000),
                ],
            ),
            event_id=entry,
        )
    )
    (reversed_,) = _fold(state, _reversal(entry, 4_000))
    assert {(p.account, p.amount) for p in reversed_.postings} == {
        ("a/credit", -4_000),
        ("system/topup/a", 4_000),
    }
    assert state.balances[("system/topup/a", "credit")] == -1_000


def test_a_reversal_of_an_unknown_or_foreign_entry_is_refused() -> None:
    state = _funded()
    settlement = _charged(state)
    state.originals["nowhere"] = None
    reason = "the original is not a charge or a top-up of this account"
    for env in (_reversal("nowhere", 1), _reversal(settlement, 1, key="b1", account="b")):
        (refused,) = _fold(state, env)
        assert isinstance(refused, CorrectionRefused)
        assert (refused.reason, refused.original_event_id) == (
            reason,
            env.payload.original_event_id,
        )


def test_a_correction_key_retried_decides_nothing_and_reused_is_refused() -> None:
    state = _funded()
    settlement = _charged(state)
    _fold(state, _reversal(settlement, 10))
    assert _fold(state, _reversal(settlement, 10)) == []
    (refused,) = _fold(state, _reversal(settlement, 11))
    assert refused.reason == fold_corrections.KEY_REUSED
    assert refused.original_event_id is None


# --- adjustments -------------------------------------------------------------------------------


def test_an_adjustment_credits_or_debits_a_funded_bucket_against_its_source() -> None:
    state = _funded(1_000)
    (credit,) = _fold(state, _adjustment(300))
    (debit,) = _fold(state, _adjustment(-500, key="j2"))
    assert isinstance(credit, Adjusted)
    assert isinstance(debit, Adjusted)
    assert state.available("a", "credit", "credit") == 800
    assert state.balances[("system/adjustments/a", "credit")] == 200


def test_an_adjustment_of_a_bucket_never_topped_up_is_refused() -> None:
    (refused,) = _fold(State(), _adjustment(300, bucket="wallet"))
    assert isinstance(refused, CorrectionRefused)
    assert (refused.code, refused.reason) == (
        "unit_mismatch",
        "the bucket is in no unit yet (top it up first), not wallet",
    )


# --- price changes -----------------------------------------------------------------------------


def _price_change(previous: Price | None, prices: Price, channel: str = "c1") -> Any:
    return _env(
        PriceTableChangeRequested(
            channel_id=channel,
            bucket="credit",
            previous=previous,
            prices=prices,
            actor="ops",
            action="channel.update",
            audit_id=3,
        )
    )


def test_price_versions_count_per_channel_and_an_unchanged_price_is_no_version() -> None:
    state = State(price_versions={"c1": 4})
    dear = Price(input=1, output=2)
    (first,) = _fold(state, _price_change(PRICE, dear))
    assert isinstance(first, PriceTableChanged)
    assert first.version == 5
    assert _fold(state, _price_change(dear, dear)) == []
    (second,) = _fold(state, _price_change(dear, PRICE))
    (other,) = _fold(state, _price_change(None, PRICE, channel="c2"))
    assert (second.version, other.version) == (6, 1)
    assert state.price_versions == {"c1": 6, "c2": 1}


# --- properties --------------------------------------------------------------------------------


@given(st.lists(st.integers(1, 4_000), min_size=1, max_size=12))
def test_what_reversals_give_back_never_exceeds_the_original(amounts: list[int]) -> None:
    state = _funded()
    settlement = _charged(state, charged=3_000)
    given_back = 0
    for i, amount in enumerate(amounts):
        for event in _fold(state, _reversal(settlement, amount, key=f"r{i}")):
            if isinstance(event, Reversed):
                given_back += event.amount_micro
    assert given_back <= 3_000
    assert state.available("a", "credit", "credit") == 10_000 - 3_000 + given_back


@given(st.integers(-(10**6), 10**6), st.booleans())
def test_deciding_a_command_twice_over_the_same_state_gives_the_same_events(
    amount: int, adjust: bool
) -> None:
    env = _adjustment(amount) if adjust else _topup(max(amount, 1))
    one, two = fold_inputs.decide(_funded(), env), fold_inputs.decide(_funded(), env)
    assert one is not None
    assert two is not None
    assert [item for _, item in one.steps] == [item for _, item in two.steps]
