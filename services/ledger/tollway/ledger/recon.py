"""Reconciliation, pure: attempt rows, invoice line revisions and the drift of a channel-day.

What Tollway booked for an attempt is ``upstream_cost_micro(usage, candidate.cost)`` (the same
function the cost booking uses); what the upstream reported comes from its answer
(``AttemptFinished.reported_cost_micro``) and from its invoice (imported lines). The drift of a
channel's UTC day compares them two ways:

- ``response``: over the attempts whose answer reported a cost, the reported total against the
  booked total of those same attempts;
- ``invoice``: the invoice's total for the day (each line's latest revision) against everything
  booked that day.

"Booked" is the re-rated booked cost: an attempt's booking plus its cost re-ratings
(``ledger.upstream_cost_rerates``, added when the rows are read), so a corrected cost price
shows in the drift as soon as it is booked. A difference is upstream minus Tollway (positive:
the upstream billed more); the relative difference is over the booked amount. Nothing here
reads a clock or a database.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from tollway.events.pricing import format_micro, upstream_cost_micro
from tollway.events.recon import InvoiceLine, InvoiceLineRevised, UpstreamCostReported
from tollway.events.topics import RECON_KEY

if TYPE_CHECKING:
    from tollway.events.envelope import Envelope
    from tollway.events.gateway import AttemptFinished
    from tollway.events.recon import InvoiceLineImported

PPM = 1_000_000
BASES = ("response", "invoice")


@dataclass(frozen=True, slots=True)
class ReconAttempt:
    """One attempt as reconciliation keeps it (a row of ``ledger.recon_attempts``)."""

    event_id: str
    day: date
    channel_id: str
    account_id: str
    request_id: str
    attempt: int
    outcome: str
    upstream_request_id: str | None
    upstream_model: str
    input_tokens: int
    output_tokens: int
    booked_micro: int | None
    booked_currency: str | None
    reported_micro: int | None
    reported_currency: str | None
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class InvoiceRow:
    """The latest revision of one invoice line (a row of ``ledger.recon_invoice_lines``)."""

    channel_id: str
    line_key: str
    revision: int
    line: InvoiceLine


def attempt_row(env: Envelope[AttemptFinished]) -> ReconAttempt | None:
    """The attempt's reconciliation row; None when neither a cost price nor a reported cost."""
    a = env.payload
    cost = a.candidate.cost
    if cost is None and a.reported_cost_micro is None:
        return None
    return ReconAttempt(
        event_id=env.id,
        day=_utc_day(env.occurred_at),
        channel_id=a.candidate.channel_id,
        account_id=a.account_id,
        request_id=a.request_id,
        attempt=a.attempt,
        outcome=a.outcome,
        upstream_request_id=a.upstream_request_id,
        upstream_model=a.candidate.upstream_model,
        input_tokens=a.usage.input_tokens,
        output_tokens=a.usage.output_tokens,
        booked_micro=None if cost is None else upstream_cost_micro(a.usage, cost),
        booked_currency=None if cost is None else cost.currency,
        reported_micro=a.reported_cost_micro,
        reported_currency=a.reported_cost_currency,
        occurred_at=env.occurred_at,
    )


def _utc_day(at: datetime) -> date:
    """The UTC day of an event time (a naive time is taken as UTC)."""
    return (at - (at.utcoffset() or timedelta(0))).date()


def reported_event(row: ReconAttempt, cause_id: str) -> UpstreamCostReported | None:
    """The journal's record of what the upstream said the attempt cost (None: it said nothing)."""
    if row.reported_micro is None:
        return None
    return UpstreamCostReported(
        account_id=row.account_id,
        cause_id=cause_id,
        request_id=row.request_id,
        attempt=row.attempt,
        channel_id=row.channel_id,
        upstream_request_id=row.upstream_request_id,
        reported_micro=row.reported_micro,
        currency=row.reported_currency,
        booked_micro=row.booked_micro,
        booked_currency=row.booked_currency,
    )


def decide_line(
    latest: InvoiceRow | None, command: InvoiceLineImported, cause_id: str
) -> InvoiceLineRevised | None:
    """The line's next revision; None when the import repeats its current value."""
    if latest is not None and latest.line == command.invoice:
        return None
    return InvoiceLineRevised(
        account_id=RECON_KEY,
        cause_id=cause_id,
        channel_id=command.channel_id,
        line_key=command.invoice.key,
        revision=(latest.revision if latest else 0) + 1,
        invoice=command.invoice,
        import_id=command.import_id,
        line=command.line,
    )


# --- drift -------------------------------------------------------------------------------------


