"""Reconciliation: what an upstream said it billed, against what Tollway booked.

Two sources of the upstream's word:

- the response: the router reads the cost an upstream reports with each answer (OpenRouter's
  ``usage.cost`` by default, or the channel's ``reported_cost_path``) into
  ``AttemptFinished.reported_cost_micro``; the ledger journals it as
  :class:`UpstreamCostReported` next to the cost it booked for the attempt;
- the invoice: an operator imports the upstream's invoice lines (CSV, per channel and day); each
  line travels as :class:`InvoiceLineImported` on gw.requests under the one key
  :data:`tollway.events.topics.RECON_KEY`, and the ledger journals each new value of a line as a
  numbered :class:`InvoiceLineRevised` (never overwritten; the same value again is ignored).

A JSON path is a dot-separated list of object keys (``usage.cost``, ``x_cost.usd``); it names a
number inside the upstream's answer object (the non-streamed body, a streamed chunk, an
Anthropic ``message``/``message_delta`` event, a Responses ``response`` object).
"""

from __future__ import annotations

import re
from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from tollway.events.envelope import Payload, register
from tollway.events.ledger import MoneyEvent
from tollway.events.pricing import MAX_AMOUNT_MICRO, UNIT_PATTERN

DEFAULT_COST_PATH = "usage.cost"
MAX_PATH_SEGMENTS = 8
MAX_PATH_CHARS = 200
_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
MAX_TOKENS = 10**12  # tokens of one invoice line (a day's aggregate included)


class CostPathError(ValueError):
    """A reported-cost path that is not a dot-separated list of plain object keys."""


def cost_path_segments(path: str) -> tuple[str, ...]:
    """The keys of ``path`` (``"usage.cost"`` -> ``("usage", "cost")``), or CostPathError.

    Keys are ASCII letters, digits, ``_`` and ``-`` (1..64 each), at most
    :data:`MAX_PATH_SEGMENTS` of them: no wildcards, no indexes, nothing to evaluate.
    """
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS:
        raise CostPathError(f"expected a dot-separated JSON path of 1..{MAX_PATH_CHARS} characters")
    segments = tuple(path.split("."))
    if len(segments) > MAX_PATH_SEGMENTS:
        raise CostPathError(f"at most {MAX_PATH_SEGMENTS} keys")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise CostPathError(
                f"key {segment!r} is not 1..64 ASCII letters, digits, '_' or '-'"
                " (e.g. usage.cost, x_cost.usd)"
            )
    return segments


def line_key(upstream_request_id: str | None, model: str) -> str:
    """What identifies an invoice line within its channel and day: the request, else the model."""
    return f"req:{upstream_request_id}" if upstream_request_id else f"day:{model}"


class InvoiceLine(BaseModel):
    """One line of an upstream's invoice, as imported (money in micro-units of ``currency``)."""

    model_config = ConfigDict(frozen=True)

    day: date
    upstream_request_id: str | None = Field(default=None, min_length=1, max_length=200)
    model: str = Field(min_length=1, max_length=200)
    requests: int = Field(default=1, ge=0, le=MAX_TOKENS)
    input_tokens: int = Field(ge=0, le=MAX_TOKENS)
    output_tokens: int = Field(ge=0, le=MAX_TOKENS)
    cost_micro: int = Field(ge=0, le=MAX_AMOUNT_MICRO)
    currency: str = Field(pattern=UNIT_PATTERN)

    @property
    def key(self) -> str:
        """:func:`line_key` of this line."""
        return line_key(self.upstream_request_id, self.model)


@register
class InvoiceLineImported(Payload):
    """An operator imported a line of a channel's invoice (gw.requests, key ``system:recon``).

    ``import_id`` names the file (its SHA-256) and ``line`` its line number, for the operator;
    the ledger keys the line by (channel, day, :func:`line_key`). The file's last line carries
    ``import_days``, every day the file covers: once it is applied the whole invoice is in, and
    the ledger checks those days' drift (never a half-imported day's).
    """

    TYPE = "recon.invoice_line_imported"

    channel_id: str = Field(min_length=1, max_length=64)
    invoice: InvoiceLine
    import_id: str
    line: int = Field(ge=1)
    actor: str = ""
    import_days: list[date] = Field(default_factory=list, max_length=366)


@register
class InvoiceLineRevised(MoneyEvent):
    """The ledger recorded a new value of an invoice line (ledger.events, ``system:recon``).

    ``revision`` counts from 1 per (channel, day, line key); the latest revision is the line's
    value, earlier ones stay in the journal and the projection. No postings.
    """

    TYPE = "ledger.recon_invoice_line_revised"

    channel_id: str
    line_key: str
    revision: int = Field(ge=1)
    invoice: InvoiceLine
    import_id: str
    line: int


@register
class UpstreamCostReported(MoneyEvent):
    """The upstream said what an attempt cost (ledger.events, key: the tenant's account).

    ``booked_micro`` is what Tollway booked for the attempt at the channel's cost price
    (``upstream_cost_micro``), None when the channel has none. No postings: the operator's cost
    booking is its own event; this one is the upstream's word, kept for reconciliation.
    """

    TYPE = "ledger.upstream_cost_reported"

    request_id: str
    attempt: int
    channel_id: str
    upstream_request_id: str | None = None
    reported_micro: int = Field(ge=0)
    currency: str | None = None
    booked_micro: int | None = None
    booked_currency: str | None = None
