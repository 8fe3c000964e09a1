"""Settlement is computed from the RequestFinished event alone, never from the receipt."""

from __future__ import annotations

from datetime import UTC, datetime

from tollway.events.envelope import make
from tollway.events.gateway import RequestFinished
from tollway.events.ledger import HoldReleased, HoldSettled
from tollway.events.pricing import Price, Usage, cost_micro
from tollway.ledger import domain
from tollway.ledger.fold import Hold
from tollway.ledger.fold_usage import _settlement

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOLD = Hold("h", "r", "a", "credit", "credit", 10_000, "open", T0, T0)


def test_served_request_is_charged_its_own_cost_and_the_rest_released() -> None:
    usage, price = Usage(input_tokens=100, output_tokens=50), Price(input=3_000, output=9_000)
    fin = RequestFinished(
        request_id="r",
        account_id="a",
        hold_id="h",
        served_attempt=2,
        served_channel_id="chan-b",
        usage=usage,
        price=price,
        status=200,
        attempts=2,
    )

    event = _settlement(make(fin), HOLD).payload

    assert isinstance(event, HoldSettled)
    assert event.charged_micro == cost_micro(usage, price) == 1
    assert event.released_micro == 10_000 - event.charged_micro
    domain.check_balanced(event.postings)
    assert {p.account for p in event.postings} == {
        "a/credit/held",
        "a/credit",
        "system/revenue/chan-b",
    }


def test_unserved_request_releases_the_whole_hold() -> None:
    fin = RequestFinished(request_id="r", account_id="a", hold_id="h", status=502, attempts=3)

    event = _settlement(make(fin), HOLD).payload

    assert isinstance(event, HoldReleased)
    assert event.released_micro == 10_000
    domain.check_balanced(event.postings)


def test_a_cost_beyond_the_hold_is_capped_at_the_hold() -> None:
    fin = RequestFinished(
        request_id="r",
        account_id="a",
        hold_id="h",
        served_attempt=1,
        served_channel_id="c",
        usage=Usage(output_tokens=10**9),
        price=Price(input=0, output=10**6),
        status=200,
        attempts=1,
    )

    event = _settlement(make(fin), HOLD).payload

    assert isinstance(event, HoldSettled)
    assert (event.charged_micro, event.released_micro) == (10_000, 0)
