"""Charts for the dashboard: inline SVG drawn on the server by pure functions.

No script and no external asset: a chart is a string of SVG the template embeds, so it prints,
works without JavaScript and reads the same in every browser. Every bar carries a ``<title>``
(the browser's tooltip, read by screen readers) and the chart a text alternative.
"""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

# Colour-blind-safe palette (Okabe-Ito, then two neutrals); cycles past eight series.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#7f7f7f",
)
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 72, 12, 12, 28
LEGEND_ROW = 18
LEGEND_GAP = 16
GRID_LINES = 4
MAX_X_LABELS = 10
MIN_BAR = 1.0


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (1 for 0)."""
    if value <= 1:
        return 1
    power = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def color(index: int) -> str:
    """The colour of the ``index``-th series."""
    return PALETTE[index % len(PALETTE)]


def stacked_bars(  # noqa: PLR0913 - a chart's labels and sizes are distinct facts
    labels: Sequence[str],
    series: Mapping[str, Sequence[int]],
    *,
    title: str,
    value_format: Callable[[int], str] = str,
    width: int = 960,
    height: int = 260,
) -> str:
    """Bars per label (a day), stacked by series (a key, model, ...), with axis and legend.

    ``series`` maps a name to one non-negative value per label, in ``labels`` order.
    """
    names = list(series)
    legend_rows = math.ceil(len(names) / 4) if names else 0
    total_height = height + (LEGEND_GAP + legend_rows * LEGEND_ROW if names else 0)
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width}'
            f' {total_height}" width="100%" role="img" aria-label="{escape(title)}">'
        ),
        f"<title>{escape(title)}</title>",
    ]
    totals = [sum(series[n][i] for n in names) for i in range(len(labels))]
    if not labels or not any(totals):
        out.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle"'
            ' class="chart-empty">Nothing in this period</text></svg>'
        )
        return "".join(out)
    top = nice_ceiling(max(totals))
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM
    out += _axis(top, plot_w, plot_h, value_format)
    out += _bars(labels, series, names, top, plot_w, plot_h, value_format)
    out += _x_labels(labels, plot_w, plot_h)
    out += _legend(names, width, height)
    out.append("</svg>")
    return "".join(out)


def _axis(top: int, plot_w: int, plot_h: int, value_format: Callable[[int], str]) -> list[str]:
    out = []
    for i in range(GRID_LINES + 1):
        value = top * i // GRID_LINES
        y = MARGIN_TOP + plot_h - plot_h * i / GRID_LINES
        out.append(
            f'<line class="grid" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}"'
            f' y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(value_format(value))}</text>"
        )
    return out


def _bars(  # noqa: PLR0913, PLR0917 - the geometry is passed down, not recomputed
    labels: Sequence[str],
    series: Mapping[str, Sequence[int]],
    names: list[str],
    top: int,
    plot_w: int,
    plot_h: int,
    value_format: Callable[[int], str],
) -> list[str]:
    out = []
    slot = plot_w / len(labels)
    bar_w = max(1.0, slot * 0.7)
    for i, label in enumerate(labels):
        x = MARGIN_LEFT + slot * i + (slot - bar_w) / 2
        base = float(MARGIN_TOP + plot_h)
        for s, name in enumerate(names):
            value = series[name][i]
            if value <= 0:
                continue
            h = max(plot_h * value / top, MIN_BAR)  # a small amount stays visible
            base -= h
            tip = f"{name} · {label}: {value_format(value)}"
            out.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{h:.1f}"'
                f' fill="{color(s)}" data-series="{escape(name)}" data-value="{value}">'
                f"<title>{escape(tip)}</title></rect>"
            )
    return out


def _x_labels(labels: Sequence[str], plot_w: int, plot_h: int) -> list[str]:
    slot = plot_w / len(labels)
    every = math.ceil(len(labels) / MAX_X_LABELS)
    last = len(labels) - 1
    return [  # counted from the last label, so the newest day is always named
        f'<text class="tick" x="{MARGIN_LEFT + slot * i + slot / 2:.1f}"'
        f' y="{MARGIN_TOP + plot_h + 18}" text-anchor="middle">{escape(label)}</text>'
        for i, label in enumerate(labels)
        if (last - i) % every == 0
    ]


def _legend(names: list[str], width: int, height: int) -> list[str]:
    out = []
    column = (width - MARGIN_LEFT) / 4
    for i, name in enumerate(names):
        x = MARGIN_LEFT + column * (i % 4)
        y = height + LEGEND_GAP + LEGEND_ROW * (i // 4)
        short = name if len(name) <= 28 else name[:27] + "…"
        out.append(
            f'<rect x="{x:.1f}" y="{y - 10}" width="10" height="10" fill="{color(i)}"/>'
            f'<text class="legend" x="{x + 14:.1f}" y="{y}">{escape(short)}</text>'
        )
    return out


def signed_bars(  # noqa: PLR0913 - a chart's labels and sizes are distinct facts
    labels: Sequence[str],
    values: Sequence[int],
    *,
    title: str,
    value_format: Callable[[int], str] = str,
    width: int = 960,
    height: int = 260,
) -> str:
    """One bar per label around a zero line: positive up, negative down (flagged ``neg``)."""
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width}'
            f' {height}" width="100%" role="img" aria-label="{escape(title)}">'
        ),
        f"<title>{escape(title)}</title>",
    ]
    if not labels or not any(values):
        out.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle"'
            ' class="chart-empty">Nothing in this period</text></svg>'
        )
        return "".join(out)
    up = nice_ceiling(max(0, *values))
    down = nice_ceiling(-min(0, *values)) if min(values) < 0 else 0
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM
    zero = MARGIN_TOP + plot_h * up / (up + down)
    scale = plot_h / (up + down)
    for value in (up, 0, -down) if down else (up, 0):
        y = zero - value * scale
        out.append(
            f'<line class="grid" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}"'
            f' y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(value_format(value))}</text>"
        )
    slot = plot_w / len(labels)
    bar_w = max(1.0, slot * 0.7)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = MARGIN_LEFT + slot * i + (slot - bar_w) / 2
        h = max(abs(value) * scale, MIN_BAR)
        y = zero - h if value >= 0 else zero
        kind = "neg" if value < 0 else "pos"
        fill = PALETTE[5] if value < 0 else PALETTE[0]
        out.append(
            f'<rect class="{kind}" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}"'
            f' fill="{fill}" data-value="{value}">'
            f"<title>{escape(label)}: {escape(value_format(value))}</title></rect>"
        )
    out += _x_labels(labels, plot_w, plot_h)
    out.append("</svg>")
    return "".join(out)