def relative(difference: int, booked: int) -> Decimal | None:
    """``difference / booked`` to six places (half-even); None when nothing was booked."""
    if booked == 0:
        return Decimal(0) if difference == 0 else None
    return (Decimal(difference) / Decimal(booked)).quantize(
        Decimal("0.000001"), rounding=ROUND_HALF_EVEN
    )


def exceeds(difference: int, booked: int, threshold_ppm: int) -> bool:
    """``|difference| / booked > threshold`` in exact integers (any difference over nothing)."""
    if booked == 0:
        return difference != 0
    return abs(difference) * PPM > threshold_ppm * booked


@dataclass(slots=True)
class Side:
    """Requests, tokens and cost on one side of a comparison."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micro: int = 0

    def as_json(self) -> dict[str, Any]:
        """The side with its cost as a decimal too."""
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_micro": self.cost_micro,
            "cost": format_micro(self.cost_micro),
        }


@dataclass(slots=True)
class Comparison:
    """Tollway's side against the upstream's, for one basis."""

    booked: Side = field(default_factory=Side)
    upstream: Side = field(default_factory=Side)

    @property
    def difference_micro(self) -> int:
        """Upstream minus booked (positive: the upstream billed more)."""
        return self.upstream.cost_micro - self.booked.cost_micro

    def as_json(self) -> dict[str, Any]:
        """Both sides, absolute and relative difference."""
        rel = relative(self.difference_micro, self.booked.cost_micro)
        return {
            "booked": self.booked.as_json(),
            "upstream": self.upstream.as_json(),
            "difference_micro": self.difference_micro,
            "difference": format_micro(self.difference_micro),
            "relative": None if rel is None else str(rel),
            "token_difference": (self.upstream.input_tokens + self.upstream.output_tokens)
            - (self.booked.input_tokens + self.booked.output_tokens),
            "request_difference": self.upstream.requests - self.booked.requests,
        }


@dataclass(slots=True)
class DayDrift:
    """One channel's UTC day: booked totals, both comparisons, the requests that differ."""

    channel_id: str
    day: date
    currency: str | None = None
    booked: Side = field(default_factory=Side)
    response: Comparison = field(default_factory=Comparison)
    invoice: Comparison = field(default_factory=Comparison)
    invoice_lines: int = 0
    other_currency_lines: int = 0
    differing: list[dict[str, Any]] = field(default_factory=list)

    def comparison(self, basis: str) -> Comparison:
        """The ``response`` or ``invoice`` comparison."""
        return self.response if basis == "response" else self.invoice

    def as_json(self) -> dict[str, Any]:
        """The day as the drift report shows it."""
        return {
            "channel_id": self.channel_id,
            "day": self.day.isoformat(),
            "currency": self.currency,
            "booked": self.booked.as_json(),
            "response": self.response.as_json(),
            "invoice": {
                **self.invoice.as_json(),
                "lines": self.invoice_lines,
                "other_currency_lines": self.other_currency_lines,
            },
            "differing_requests": self.differing,
        }


def drift(attempts: list[ReconAttempt], lines: list[InvoiceRow]) -> list[DayDrift]:
    """Every channel-day of ``attempts`` and ``lines``, in (channel, day) order."""
    days: dict[tuple[str, date], DayDrift] = {}

    def day_of(channel_id: str, day: date) -> DayDrift:
        return days.setdefault((channel_id, day), DayDrift(channel_id, day))

    for a in sorted(attempts, key=lambda r: (r.occurred_at, r.event_id)):
        _book(day_of(a.channel_id, a.day), a)
    by_day: dict[tuple[str, date], list[InvoiceRow]] = {}
    for row in sorted(lines, key=lambda r: (r.channel_id, r.line.day, r.line_key)):
        by_day.setdefault((row.channel_id, row.line.day), []).append(row)
    for key, rows in by_day.items():
        _invoice(day_of(*key), rows, [a for a in attempts if (a.channel_id, a.day) == key])
    return [days[k] for k in sorted(days)]


def _book(d: DayDrift, a: ReconAttempt) -> None:
    d.currency = d.currency or a.booked_currency or a.reported_currency
    booked = a.booked_micro or 0
    _add(d.booked, 1, a.input_tokens, a.output_tokens, booked)
    _add(d.invoice.booked, 1, a.input_tokens, a.output_tokens, booked)
    if a.reported_micro is None:
        return
    _add(d.response.booked, 1, a.input_tokens, a.output_tokens, booked)
    _add(d.response.upstream, 1, a.input_tokens, a.output_tokens, a.reported_micro)
    if a.reported_micro != a.booked_micro:
        d.differing.append(
            _differing(a, "response", booked=a.booked_micro, upstream=a.reported_micro)
        )


