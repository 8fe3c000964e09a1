"""Market data: the data-source interface, the offline CSV source and its synthetic sample set.

A data source answers two questions: which tickers it knows and the daily OHLCV bars of one.
The offline default reads ``<TICKER>.csv`` files (``date,open,high,low,close,volume``). The
shipped sample set is synthetic: a seeded geometric random walk per ticker, written by
``python -m tollway.researcher.market`` and checked against the generator by a test, so anyone
can see where every number came from.
"""

from __future__ import annotations

import csv
import math
import random
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Protocol

SAMPLE_DIR = "sample_data"
# ticker -> (seed, start price, daily drift, daily volatility)
SAMPLES: dict[str, tuple[int, float, float, float]] = {
    "ACME": (7, 120.0, 0.0006, 0.014),
    "GLOBX": (11, 48.0, -0.0002, 0.022),
    "NOVA": (23, 310.0, 0.0011, 0.028),
}
SAMPLE_DAYS = 260
SAMPLE_START = date(2025, 1, 2)


@dataclass(frozen=True)
class Bar:
    """One trading day."""

    day: date
    open: float
    high: float
    low: float
    close: float
    volume: int


class DataSource(Protocol):
    """Where market data comes from; the researcher only needs these two reads."""

    description: str

    def tickers(self) -> list[str]:
        """Every ticker this source can serve, sorted."""
        ...

    def bars(self, ticker: str) -> list[Bar]:
        """The ticker's daily bars, oldest first; ``KeyError`` for an unknown ticker."""
        ...


class CsvDataSource:
    """Reads ``<TICKER>.csv`` files from a directory (the packaged sample set by default)."""

    def __init__(self, directory: Path | None = None) -> None:
        self._dir = directory or Path(str(resources.files("tollway.researcher") / SAMPLE_DIR))
        self.description = (
            f"daily OHLCV files ({directory.name})"
            if directory
            else "synthetic sample OHLCV series shipped with Tollway (seeded, not market data)"
        )

    def tickers(self) -> list[str]:
        """Every ``*.csv`` file's stem."""
        return sorted(p.stem.upper() for p in self._dir.glob("*.csv"))

    def bars(self, ticker: str) -> list[Bar]:
        """Parse one ticker's file."""
        path = self._dir / f"{ticker.upper()}.csv"
        if not path.is_file():
            raise KeyError(ticker)
        with path.open(newline="") as f:
            return [_bar(row) for row in csv.DictReader(f)]


def _bar(row: dict[str, str]) -> Bar:
    return Bar(
        day=date.fromisoformat(row["date"]),
        open=float(row["open"]),
        high=float(row["high"]),
        low=float(row["low"]),
        close=float(row["close"]),
        volume=int(row["volume"]),
    )


def synthetic_bars(ticker: str) -> list[Bar]:
    """The sample ticker's bars: a seeded geometric random walk over business days."""
    seed, price, drift, vol = SAMPLES[ticker]
    rng = random.Random(seed)  # noqa: S311 - synthetic sample data, not cryptography
    bars: list[Bar] = []
    day = SAMPLE_START
    while len(bars) < SAMPLE_DAYS:
        if day.weekday() < 5:
            opened = price
            price = round(price * math.exp(drift + vol * rng.gauss(0, 1)), 2)
            spread = abs(rng.gauss(0, vol / 2)) * price
            high = round(max(opened, price) + spread, 2)
            low = round(min(opened, price) - spread, 2)
            volume = int(1_000_000 * (1 + abs(rng.gauss(0, 0.5))))
            bars.append(Bar(day, round(opened, 2), high, low, price, volume))
        day += timedelta(days=1)
    return bars


def render_csv(bars: list[Bar]) -> str:
    """The CSV text of ``bars``, as shipped."""
    lines = ["date,open,high,low,close,volume"]
    lines += [
        f"{b.day.isoformat()},{b.open:.2f},{b.high:.2f},{b.low:.2f},{b.close:.2f},{b.volume}"
        for b in bars
    ]
    return "\n".join(lines) + "\n"


def write_samples(directory: Path) -> None:
    """(Re)write the sample set."""
    for ticker in SAMPLES:
        (directory / f"{ticker}.csv").write_text(render_csv(synthetic_bars(ticker)))


if __name__ == "__main__":
    write_samples(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / SAMPLE_DIR)
