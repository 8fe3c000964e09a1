"""What the fold books for a stream cut after it started, and what its receipt says.

The decisions production runs (``fold_usage``): the tokens the client received are charged once,
as the tenant's charge, never also as the operator's upstream loss; the receipt's final status is
the error the client saw; an answer from a backup because the primary's circuit was open is a
fallback on the receipt.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tollway.events.envelope import Envelope, make
from tollway.events.gateway import (
    AttemptFinished,
    Candidate,
    RequestFinished,
    RequestReceived,
    SkippedCandidate,
)
from tollway.events.ids import derived_id
from tollway.events.ledger import HoldSettled, UpstreamLossRecorded
from tollway.events.pricing import Price, Usage, cost_micro
from tollway.ledger import fold, fold_usage

AT = datetime(2026, 4, 1, tzinfo=UTC)
PRICE = Price(input=150_000, output=600_000)
PRIMARY = Candidate(
    channel_id="primary", channel="primary", brand="b", route_type="direct", bucket="credit",
    upstream_model="m", price=PRICE,
)  # fmt: skip
BACKUP = PRIMARY.model_copy(update={"channel_id": "backup", "channel": "backup"})
DELIVERED = Usage(input_tokens=90, output_tokens=40, estimated=True)


def _placed(plan: list[Candidate]) -> tuple[fold.State, Envelope[RequestReceived]]:
    state = fold.State(units={("a", "credit"): "credit"}, balances={("a/credit", "credit"): 10**9})
    req = make(
        RequestReceived(
            request_id="req_cut", edge_id="e", account_id="a", key_id="k", project_id="p",
            catalog_model="m", body={}, plan=plan, estimated_input_tokens=100,
            max_output_tokens=1000, deadline_at=AT + timedelta(minutes=5),
        ),
        occurred_at=AT,
    )  # fmt: skip
    fold.evolve(state, fold.Effects(), fold.decide_request(state, req, 0))
    return state, req


def _attempt(candidate: Candidate, *, delivered: bool) -> Envelope[AttemptFinished]:
    return make(
        AttemptFinished(
            request_id="req_cut", account_id="a", attempt=1, candidate=candidate,
            outcome="protocol_error", status=200, error_class="stream_cut", latency_ms=5,
            usage=DELIVERED, usage_estimated=True, delivered=delivered,
        ),
        occurred_at=AT + timedelta(seconds=1),
    )  # fmt: skip


def _finish(req: Envelope[RequestReceived], served: Candidate, **extra: Any) -> Envelope[Any]:
    fin = RequestFinished(
        request_id="req_cut",
        account_id="a",
        hold_id="hold_" + derived_id(req.id, "hold"),
        served_attempt=1,
        served_channel_id=served.channel_id,
        served_bucket="credit",
        usage=DELIVERED,
        price=served.price,
        attempts=1,
        usage_estimated=True,
        **extra,
    )
    return make(fin, occurred_at=AT + timedelta(seconds=2))


def _fold(state: fold.State, decision: fold.Decision) -> list[object]:
    fold.evolve(state, fold.Effects(), decision)
    return [item.payload for kind, item in decision.steps if kind == "journal"]


def test_a_cut_stream_is_charged_once_and_never_booked_as_upstream_loss() -> None:
    state, req = _placed([PRIMARY])

    booked = _fold(state, fold_usage.decide_attempt(state, _attempt(PRIMARY, delivered=True)))
    booked += _fold(state, fold_usage.decide_finish(state, _finish(req, PRIMARY, status=502)))

    [settled] = booked
    assert isinstance(settled, HoldSettled)
    assert settled.charged_micro == cost_micro(DELIVERED, PRICE)
    assert state.available("a", "credit", "credit") == 10**9 - settled.charged_micro
    receipt = state.receipts["req_cut"].body
    assert receipt["status"] == "settled"
    assert receipt["charged_micro"] == settled.charged_micro
    assert receipt.get("upstream_loss_micro", 0) == 0


def test_an_attempt_that_delivered_nothing_is_the_operators_loss_instead() -> None:
    state, _ = _placed([PRIMARY])

    booked = _fold(state, fold_usage.decide_attempt(state, _attempt(PRIMARY, delivered=False)))

    [loss] = booked
    assert isinstance(loss, UpstreamLossRecorded)
    assert loss.amount_micro == cost_micro(DELIVERED, PRICE)


def test_the_receipt_of_a_cut_stream_says_the_error_the_client_saw() -> None:
    state, req = _placed([PRIMARY])
    _fold(state, fold_usage.decide_attempt(state, _attempt(PRIMARY, delivered=True)))

    _fold(state, fold_usage.decide_finish(state, _finish(req, PRIMARY, status=502)))

    receipt = state.receipts["req_cut"].body
    assert receipt["final_status"] == 502
    assert "stream failed after it started (stream_cut)" in receipt["error"]


def test_a_backup_serving_because_the_primary_circuit_was_open_is_a_fallback() -> None:
    state, req = _placed([PRIMARY, BACKUP])
    served = _attempt(BACKUP, delivered=True)
    served = served.model_copy(
        update={"payload": served.payload.model_copy(update={"outcome": "ok", "delivered": False})}
    )
    _fold(state, fold_usage.decide_attempt(state, served))
    skipped = SkippedCandidate(channel_id="primary", channel="primary", reason="circuit_open")

    _fold(
        state,
        fold_usage.decide_finish(
            state, _finish(req, BACKUP, status=200, skipped=[skipped], fallbacks=1)
        ),
    )

    receipt = state.receipts["req_cut"].body
    assert [a["channel_id"] for a in receipt["attempts"]] == ["backup"]
    assert receipt["skipped"] == [skipped.model_dump()]
    assert receipt["fallback"] is True
    assert receipt["final_status"] == 200
