"""Price-table versions: each channel's changes are numbered 1, 2, 3… in the order applied."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypothesis import given
from hypothesis import strategies as st

from tollway.events.pricing import Price
from tollway.events.routing import PriceTableChangeRequested
from tollway.events.topics import PRICE_TABLE_KEY
from tollway.ledger.fold_prices import decide

if TYPE_CHECKING:
    from tollway.events.ledger import PriceTableChanged

CHEAP = Price(input=150_000, output=600_000)
DEAR = Price(input=2_500_000, output=10_000_000, cached_input=1_250_000)


def _request(
    channel: str, previous: Price | None, prices: Price, audit_id: int = 1
) -> PriceTableChangeRequested:
    return PriceTableChangeRequested(
        channel_id=channel,
        bucket="credit",
        previous=previous,
        prices=prices,
        actor="ops",
        action="channel.update" if previous else "channel.create",
        audit_id=audit_id,
    )


def _fold(requests: list[PriceTableChangeRequested]) -> list[PriceTableChanged]:
    """Apply requests in order the way the ledger does: the latest version per channel."""
    latest: dict[str, int] = {}
    journal: list[PriceTableChanged] = []
    for i, request in enumerate(requests):
        changed = decide(latest.get(request.channel_id), request, f"cause-{i}")
        if changed is not None:
            latest[request.channel_id] = changed.version
            journal.append(changed)
    return journal


def test_a_new_channel_starts_at_version_one_with_no_previous_price() -> None:
    changed = decide(None, _request("c1", None, CHEAP, audit_id=7), "evt-1")

    assert changed is not None
    assert (changed.channel_id, changed.version, changed.previous, changed.prices) == (
        "c1",
        1,
        None,
        CHEAP,
    )
    assert (changed.account_id, changed.cause_id) == (PRICE_TABLE_KEY, "evt-1")
    assert (changed.actor, changed.audit_id, changed.bucket) == ("ops", 7, "credit")
    assert changed.postings == ()


def test_a_change_takes_the_version_after_the_latest_and_keeps_both_prices() -> None:
    changed = decide(3, _request("c1", CHEAP, DEAR), "evt-4")

    assert changed is not None
    assert (changed.version, changed.previous, changed.prices) == (4, CHEAP, DEAR)


def test_a_change_that_changes_no_price_takes_no_version() -> None:
    assert decide(2, _request("c1", DEAR, DEAR), "evt") is None


prices = st.builds(
    Price,
    input=st.integers(0, 3),
    output=st.integers(0, 3),
    cached_input=st.none() | st.integers(0, 3),
)
Requests = list[PriceTableChangeRequested]
requests = st.lists(
    st.builds(
        _request, st.sampled_from(["a", "b", "c"]), st.none() | prices, prices, st.integers(1, 99)
    ),
    max_size=30,
)


@given(requests)
def test_each_channels_versions_count_up_from_one_without_gaps(reqs: Requests) -> None:
    journal = _fold(reqs)

    for channel in ("a", "b", "c"):
        versions = [c.version for c in journal if c.channel_id == channel]
        assert versions == list(range(1, len(versions) + 1))
    assert len(journal) == sum(r.previous != r.prices for r in reqs)


@given(requests, st.integers(0, 30))
def test_a_replayed_prefix_journals_a_prefix_of_the_same_versions(reqs: Requests, cut: int) -> None:
    whole = _fold(reqs)

    prefix = _fold(reqs[:cut])

    assert prefix == whole[: len(prefix)]
    assert prefix == _fold(reqs[:cut])  # nothing but the log decides: no clock, no randomness