def _invoice(d: DayDrift, rows: list[InvoiceRow], attempts: list[ReconAttempt]) -> None:
    by_upstream_id = {a.upstream_request_id: a for a in attempts if a.upstream_request_id}
    d.currency = d.currency or rows[0].line.currency
    per_request = False
    for row in rows:
        line = row.line
        if line.currency != d.currency:
            d.other_currency_lines += 1
            continue
        d.invoice_lines += 1
        _add(
            d.invoice.upstream,
            line.requests,
            line.input_tokens,
            line.output_tokens,
            line.cost_micro,
        )
        if line.upstream_request_id is None:
            continue
        per_request = True
        a = by_upstream_id.pop(line.upstream_request_id, None)
        if a is None:
            d.differing.append(_unbooked(line))
        elif (a.booked_micro, a.input_tokens, a.output_tokens) != (
            line.cost_micro,
            line.input_tokens,
            line.output_tokens,
        ):
            d.differing.append(_differing(a, "invoice", booked=a.booked_micro, upstream=line))
    if per_request:  # the invoice lists requests one by one: the ones it left out differ too
        for a in sorted(by_upstream_id.values(), key=lambda r: (r.occurred_at, r.event_id)):
            d.differing.append(_differing(a, "not_invoiced", booked=a.booked_micro, upstream=None))


def _add(side: Side, requests: int, tokens_in: int, tokens_out: int, cost: int) -> None:
    side.requests += requests
    side.input_tokens += tokens_in
    side.output_tokens += tokens_out
    side.cost_micro += cost


def _differing(
    a: ReconAttempt, basis: str, *, booked: int | None, upstream: int | InvoiceLine | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "basis": basis,
        "request_id": a.request_id,
        "attempt": a.attempt,
        "upstream_request_id": a.upstream_request_id,
        "booked_input_tokens": a.input_tokens,
        "booked_output_tokens": a.output_tokens,
        "booked_micro": booked,
        "upstream_micro": None,
    }
    if isinstance(upstream, InvoiceLine):
        out["upstream_input_tokens"] = upstream.input_tokens
        out["upstream_output_tokens"] = upstream.output_tokens
        out["upstream_micro"] = upstream.cost_micro
    elif upstream is not None:
        out["upstream_micro"] = upstream
    out["difference_micro"] = (out["upstream_micro"] or 0) - (booked or 0)
    return out


def _unbooked(line: InvoiceLine) -> dict[str, Any]:
    return {
        "basis": "not_booked",
        "request_id": None,
        "attempt": None,
        "upstream_request_id": line.upstream_request_id,
        "booked_input_tokens": 0,
        "booked_output_tokens": 0,
        "booked_micro": None,
        "upstream_input_tokens": line.input_tokens,
        "upstream_output_tokens": line.output_tokens,
        "upstream_micro": line.cost_micro,
        "difference_micro": line.cost_micro,
    }


CSV_COLUMNS = (
    "channel_id",
    "day",
    "currency",
    "basis",
    "booked_requests",
    "booked_tokens",
    "booked_cost",
    "upstream_requests",
    "upstream_tokens",
    "upstream_cost",
    "difference",
    "relative",
)


def as_csv(days: list[DayDrift]) -> str:
    """One row per channel, day and basis (the differing requests are in the JSON form)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for d in days:
        for basis in BASES:
            c = d.comparison(basis)
            rel = relative(c.difference_micro, c.booked.cost_micro)
            writer.writerow(
                [
                    d.channel_id,
                    d.day.isoformat(),
                    d.currency or "",
                    basis,
                    c.booked.requests,
                    c.booked.input_tokens + c.booked.output_tokens,
                    format_micro(c.booked.cost_micro),
                    c.upstream.requests,
                    c.upstream.input_tokens + c.upstream.output_tokens,
                    format_micro(c.upstream.cost_micro),
                    format_micro(c.difference_micro),
                    "" if rel is None else str(rel),
                ]
            )
    return out.getvalue()


def parse_threshold(text: str) -> int:
    """A relative threshold (``"0.01"`` = 1 %) as parts per million, exactly."""
    value = Decimal(text)
    if not value.is_finite() or value < 0 or value > 1000:
        raise ValueError("expected a fraction like 0.01 (1 %)")
    return int((value * PPM).to_integral_value(rounding=ROUND_HALF_EVEN))


def unit_ppm(ppm: int) -> str:
    """Parts per million as a percentage for people (``10000`` -> ``"1%"``)."""
    return f"{Decimal(ppm) * 100 / PPM:f}%"
