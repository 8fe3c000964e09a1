"""Indicators computed from daily bars (pure).

These figures are the only numbers a report may state: they go into the prompts, the tables and
the chart. Values are rounded once, here, to the precision the report prints, so the prompt,
the Markdown and the PDF all show the same strings.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tollway.researcher.market import Bar

TRADING_DAYS = 252
RSI_PERIOD = 14
SHORT_MA = 20
LONG_MA = 50


@dataclass(frozen=True)
class Figures:
    """One ticker's computed figures (percentages in percent, rounded to 2 places)."""

    ticker: str
    first_day: str
    last_day: str
    days: int
    last_close: float
    total_return_pct: float
    annual_volatility_pct: float
    max_drawdown_pct: float
    sma_short: float
    sma_long: float
    rsi: float

    def rows(self) -> list[tuple[str, str]]:
        """The figures as (label, printed value) rows, in report order."""
        return [
            ("Period", f"{self.first_day} to {self.last_day} ({self.days} days)"),
            ("Last close", f"{self.last_close:.2f}"),
            ("Total return", f"{self.total_return_pct:.2f}%"),
            ("Annualised volatility", f"{self.annual_volatility_pct:.2f}%"),
            ("Maximum drawdown", f"{self.max_drawdown_pct:.2f}%"),
            (f"{SHORT_MA}-day moving average", f"{self.sma_short:.2f}"),
            (f"{LONG_MA}-day moving average", f"{self.sma_long:.2f}"),
            (f"RSI ({RSI_PERIOD})", f"{self.rsi:.2f}"),
        ]


def daily_returns(closes: list[float]) -> list[float]:
    """Simple returns from one close to the next."""
    return [b / a - 1 for a, b in itertools.pairwise(closes)]


def annual_volatility(closes: list[float]) -> float:
    """Sample standard deviation of daily log returns, annualised (a fraction)."""
    logs = [math.log(b / a) for a, b in itertools.pairwise(closes)]
    return statistics.stdev(logs) * math.sqrt(TRADING_DAYS) if len(logs) > 1 else 0.0


def max_drawdown(closes: list[float]) -> float:
    """The deepest fall from a running peak (a fraction, <= 0)."""
    peak, worst = closes[0], 0.0
    for close in closes:
        peak = max(peak, close)
        worst = min(worst, close / peak - 1)
    return worst


def sma(closes: list[float], window: int) -> list[float | None]:
    """Simple moving average; None until ``window`` closes exist."""
    out: list[float | None] = []
    total = 0.0
    for i, close in enumerate(closes):
        total += close
        if i >= window:
            total -= closes[i - window]
        out.append(total / window if i + 1 >= window else None)
    return out


def rsi(closes: list[float], period: int = RSI_PERIOD) -> float:
    """Wilder's relative strength index of the last close (0..100)."""
    changes = [b - a for a, b in itertools.pairwise(closes)]
    if len(changes) < period:
        return 50.0
    gain = sum(max(c, 0.0) for c in changes[:period]) / period
    loss = sum(max(-c, 0.0) for c in changes[:period]) / period
    for c in changes[period:]:
        gain = (gain * (period - 1) + max(c, 0.0)) / period
        loss = (loss * (period - 1) + max(-c, 0.0)) / period
    if loss == 0:
        return 100.0
    return 100 - 100 / (1 + gain / loss)


def compute(ticker: str, bars: list[Bar]) -> Figures:
    """Every figure of one ticker."""
    if len(bars) < 2:
        raise ValueError(f"{ticker}: at least two bars are needed, got {len(bars)}")
    closes = [b.close for b in bars]
    short, long = sma(closes, SHORT_MA)[-1], sma(closes, LONG_MA)[-1]
    return Figures(
        ticker=ticker,
        first_day=bars[0].day.isoformat(),
        last_day=bars[-1].day.isoformat(),
        days=len(bars),
        last_close=round(closes[-1], 2),
        total_return_pct=round((closes[-1] / closes[0] - 1) * 100, 2),
        annual_volatility_pct=round(annual_volatility(closes) * 100, 2),
        max_drawdown_pct=round(max_drawdown(closes) * 100, 2),
        sma_short=round(short if short is not None else closes[-1], 2),
        sma_long=round(long if long is not None else closes[-1], 2),
        rsi=round(rsi(closes), 2),
    )
