"""Pure rules of the limits service: windows, learned baselines, breaker trips and alert rules.

No IO and no clock: every function takes the event time it judges, so replaying the same log
trips the same breakers and raises the same alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

SLOT_SECONDS = 5
MINUTE_SECONDS = 60
RECENT_SECONDS = 600  # the window a burst is compared with its learned baseline over
HOUR_SECONDS = 3600
RETAIN_SECONDS = RECENT_SECONDS + 60  # slots older than every window are pruned
MAX_EMPTY_HOURS = 48  # beyond this many quiet hours the baseline has decayed to nothing
TOKENS = "tokens"
SPEND_PREFIX = "spend:"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def slot_of(at: datetime) -> datetime:
    """The start of the fixed slot of event time ``at`` falls in."""
    seconds = int((at - EPOCH).total_seconds())
    return EPOCH + timedelta(seconds=seconds - seconds % SLOT_SECONDS)


def hour_of(at: datetime) -> datetime:
    """The start of the hour of event time ``at``."""
    seconds = int((at - EPOCH).total_seconds())
    return EPOCH + timedelta(seconds=seconds - seconds % HOUR_SECONDS)


def spend_metric(bucket: str) -> str:
    """Spend is counted per bucket: amounts of different units never add up."""
    return f"{SPEND_PREFIX}{bucket}"


@dataclass(frozen=True, slots=True)
class Limits:
    """The thresholds in force for one scope (operator's values over the service defaults)."""

    tokens_per_minute: int | None
    spend_micro_per_minute: Mapping[str, int] = field(default_factory=dict)
    relative_factor: int | None = None
    cooldown_seconds: int = 60

    def per_minute(self, metric: str) -> int | None:
        """The absolute per-minute threshold of ``metric``, if any."""
        if metric == TOKENS:
            return self.tokens_per_minute
        if metric.startswith(SPEND_PREFIX):
            return self.spend_micro_per_minute.get(metric.removeprefix(SPEND_PREFIX))
        return None


@dataclass(frozen=True, slots=True)
class RelativePolicy:
    """When a burst counts as abnormal against the scope's own history."""

    min_hours: int = 1
    floor_tokens: int = 50_000  # a ten-minute burst below this never trips on its own


@dataclass(frozen=True, slots=True)
class Baseline:
    """An exponentially weighted mean of completed hours (weight 1/4), plus the hour under way."""

    hour_start: datetime
    hour_amount: int
    mean_per_hour: int
    hours_seen: int


def fold_baseline(baseline: Baseline | None, at: datetime, amount: int) -> Baseline:
    """Count ``amount`` at event time ``at``; closing an hour folds it into the mean."""
    hour = hour_of(at)
    if baseline is None:
        return Baseline(hour, amount, 0, 0)
    if hour <= baseline.hour_start:  # late events count toward the hour under way
        return replace(baseline, hour_amount=baseline.hour_amount + amount)
    gap = int((hour - baseline.hour_start).total_seconds()) // HOUR_SECONDS
    mean = _blend(baseline.mean_per_hour, baseline.hour_amount, baseline.hours_seen)
    for _ in range(min(gap - 1, MAX_EMPTY_HOURS)):
        mean = _blend(mean, 0, 1)
    if gap - 1 > MAX_EMPTY_HOURS:
        mean = 0
    return Baseline(hour, amount, mean, baseline.hours_seen + gap)


def _blend(mean: int, amount: int, hours_seen: int) -> int:
    if hours_seen == 0:
        return amount
    return mean + (amount - mean) // 4


@dataclass(frozen=True, slots=True)
class Trip:
    """Why a breaker opens."""

    name: str
    metric: str
    value: int
    threshold: int
    window_seconds: int
    reason: str


def velocity_trip(  # noqa: PLR0913, PLR0917 - the judged sums and every rule that applies to them
    metric: str,
    minute_sum: int,
    recent_sum: int,
    limits: Limits,
    baseline: Baseline | None,
    policy: RelativePolicy,
) -> Trip | None:
    """The trip ``metric``'s windows call for, or None."""
    threshold = limits.per_minute(metric)
    if threshold is not None and minute_sum > threshold:
        return Trip(
            name=f"{metric}_per_minute",
            metric=metric,
            value=minute_sum,
            threshold=threshold,
            window_seconds=MINUTE_SECONDS,
            reason=f"{minute_sum} {metric} in the last minute, above the limit of {threshold}",
        )
    allowed = relative_allowance(baseline, limits.relative_factor, policy)
    if metric == TOKENS and allowed is not None and recent_sum > allowed:
        return Trip(
            name="tokens_vs_baseline",
            metric=metric,
            value=recent_sum,
            threshold=allowed,
            window_seconds=RECENT_SECONDS,
            reason=(
                f"{recent_sum} tokens in ten minutes, over {limits.relative_factor}x the learned"
                f" rate of {baseline.mean_per_hour if baseline else 0} tokens an hour"
            ),
        )
    return None


def relative_allowance(
    baseline: Baseline | None, factor: int | None, policy: RelativePolicy
) -> int | None:
    """Tokens allowed in ``RECENT_SECONDS`` before the burst counts as abnormal."""
    if factor is None or baseline is None or baseline.hours_seen < policy.min_hours:
        return None
    share = factor * baseline.mean_per_hour * RECENT_SECONDS // HOUR_SECONDS
    return max(policy.floor_tokens, share)


def still_open(until: datetime | None, at: datetime) -> bool:
    """A breaker tripped until ``until`` still refuses at event time ``at``."""
    return until is not None and until > at


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """An alert on a ratio: fire when at least ``min_count`` events and ``rate`` or more fail."""

    rate: float
    min_count: int
    window_seconds: int = MINUTE_SECONDS


def rate_breach(total: int, bad: int, policy: RatePolicy) -> float | None:
    """The ratio when it breaches ``policy``, else None."""
    if total < policy.min_count or total == 0:
        return None
    ratio = bad / total
    return ratio if ratio >= policy.rate else None


def may_fire(last_fired: datetime | None, at: datetime, window_seconds: int) -> bool:
    """One alert per scope and metric per window (in event time), so a storm is one message."""
    return last_fired is None or at - last_fired >= timedelta(seconds=window_seconds)


def mix_shift(recent: Mapping[str, int], baseline: Mapping[str, int]) -> float:
    """Total-variation distance (0..1) between two distributions of requests over providers."""
    recent_total = sum(recent.values())
    base_total = sum(baseline.values())
    if recent_total == 0 or base_total == 0:
        return 0.0
    names = set(recent) | set(baseline)
    return (
        sum(abs(recent.get(n, 0) / recent_total - baseline.get(n, 0) / base_total) for n in names)
        / 2
    )
