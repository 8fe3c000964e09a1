"""Reconciliation, pure (tollway.ledger.recon): attempt rows, line revisions, the drift."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from tollway.events.envelope import make
from tollway.events.gateway import AttemptFinished, Candidate
from tollway.events.pricing import CostPrice, Price, Usage, upstream_cost_micro
from tollway.events.recon import InvoiceLine, InvoiceLineImported
from tollway.ledger import recon

AT = datetime(2026, 5, 3, 23, 30, tzinfo=UTC)
DAY = date(2026, 5, 3)
COST = CostPrice(input=150_000, output=600_000, currency="USD", per_request=7)


def _attempt(
    n: int,
    *,
    cost: CostPrice | None = COST,
    reported: int | None = None,
    tokens: tuple[int, int] = (1000, 500),
    at: datetime = AT,
) -> recon.ReconAttempt:
    candidate = Candidate(
        channel_id="ch",
        channel="ch",
        brand="b",
        route_type="pool",
        bucket="wallet",
        upstream_model="m",
        price=Price(input=1, output=1),
        cost=cost,
    )
    attempt = AttemptFinished(
        request_id=f"req_{n}",
        account_id="acct",
        attempt=1,
        candidate=candidate,
        outcome="ok",
        latency_ms=5,
        usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]),
        upstream_request_id=f"up-{n}",
        reported_cost_micro=reported,
        reported_cost_currency=None if reported is None else "USD",
    )
    row = recon.attempt_row(make(attempt, occurred_at=at))
    assert row is not None
    return row


def _line(cost: int, upstream_id: str | None = None, **extra: object) -> recon.InvoiceRow:
    fields = {"input_tokens": 1000, "output_tokens": 500, "currency": "USD", **extra}
    line = InvoiceLine(
        day=DAY, upstream_request_id=upstream_id, model="m", cost_micro=cost, **fields
    )
    return recon.InvoiceRow("ch", line.key, 1, line)


def test_the_booked_cost_is_the_cost_price_function_and_the_day_is_utc() -> None:
    row = _attempt(1)
    usage = Usage(input_tokens=1000, output_tokens=500)
    assert row.booked_micro == upstream_cost_micro(usage, COST) == 457
    assert row.booked_currency == "USD"
    late = _attempt(2, at=datetime(2026, 5, 4, 1, 0, tzinfo=timezone(timedelta(hours=2))))
    assert late.day == DAY  # 01:00 at +02:00 is 23:00 UTC the day before


def test_an_attempt_without_cost_price_or_reported_cost_is_not_kept() -> None:
    candidate = _attempt(1).channel_id
    assert candidate == "ch"
    attempt = AttemptFinished(
        request_id="r",
        account_id="a",
        attempt=1,
        candidate=Candidate(
            channel_id="c",
            channel="c",
            brand="b",
            route_type="pool",
            bucket="w",
            upstream_model="m",
            price=Price(input=1, output=1),
        ),
        outcome="ok",
        latency_ms=1,
    )
    assert recon.attempt_row(make(attempt, occurred_at=AT)) is None
    reported = attempt.model_copy(update={"reported_cost_micro": 5})
    row = recon.attempt_row(make(reported, occurred_at=AT))
    assert row is not None
    assert row.booked_micro is None
    assert row.reported_micro == 5


def test_the_reported_cost_is_journaled_with_the_booked_one() -> None:
    event = recon.reported_event(_attempt(1, reported=500), "cause")
    assert event is not None
    assert (event.reported_micro, event.booked_micro, event.currency) == (500, 457, "USD")
    assert event.postings == ()
    assert recon.reported_event(_attempt(2), "cause") is None


def _import(cost: int) -> InvoiceLineImported:
    line = InvoiceLine(
        day=DAY, model="m", input_tokens=1, output_tokens=1, cost_micro=cost, currency="USD"
    )
    return InvoiceLineImported(channel_id="ch", invoice=line, import_id="f", line=2)


def test_an_invoice_line_gets_a_new_revision_only_when_its_value_changes() -> None:
    first = recon.decide_line(None, _import(100), "e1")
    assert first is not None
    assert (first.revision, first.line_key, first.account_id) == (1, "day:m", "system:recon")
    current = recon.InvoiceRow("ch", first.line_key, first.revision, first.invoice)
    assert recon.decide_line(current, _import(100), "e2") is None
    second = recon.decide_line(current, _import(120), "e3")
    assert second is not None
    assert second.revision == 2
    assert second.invoice.cost_micro == 120


def test_drift_compares_responses_and_the_invoice_with_what_was_booked() -> None:
    attempts = [
        _attempt(1, reported=457),  # the upstream agrees
        _attempt(2, reported=500),  # the upstream says 43 more
        _attempt(3),  # reported nothing
    ]
    lines = [_line(457, "up-1"), _line(500, "up-2"), _line(457, "up-3"), _line(9, "up-9")]
    [day] = recon.drift(attempts, lines)
    assert (day.channel_id, day.day, day.currency) == ("ch", DAY, "USD")
    assert day.booked.requests == 3
    assert day.booked.cost_micro == 3 * 457
    assert day.response.booked.cost_micro == 914
    assert day.response.upstream.cost_micro == 957
    assert day.response.difference_micro == 43
    assert day.invoice.upstream.cost_micro == 457 + 500 + 457 + 9
    assert day.invoice.difference_micro == 52
    assert day.invoice.upstream.requests == 4
    out = day.as_json()
    assert out["invoice"]["relative"] == "0.037929"  # 52 / 1371, six places
    assert out["response"]["relative"] == "0.047046"  # 43 / 914
    bases = [(r["basis"], r["upstream_request_id"], r["difference_micro"]) for r in day.differing]
    assert bases == [("response", "up-2", 43), ("invoice", "up-2", 43), ("not_booked", "up-9", 9)]


def test_a_per_request_invoice_lists_the_requests_it_left_out() -> None:
    [day] = recon.drift([_attempt(1), _attempt(2)], [_line(457, "up-1")])
    assert [(r["basis"], r["request_id"]) for r in day.differing] == [("not_invoiced", "req_2")]
    assert day.invoice.difference_micro == -457


def test_a_day_aggregate_line_is_compared_on_totals() -> None:
    aggregate = _line(1000, None, requests=2, input_tokens=2000, output_tokens=1000)
    [day] = recon.drift([_attempt(1), _attempt(2)], [aggregate])
    assert day.invoice.upstream.requests == 2
    assert day.invoice.difference_micro == 1000 - 914
    assert day.as_json()["invoice"]["token_difference"] == 0
    assert day.differing == []


def test_lines_in_another_currency_are_counted_apart() -> None:
    [day] = recon.drift([_attempt(1)], [_line(457, "up-1"), _line(3, "up-2", currency="EUR")])
    assert day.other_currency_lines == 1
    assert day.invoice.upstream.cost_micro == 457


def test_the_threshold_is_exact_and_strict() -> None:
    assert recon.parse_threshold("0.01") == 10_000
    assert not recon.exceeds(10, 1000, 10_000)  # exactly 1 %: not past it
    assert recon.exceeds(11, 1000, 10_000)
    assert recon.exceeds(-11, 1000, 10_000)
    assert recon.exceeds(1, 0, 10_000)  # anything over nothing booked
    assert not recon.exceeds(0, 0, 0)
    assert recon.relative(5, 0) is None


def test_the_csv_has_a_row_per_channel_day_and_basis() -> None:
    days = recon.drift([_attempt(1, reported=500)], [_line(600, "up-1")])
    lines = recon.as_csv(days).splitlines()
    assert lines[0].startswith("channel_id,day,currency,basis")
    assert (
        lines[1] == "ch,2026-05-03,USD,response,1,1500,0.000457,1,1500,0.000500,0.000043,0.094092"
    )
    assert lines[2] == "ch,2026-05-03,USD,invoice,1,1500,0.000457,1,1500,0.000600,0.000143,0.312910"
