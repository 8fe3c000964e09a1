"""The limits service's pure rules: slots, learned baselines, trips, alert ratios, mix shift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tollway.limits.domain import (
    Baseline,
    Limits,
    RatePolicy,
    RelativePolicy,
    fold_baseline,
    hour_of,
    may_fire,
    mix_shift,
    rate_breach,
    slot_of,
    still_open,
    velocity_trip,
)
from tollway.limits.handlers import resolve

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def learned(tokens_per_hour: int, hours: int) -> Baseline:
    baseline = None
    for h in range(hours + 1):
        baseline = fold_baseline(baseline, T0 + timedelta(hours=h), tokens_per_hour)
    assert baseline is not None
    return baseline


def test_slots_and_hours_floor_event_time() -> None:
    at = T0 + timedelta(minutes=7, seconds=13, microseconds=5)
    assert slot_of(at) == T0 + timedelta(minutes=7, seconds=10)
    assert hour_of(at) == T0


def test_absolute_threshold_trips_only_above_it() -> None:
    limits = Limits(tokens_per_minute=1000)
    assert velocity_trip("tokens", 1000, 1000, limits, None, RelativePolicy()) is None
    trip = velocity_trip("tokens", 1001, 1001, limits, None, RelativePolicy())
    assert trip is not None
    assert (trip.name, trip.value, trip.threshold, trip.window_seconds) == (
        "tokens_per_minute",
        1001,
        1000,
        60,
    )


def test_spend_thresholds_are_per_bucket() -> None:
    limits = Limits(tokens_per_minute=None, spend_micro_per_minute={"credit": 500})
    assert velocity_trip("spend:wallet", 10**9, 10**9, limits, None, RelativePolicy()) is None
    trip = velocity_trip("spend:credit", 501, 501, limits, None, RelativePolicy())
    assert trip is not None
    assert trip.name == "spend:credit_per_minute"


def test_a_key_burning_100x_its_learned_rate_trips_on_the_baseline() -> None:
    # Normally 20k tokens an hour; then 2M in ten minutes.
    baseline = learned(20_000, hours=5)
    limits = Limits(tokens_per_minute=None, relative_factor=10)
    trip = velocity_trip("tokens", 400_000, 2_000_000, limits, baseline, RelativePolicy())
    assert trip is not None
    assert trip.name == "tokens_vs_baseline"
    assert trip.threshold == 50_000  # 10 x 20k/6 = 33k, raised to the floor


def test_normal_traffic_does_not_trip_on_the_baseline() -> None:
    baseline = learned(600_000, hours=5)
    limits = Limits(tokens_per_minute=None, relative_factor=10)
    assert velocity_trip("tokens", 10_000, 100_000, limits, baseline, RelativePolicy()) is None


def test_no_baseline_trip_before_enough_history() -> None:
    fresh = fold_baseline(None, T0, 100)
    limits = Limits(tokens_per_minute=None, relative_factor=10)
    assert velocity_trip("tokens", 10**9, 10**9, limits, fresh, RelativePolicy(min_hours=1)) is None


def test_quiet_hours_decay_the_baseline() -> None:
    busy = learned(100_000, hours=4)
    after_gap = fold_baseline(busy, busy.hour_start + timedelta(hours=6), 0)
    assert after_gap.mean_per_hour < busy.mean_per_hour
    assert fold_baseline(busy, busy.hour_start + timedelta(hours=60), 0).mean_per_hour == 0


@given(st.lists(st.tuples(st.integers(0, 72 * 3600), st.integers(0, 10**6)), max_size=40))
def test_baseline_fold_is_deterministic_and_never_negative(events: list[tuple[int, int]]) -> None:
    ordered = sorted(events)

    def fold() -> Baseline | None:
        b = None
        for offset, amount in ordered:
            b = fold_baseline(b, T0 + timedelta(seconds=offset), amount)
        return b

    first, second = fold(), fold()
    assert first == second
    if first is not None:
        assert first.mean_per_hour >= 0
        assert first.hour_amount >= 0


def test_a_breaker_is_open_strictly_before_its_until() -> None:
    assert still_open(T0, T0 - timedelta(microseconds=1))
    assert not still_open(T0, T0)
    assert not still_open(None, T0)


def test_rate_breach_needs_enough_samples_and_the_rate() -> None:
    policy = RatePolicy(rate=0.5, min_count=10)
    assert rate_breach(9, 9, policy) is None
    assert rate_breach(10, 4, policy) is None
    assert rate_breach(10, 5, policy) == 0.5


def test_one_alert_per_window_of_event_time() -> None:
    assert may_fire(None, T0, 60)
    assert not may_fire(T0, T0 + timedelta(seconds=59), 60)
    assert may_fire(T0, T0 + timedelta(seconds=60), 60)


def test_mix_shift_is_the_total_variation_distance() -> None:
    assert mix_shift({"a": 10}, {"a": 5}) == 0
    assert mix_shift({"b": 10}, {"a": 10}) == 1
    assert mix_shift({"a": 5, "b": 5}, {"a": 10}) == 0.5
    assert mix_shift({}, {"a": 1}) == 0


def test_operator_limits_override_defaults_and_none_keeps_them() -> None:
    defaults = Limits(
        tokens_per_minute=1000, spend_micro_per_minute={"credit": 5}, cooldown_seconds=60
    )
    row = {"tokens_per_minute": None, "spend_micro_per_minute": {"wallet": 7}}
    row |= {"relative_factor": 3, "cooldown_seconds": 5}
    merged = resolve(defaults, row)
    assert merged.tokens_per_minute == 1000
    assert dict(merged.spend_micro_per_minute) == {"credit": 5, "wallet": 7}
    assert (merged.relative_factor, merged.cooldown_seconds) == (3, 5)
    assert resolve(defaults, None) is defaults
