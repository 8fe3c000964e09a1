"""The dashboard's server-side SVG charts: a pure function, checked on its output."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.edge.ui import charts

SVG = "{http://www.w3.org/2000/svg}"


def _bars(svg: str) -> list[ET.Element]:
    return [r for r in ET.fromstring(svg).iter(f"{SVG}rect") if "data-value" in r.attrib]


@pytest.mark.parametrize(
    ("value", "ceiling"),
    [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (10, 10), (11, 20), (180, 200), (501, 1000)],
)
def test_nice_ceiling_is_the_next_one_two_or_five(value: int, ceiling: int) -> None:
    assert charts.nice_ceiling(value) == ceiling


def test_bars_stack_by_series_with_heights_proportional_to_values() -> None:
    svg = charts.stacked_bars(
        ["d1", "d2"], {"gpt": [100, 0], "claude": [50, 200]}, title="Charged per day"
    )

    bars = _bars(svg)
    assert [(b.get("data-series"), b.get("data-value")) for b in bars] == [
        ("gpt", "100"),
        ("claude", "50"),
        ("claude", "200"),
    ]
    heights = [float(b.get("height", "0")) for b in bars]
    # 200 is the axis top: the tallest bar fills the plot, the others in proportion.
    assert heights[2] == pytest.approx(2 * heights[0], rel=1e-2)
    assert heights[0] == pytest.approx(2 * heights[1], rel=1e-2)
    first_day = [b for b in bars if float(b.get("x", "0")) < float(bars[2].get("x", "0"))]
    # Stacked: the second series of a day sits on top of the first.
    top, bottom = sorted(first_day, key=lambda b: float(b.get("y", "0")))
    assert float(top.get("y", "0")) + float(top.get("height", "0")) == pytest.approx(
        float(bottom.get("y", "0")), abs=0.2
    )


def test_every_bar_names_its_series_day_and_formatted_value() -> None:
    svg = charts.stacked_bars(
        ["11-23"], {"key_a": [1_500_000]}, title="t", value_format=lambda v: f"{v / 1e6:.2f} cr"
    )

    [bar] = _bars(svg)
    assert bar.find(f"{SVG}title").text == "key_a · 11-23: 1.50 cr"  # type: ignore[union-attr]
    assert "2.00 cr" in svg  # the axis top, formatted the same way


def test_the_chart_is_an_image_with_a_text_alternative_and_a_legend() -> None:
    svg = charts.stacked_bars(["a"], {"one": [1], "two": [2]}, title="Tokens per day")

    root = ET.fromstring(svg)
    assert root.get("role") == "img"
    assert root.get("aria-label") == "Tokens per day"
    legend = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "legend"]
    assert legend == ["one", "two"]


def test_names_are_escaped_not_injected() -> None:
    svg = charts.stacked_bars(["<d>"], {"<script>x</script>": [3]}, title='a "b" <c>')

    assert "<script>" not in svg
    ET.fromstring(svg)  # still well-formed XML


def test_an_empty_period_says_so() -> None:
    svg = charts.stacked_bars(["d1", "d2"], {"m": [0, 0]}, title="Nothing")

    assert _bars(svg) == []
    assert "Nothing in this period" in svg


def test_many_days_label_a_readable_subset_always_ending_with_the_last() -> None:
    labels = [f"d{i:02}" for i in range(30)]
    svg = charts.stacked_bars(labels, {"m": [1] * 30}, title="t")

    ticks = re.findall(r'class="tick"[^>]*text-anchor="middle">([^<]+)<', svg)
    assert len(ticks) <= charts.MAX_X_LABELS
    assert ticks[-1] == "d29"


@given(
    st.lists(
        st.lists(st.integers(min_value=0, max_value=10**12), min_size=5, max_size=5),
        min_size=1,
        max_size=6,
    )
)
def test_no_bar_leaves_the_plot(values: list[list[int]]) -> None:
    series = {f"s{i}": v for i, v in enumerate(values)}
    svg = charts.stacked_bars([f"d{i}" for i in range(5)], series, title="t", height=200)

    bottom = 200 - charts.MARGIN_BOTTOM
    for bar in _bars(svg):
        y, h = float(bar.get("y", "0")), float(bar.get("height", "0"))
        assert h >= charts.MIN_BAR
        # Only the minimum height of tiny bars may reach past the top.
        assert charts.MARGIN_TOP - charts.MIN_BAR * len(series) - 0.1 <= y
        assert y + h <= bottom + 0.1
