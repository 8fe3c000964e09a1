from __future__ import annotations

import math
from pathlib import Path

import pytest

from tollway.researcher import indicators
from tollway.researcher.market import (
    SAMPLE_DIR,
    SAMPLES,
    CsvDataSource,
    render_csv,
    synthetic_bars,
)


def test_max_drawdown_is_the_deepest_fall_from_a_running_peak() -> None:
    assert indicators.max_drawdown([100, 120, 90, 130, 104]) == pytest.approx(-0.25)
    assert indicators.max_drawdown([1, 2, 3]) == 0.0


def test_sma_waits_for_a_full_window() -> None:
    assert indicators.sma([1, 2, 3, 4], 2) == [None, 1.5, 2.5, 3.5]


def test_rsi_is_100_when_prices_only_rise_and_0_when_they_only_fall() -> None:
    assert indicators.rsi([float(i) for i in range(30)]) == 100.0
    assert indicators.rsi([float(30 - i) for i in range(30)]) == pytest.approx(0.0)


def test_volatility_of_a_steady_growth_is_zero_and_of_a_zigzag_is_positive() -> None:
    steady = [100 * 1.01**i for i in range(50)]
    assert indicators.annual_volatility(steady) == pytest.approx(0.0, abs=1e-12)
    zigzag = [100.0, 110.0] * 25
    expected = math.log(1.1) * math.sqrt(indicators.TRADING_DAYS)
    assert indicators.annual_volatility(zigzag) == pytest.approx(expected, rel=0.05)


def test_figures_of_a_sample_ticker_are_printed_as_computed() -> None:
    source = CsvDataSource()
    bars = source.bars("ACME")
    figures = indicators.compute("ACME", bars)
    closes = [b.close for b in bars]
    assert figures.days == len(bars)
    assert figures.total_return_pct == round((closes[-1] / closes[0] - 1) * 100, 2)
    assert dict(figures.rows())["Total return"] == f"{figures.total_return_pct:.2f}%"


def test_shipped_sample_files_are_exactly_what_the_seeded_generator_writes() -> None:
    directory = Path(str(CsvDataSource()._dir))
    assert directory.name == SAMPLE_DIR
    for ticker in SAMPLES:
        assert (directory / f"{ticker}.csv").read_text() == render_csv(synthetic_bars(ticker))
    assert CsvDataSource().tickers() == sorted(SAMPLES)


def test_an_unknown_ticker_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        CsvDataSource().bars("NOPE")
