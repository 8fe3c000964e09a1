"""Pure rules of a hold's end: expiry against event time, extension, late capture."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from tollway.ledger import domain, holds, spine
from tollway.ledger.expiry import partition_of

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_hold_expires_only_once_the_cutoff_passes_its_deadline() -> None:
    assert holds.is_expired(T0, T0 + timedelta(microseconds=1))
    assert not holds.is_expired(T0, T0)
    assert not holds.is_expired(T0, T0 - timedelta(seconds=1))


def test_expiry_gives_the_whole_reservation_back_to_the_bucket() -> None:
    postings = holds.expiry_postings("a", "credit", "credit", 700)
    domain.check_balanced(postings)
    assert {p.account: p.amount for p in postings} == {"a/credit/held": -700, "a/credit": 700}


def test_an_extension_only_moves_the_deadline_later() -> None:
    assert holds.extended_deadline(T0, T0 + timedelta(seconds=5)) == T0 + timedelta(seconds=5)
    assert holds.extended_deadline(T0, T0) is None
    assert holds.extended_deadline(T0, T0 - timedelta(seconds=5)) is None


def test_a_late_capture_charges_the_bucket_capped_at_the_expired_hold() -> None:
    settlement = domain.Settlement(cost=900, charged=500, released=0)
    postings = holds.late_capture_postings("a", "credit", "credit", settlement, "ch")
    domain.check_balanced(postings)
    assert {p.account: p.amount for p in postings} == {"a/credit": -500, "system/revenue/ch": 500}


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_partition_of_matches_the_producers_default_partitioner(account: str, n: int) -> None:
    partitions = list(range(n))
    assert partition_of(account, n) == DefaultPartitioner()(
        account.encode(), partitions, partitions
    )


def test_replay_merge_follows_the_journal_and_puts_idle_ticks_first() -> None:
    # Live order: tick t1 (expired nothing), request r1 (hold), finish f1, tick t2 (expired r2's
    # hold, placed by r2 after f1): the journal says A: r1, f1 and B: r2, t2.
    journal = spine.Spine.from_journal([("A", "r1"), ("A", "f1"), ("B", "r2"), ("B", "t2")])
    merged = spine.merge(
        ["r1", "r2"], ["t1", "f1", "t2"], journal, lambda e: e, lambda e: e.startswith("t")
    )
    assert merged.order == ["t1", "r1", "r2", "f1", "t2"]
    assert merged.diverged == 0


def test_replay_merge_waits_for_an_earlier_cause_on_the_other_topic() -> None:
    # A top-up on gw.requests was applied after f1 settled on gw.usage (both for account A).
    journal = spine.Spine.from_journal([("A", "f1"), ("A", "top")])
    merged = spine.merge(["top"], ["f1"], journal, lambda e: e)
    assert merged.order == ["f1", "top"]
    assert merged.diverged == 0
