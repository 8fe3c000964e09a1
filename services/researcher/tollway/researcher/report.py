"""The report in Markdown, and the rule that keeps it honest (pure).

The model writes prose; every figure comes from the computed data. Any number in the model's
text that is not one of the computed figures (as printed) is replaced by a marker, so the
report never states a figure the data did not give.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tollway.researcher.indicators import Figures

NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?%?")
UNVERIFIED = "[n/a]"


@dataclass(frozen=True)
class Section:
    """A written section: its name and the model's text."""

    name: str
    text: str


def facts(figures: list[Figures]) -> str:
    """The figures block every prompt carries."""
    return "\n".join(
        f"{f.ticker}: " + "; ".join(f"{label} {value}" for label, value in f.rows())
        for f in figures
    )


def allowed_numbers(figures: list[Figures]) -> set[str]:
    """Every number the report may state: those inside the printed figures."""
    found: set[str] = set()
    for f in figures:
        for _label, value in f.rows():
            found.update(NUMBER.findall(value))
    return found


def scrub(text: str, allowed: set[str]) -> str:
    """Replace every number not in ``allowed`` by a marker."""
    return NUMBER.sub(lambda m: m.group(0) if m.group(0) in allowed else UNVERIFIED, text)


def figures_table(figures: list[Figures]) -> list[list[str]]:
    """Header row, then one row per figure label, one column per ticker."""
    header = ["Figure", *(f.ticker for f in figures)]
    labels = [label for label, _ in figures[0].rows()]
    values = [dict(f.rows()) for f in figures]
    return [header, *([label, *(v[label] for v in values)] for label in labels)]


def markdown(  # noqa: PLR0913 - each part of the document is its own argument
    title: str,
    figures: list[Figures],
    sections: list[Section],
    receipt_lines: list[str],
    source: str,
    *,
    outcome: str | None = None,
) -> str:
    """The whole report; ``outcome`` says what stopped a run that did not complete."""
    allowed = allowed_numbers(figures)
    table = figures_table(figures)
    out = [f"# {title}", ""]
    if outcome:
        out += ["## Outcome", "", outcome, ""]
    out += ["## Figures", ""]
    out.append("| " + " | ".join(table[0]) + " |")
    out.append("|" + "---|" * len(table[0]))
    out += ["| " + " | ".join(row) + " |" for row in table[1:]]
    out += ["", "![Closing prices and moving averages](chart.png)", ""]
    for section in sections:
        out += [f"## {section.name.capitalize()}", "", scrub(section.text, allowed).strip(), ""]
    out += ["## Cost", "", *(receipt_lines or ["Nothing was charged."]), ""]
    out.append(f"Data: {source}.")
    return "\n".join(out) + "\n"


def outcome(status: str, error: str | None, spent: list[str]) -> str | None:
    """What a run that did not complete says first: why it stopped and what it spent."""
    if status == "completed":
        return None
    what = "; ".join(line.removeprefix("- ") for line in spent) or "nothing"
    return f"This run {status}: {error or 'no reason was recorded'}. Spent: {what}."
