from __future__ import annotations

import pytest

from tollway.researcher import calibrate, plan
from tollway.researcher.calibrate import PastRun, Spread

EST = plan.Estimate(
    calls=3,
    input_tokens=900,
    max_output_tokens=900,
    buckets=(plan.BucketRange("credit", 100, 5_000),),
    seconds=1.5,
)


def _run(tokens: int, spent: int, seconds: float, calls: int = 3) -> PastRun:
    return PastRun(calls=calls, tokens=tokens, spent={"credit": spent}, seconds=seconds)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]
    assert calibrate.percentile(values, 50) == 5
    assert calibrate.percentile(values, 90) == 9
    assert calibrate.percentile([7.0], 90) == 7
    assert calibrate.spread([3.0, 1.0, 2.0]) == Spread(2, 3)
    with pytest.raises(ValueError, match="no values"):
        calibrate.percentile([], 50)


def test_without_enough_history_the_expected_figures_are_the_plans_range() -> None:
    expected = calibrate.calibrate(EST, [_run(400, 60, 2.0), _run(500, 70, 2.5)])

    assert expected.basis == "static"
    assert expected.history_runs == 0
    assert expected.calls == Spread(3, 3)
    assert expected.tokens == Spread(900 * 3 // 4 + 900 // 4, 1800)
    assert expected.seconds == Spread(1.5, 1.5)
    assert expected.buckets == {"credit": Spread(100, 5_000)}


def test_history_gives_p50_and_p90_of_tokens_cost_and_duration() -> None:
    past = [_run(100 * i, 10 * i, float(i)) for i in range(1, 11)]

    expected = calibrate.calibrate(EST, past)

    assert (expected.basis, expected.history_runs) == ("history", 10)
    assert expected.tokens == Spread(500, 900)
    assert expected.buckets == {"credit": Spread(50, 90)}
    assert expected.seconds == Spread(5.0, 9.0)
    view = expected.view()
    assert view["buckets"] == [{"bucket": "credit", "p50_micro": 50, "p90_micro": 90}]
    assert view["duration_seconds"] == {"p50": 5.0, "p90": 9.0}
    assert view["tokens"] == {"p50": 500, "p90": 900}


def test_only_the_newest_runs_count_and_an_unused_bucket_is_expected_at_zero() -> None:
    two_buckets = plan.Estimate(
        calls=3,
        input_tokens=900,
        max_output_tokens=900,
        buckets=(plan.BucketRange("credit", 1, 9), plan.BucketRange("usd", 1, 9)),
        seconds=1.5,
    )
    newest = [_run(10, 5, 1.0)] * calibrate.MAX_RUNS
    oldest = [_run(10_000, 5_000, 100.0)] * 20

    expected = calibrate.calibrate(two_buckets, newest + oldest)

    assert expected.history_runs == calibrate.MAX_RUNS
    assert expected.tokens == Spread(10, 10)
    assert expected.buckets == {"credit": Spread(5, 5), "usd": Spread(0, 0)}


def test_a_past_run_is_folded_from_its_receipts() -> None:
    receipts = [
        {
            "usage": {"input_tokens": 100, "output_tokens": 20},
            "bucket": "credit",
            "charged_micro": 300,
        },
        None,
        {"usage": {"input_tokens": 50, "output_tokens": 5}, "bucket": "credit", "charged_micro": 0},
        {"usage": {"input_tokens": 10, "output_tokens": 1}, "bucket": "usd", "charged_micro": 7},
    ]

    run = calibrate.past_run(4.25, receipts)

    assert run == PastRun(calls=4, tokens=186, spent={"credit": 300, "usd": 7}, seconds=4.25)
