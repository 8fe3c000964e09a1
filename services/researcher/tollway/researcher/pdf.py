"""The report as a PDF with a price chart (matplotlib PNG, laid out by fpdf2).

Both are pure-Python wheels, so a fresh machine needs no system packages. The PDF holds the
same figures table and scrubbed sections as the Markdown report.
"""

from __future__ import annotations

import io
import math
import re
from datetime import date
from typing import TYPE_CHECKING

import matplotlib as mpl

mpl.use("Agg")  # no display: render to memory

from fpdf import FPDF
from matplotlib.figure import Figure

from tollway.researcher.indicators import LONG_MA, SHORT_MA, sma
from tollway.researcher.report import Section, allowed_numbers, figures_table, scrub

EPOCH = date(1970, 1, 1)

if TYPE_CHECKING:
    from tollway.researcher.indicators import Figures
    from tollway.researcher.market import Bar


def chart_png(series: dict[str, list[Bar]]) -> bytes:
    """Closing prices (rebased to 100) with their moving averages, one line per ticker."""
    fig = Figure(figsize=(8, 4), dpi=100)
    ax = fig.add_subplot()
    for ticker, bars in series.items():
        base = bars[0].close
        closes = [b.close / base * 100 for b in bars]
        days = [float((b.day - EPOCH).days) for b in bars]  # matplotlib's date numbers
        (line,) = ax.plot(days, closes, label=ticker, linewidth=1.2)
        for window, style in ((SHORT_MA, ":"), (LONG_MA, "--")):
            average = [math.nan if v is None else v for v in sma(closes, window)]
            ax.plot(days, average, style, color=line.get_color(), linewidth=0.8)
    ax.xaxis_date()
    ax.set_title(f"Close rebased to 100 (dotted: {SHORT_MA}-day, dashed: {LONG_MA}-day average)")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


# A run of this many characters without a space is broken (a URL, an error's JSON): fpdf cannot
# wrap an unbreakable run wider than the page.
LONGEST_RUN = 60
UNBROKEN = re.compile(rf"\S{{{LONGEST_RUN}}}(?=\S)")
# A table row must fit on one page: a longer cell is cut, with an ellipsis.
MAX_CELL = 240


def _latin1(text: str) -> str:
    # The core PDF fonts are Latin-1; anything else becomes "?" rather than failing the report.
    latin = text.encode("latin-1", "replace").decode("latin-1")
    return UNBROKEN.sub(lambda m: m.group(0) + " ", latin)


def _text(doc: FPDF, height: float, text: str) -> None:
    # Back to the left margin after each block (fpdf2 leaves x at the right edge by default,
    # where the next full-width block would have no room at all).
    doc.multi_cell(0, height, _latin1(text), new_x="LMARGIN", new_y="NEXT")


def _cell(text: str) -> str:
    return _latin1(text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "...")


def render(  # noqa: PLR0913 - each part of the document is its own argument
    title: str,
    figures: list[Figures],
    *,
    sections: list[Section],
    chart: bytes,
    cost_rows: list[list[str]],
    source: str,
    outcome: str | None = None,
) -> bytes:
    """The PDF document; ``outcome`` says what stopped a run that did not complete."""
    doc = FPDF()
    doc.set_auto_page_break(auto=True, margin=15)
    doc.add_page()
    doc.set_font("Helvetica", "B", 16)
    _text(doc, 9, title)
    if outcome:
        _heading(doc, "Outcome")
        doc.set_font("Helvetica", "", 10)
        _text(doc, 5, outcome)
    _table(doc, "Figures", figures_table(figures))
    doc.image(io.BytesIO(chart), w=doc.epw)
    allowed = allowed_numbers(figures)
    for section in sections:
        _heading(doc, section.name.capitalize())
        doc.set_font("Helvetica", "", 10)
        _text(doc, 5, scrub(section.text, allowed).strip())
    if cost_rows:
        _table(doc, "Cost", cost_rows)
    doc.set_font("Helvetica", "I", 8)
    _text(doc, 5, f"Data: {source}.")
    return bytes(doc.output())


def _heading(doc: FPDF, text: str) -> None:
    doc.ln(3)
    doc.set_font("Helvetica", "B", 12)
    doc.cell(0, 8, _latin1(text), new_x="LMARGIN", new_y="NEXT")


def _table(doc: FPDF, name: str, rows: list[list[str]]) -> None:
    _heading(doc, name)
    doc.set_font("Helvetica", "", 9)
    with doc.table(first_row_as_headings=True) as table:
        for row in rows:
            cells = table.row()
            for value in row:
                cells.cell(_cell(value))
    doc.ln(2)
