"""What a run is likely to take, from past completed runs of the same mode and models (pure).

The static plan gives a safe upper bound (the envelope): every call's full output cap on the
dearest route. What a run usually spends is far less, and only past runs say how much: the
expected figures are the p50 and p90 of calls, tokens, cost per bucket and duration over the
latest completed runs of the same mode and models. With fewer than ``MIN_RUNS`` of them the
expected figures come from the static plan (a quarter of the output cap on the primary route,
up to the worst case) and the estimate says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from tollway.researcher.plan import Estimate

MIN_RUNS = 3
MAX_RUNS = 50
Basis = Literal["history", "static"]


@dataclass(frozen=True)
class PastRun:
    """What one completed run took, from its calls' final receipts."""

    calls: int
    tokens: int
    spent: dict[str, int]
    seconds: float


@dataclass(frozen=True)
class Spread:
    """The median and the 90th percentile of one figure."""

    p50: float
    p90: float


@dataclass(frozen=True)
class Expected:
    """The likely figures of a run and where they come from."""

    basis: Basis
    history_runs: int
    calls: Spread
    tokens: Spread
    seconds: Spread
    buckets: dict[str, Spread]

    def view(self) -> dict[str, Any]:
        """As the API shows it (money in integer micro-units)."""
        return {
            "basis": self.basis,
            "history_runs": self.history_runs,
            "calls": _ints(self.calls),
            "tokens": _ints(self.tokens),
            "duration_seconds": {"p50": self.seconds.p50, "p90": self.seconds.p90},
            "buckets": [
                {"bucket": b, "p50_micro": int(s.p50), "p90_micro": int(s.p90)}
                for b, s in sorted(self.buckets.items())
            ],
        }


def _ints(s: Spread) -> dict[str, int]:
    return {"p50": int(s.p50), "p90": int(s.p90)}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sample."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: Sequence[float]) -> Spread:
    """p50 and p90 of a non-empty sample."""
    return Spread(percentile(values, 50), percentile(values, 90))


def past_run(seconds: float, receipts: Iterable[dict[str, Any] | None]) -> PastRun:
    """A run's figures from its calls' final receipts (None: a call without one)."""
    calls = tokens = 0
    spent: dict[str, int] = {}
    for body in receipts:
        calls += 1
        if not body:
            continue
        usage = body.get("usage") or {}
        tokens += int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
        if body.get("charged_micro") and body.get("bucket"):
            spent[body["bucket"]] = spent.get(body["bucket"], 0) + int(body["charged_micro"])
    return PastRun(calls, tokens, spent, seconds)


def static(estimate: Estimate) -> Expected:
    """The expected figures from the plan alone: from the likely case up to the worst case."""
    likely_tokens = estimate.input_tokens * 3 // 4 + estimate.max_output_tokens // 4
    return Expected(
        basis="static",
        history_runs=0,
        calls=Spread(estimate.calls, estimate.calls),
        tokens=Spread(likely_tokens, estimate.input_tokens + estimate.max_output_tokens),
        seconds=Spread(estimate.seconds, estimate.seconds),
        buckets={b.bucket: Spread(b.low_micro, b.high_micro) for b in estimate.buckets},
    )


def calibrate(estimate: Estimate, past: Sequence[PastRun], min_runs: int = MIN_RUNS) -> Expected:
    """The expected figures from ``past`` (newest first, same mode and models) or the plan.

    Only the newest ``MAX_RUNS`` count. A bucket the plan may spend from but no past run did is
    expected at 0. Durations are rounded to tenths of a second.
    """
    runs = list(past[:MAX_RUNS])
    if len(runs) < min_runs:
        return static(estimate)
    seconds = spread([r.seconds for r in runs])
    return Expected(
        basis="history",
        history_runs=len(runs),
        calls=spread([r.calls for r in runs]),
        tokens=spread([r.tokens for r in runs]),
        seconds=Spread(round(seconds.p50, 1), round(seconds.p90, 1)),
        buckets={
            b.bucket: spread([r.spent.get(b.bucket, 0) for r in runs]) for b in estimate.buckets
        },
    )
