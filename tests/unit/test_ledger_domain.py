"""Pure ledger decisions: double entry, hold sizing, settlement caps."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.events.gateway import Candidate, RequestReceived
from tollway.events.ledger import Posting
from tollway.events.pricing import Price, Usage
from tollway.ledger import domain


def _candidate(name: str, bucket: str, p_in: int, p_out: int) -> Candidate:
    return Candidate(
        channel_id=name,
        channel=name,
        brand="openai",
        route_type="direct",
        bucket=bucket,
        upstream_model="m",
        price=Price(input=p_in, output=p_out),
    )


def _request(plan: list[Candidate], est_in: int = 100, max_out: int = 1000) -> RequestReceived:
    return RequestReceived(
        request_id="req_1",
        edge_id="e",
        account_id="a",
        key_id="k",
        project_id="p",
        catalog_model="m",
        body={},
        plan=plan,
        estimated_input_tokens=est_in,
        max_output_tokens=max_out,
        deadline_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_transfer_is_balanced_and_empty_for_zero() -> None:
    postings = domain.transfer("x", "y", "credit", 7)
    domain.check_balanced(postings)
    assert [p.amount for p in postings] == [-7, 7]
    assert domain.transfer("x", "y", "credit", 0) == []


def test_unbalanced_postings_are_refused_per_unit() -> None:
    postings = [
        Posting(account="x", unit="credit", amount=-5),
        Posting(account="y", unit="CNY", amount=5),
    ]
    with pytest.raises(domain.UnbalancedPostingsError):
        domain.check_balanced(postings)


@given(st.integers(0, 10**7), st.integers(0, 10**6), st.integers(0, 10**6))
def test_settlement_never_exceeds_the_hold_and_conserves_it(held: int, i: int, o: int) -> None:
    s = domain.settle(held, Usage(input_tokens=i, output_tokens=o), Price(input=500, output=900))
    assert 0 <= s.charged <= held
    assert s.charged + s.released == held
    assert s.charged == min(s.cost, held)


def test_settling_with_no_served_attempt_releases_everything() -> None:
    s = domain.settle(1234, None, None)
    assert (s.cost, s.charged, s.released) == (0, 0, 1234)


def test_closing_postings_empty_the_hold_into_revenue_and_the_bucket() -> None:
    s = domain.Settlement(cost=70, charged=70, released=30)
    postings = domain.closing_postings("a", "credit", "credit", s, "chan-1")
    domain.check_balanced(postings)
    moved = {p.account: p.amount for p in postings if p.amount > 0}
    assert moved == {"system/revenue/chan-1": 70, "a/credit": 30}
    assert sum(p.amount for p in postings if p.account == "a/credit/held") == -100


def test_a_charge_without_the_channel_that_earned_it_is_refused() -> None:
    with pytest.raises(ValueError, match="channel"):
        domain.closing_postings("a", "credit", "credit", domain.Settlement(5, 5, 0), None)
