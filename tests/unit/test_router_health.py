"""The channel circuit breaker and the weighted order inside a tier."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from tollway.events.gateway import Candidate
from tollway.events.pricing import Price
from tollway.router.handlers import order_candidates
from tollway.router.health import HealthBoard, HealthPolicy

POLICY = HealthPolicy(
    window_seconds=10, min_samples=4, error_rate=0.5, consecutive_failures=3, cool_down_seconds=2
)


def fail(board: HealthBoard, n: int, now: float = 0.0, channel: str = "ch") -> list[str]:
    moves = [board.record(channel, ok=False, latency_ms=5, now=now) for _ in range(n)]
    return [m.to_state for m in moves if m]


def test_opens_after_consecutive_failures_and_refuses_attempts() -> None:
    board = HealthBoard(POLICY)
    assert fail(board, 3) == ["open"]
    assert board.admit("ch", now=1.0) == (False, None)


def test_opens_on_error_rate_over_the_window() -> None:
    board = HealthBoard(POLICY)
    for ok in (True, False, True, False):
        board.record("ch", ok=ok, latency_ms=5, now=0)
    assert board.state("ch") == "open"


def test_old_outcomes_leave_the_window() -> None:
    board = HealthBoard(POLICY)
    for ok in (True, False, True):
        board.record("ch", ok=ok, latency_ms=5, now=0)
    board.record("ch", ok=False, latency_ms=5, now=11)  # the first three are out of the window
    assert board.state("ch") == "closed"


def test_half_open_admits_one_probe_and_a_success_closes() -> None:
    board = HealthBoard(POLICY)
    fail(board, 3)
    admitted, moved = board.admit("ch", now=2.5)
    assert admitted
    assert moved is not None
    assert moved.to_state == "half_open"
    assert board.admit("ch", now=2.6) == (False, None)  # a second caller waits for the probe
    moved = board.record("ch", ok=True, latency_ms=5, now=2.7)
    assert moved is not None
    assert moved.to_state == "closed"
    assert board.admit("ch", now=2.8) == (True, None)


def test_failed_probe_reopens_with_a_longer_cool_down() -> None:
    board = HealthBoard(POLICY)
    fail(board, 3)
    board.admit("ch", now=2.5)
    moved = board.record("ch", ok=False, latency_ms=5, now=2.6)
    assert moved is not None
    assert (moved.to_state, moved.cool_down_seconds) == ("open", 4.0)
    assert not board.admit("ch", now=5.0)[0]
    assert board.admit("ch", now=6.7)[0]


def test_a_lost_probe_does_not_keep_the_circuit_half_open() -> None:
    board = HealthBoard(POLICY)
    fail(board, 3)
    assert board.admit("ch", now=2.5)[0]  # the probe's request is cancelled, never recorded
    assert board.admit("ch", now=4.6)[0]


def test_channels_are_independent() -> None:
    board = HealthBoard(POLICY)
    fail(board, 3, channel="bad")
    assert board.admit("good", now=0.1) == (True, None)


@given(st.lists(st.booleans(), max_size=60))
def test_never_admits_while_open_before_the_cool_down(outcomes: list[bool]) -> None:
    board = HealthBoard(POLICY)
    now = 0.0
    for ok in outcomes:
        now += 0.1
        admitted, _ = board.admit("ch", now)
        if board.state("ch") == "open":
            assert not admitted
        if admitted:
            board.record("ch", ok=ok, latency_ms=1, now=now)


def _candidate(name: str, tier: int, weight: int) -> Candidate:
    return Candidate(
        channel_id=name,
        channel=name,
        brand="b",
        route_type="direct",
        bucket="credit",
        upstream_model="m",
        price=Price(input=1, output=1),
        tier=tier,
        weight=weight,
    )


def test_tiers_keep_their_order_and_weights_spread_inside_a_tier() -> None:
    plan = [_candidate("a", 0, 3), _candidate("b", 0, 1), _candidate("backup", 1, 1)]
    rng = random.Random(7)
    firsts = Counter(order_candidates(plan, rng)[0].channel for _ in range(4000))
    assert all(order_candidates(plan, rng)[-1].channel == "backup" for _ in range(50))
    assert set(firsts) == {"a", "b"}
    assert 0.7 < firsts["a"] / 4000 < 0.8  # weight 3 of 4


def test_the_same_seed_gives_the_same_order() -> None:
    plan = [_candidate(str(i), 0, i + 1) for i in range(5)]
    first = [order_candidates(plan, random.Random(42)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
