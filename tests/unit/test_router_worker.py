"""The router remembers recent authorizations so a redelivery is not served twice."""

from __future__ import annotations

from tollway.router.worker import RecentIds


def test_an_id_is_new_only_once() -> None:
    seen = RecentIds()
    assert seen.first_time("a")
    assert not seen.first_time("a")
    assert seen.first_time("b")


def test_the_oldest_ids_are_forgotten_beyond_the_size() -> None:
    seen = RecentIds(size=2)
    for event_id in ("a", "b", "c"):
        assert seen.first_time(event_id)
    assert seen.first_time("a")
    assert not seen.first_time("c")
