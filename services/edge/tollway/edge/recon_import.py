"""An upstream's invoice as CSV: the documented format, parsed all or nothing (pure).

One file per channel. The first line is the header; columns (any order, names exact)::

    date,upstream_request_id,model,input_tokens,output_tokens,cost,currency[,requests]

- ``date``: the UTC day, ``YYYY-MM-DD``;
- ``upstream_request_id``: the upstream's request id (the ``x-request-id`` it answered with);
  empty for a line that aggregates a whole day of one model;
- ``model``: the upstream model name;
- ``input_tokens``, ``output_tokens``: whole numbers;
- ``cost``: a decimal string of the currency's units (at most six decimals, ``0.000123``),
  parsed by the one money parser (``tollway.events.pricing.parse_amount``);
- ``currency``: the cost currency (``USD``);
- ``requests`` (optional): how many upstream requests a day's aggregate line covers (default 1).

Blank lines and lines starting with ``#`` are skipped. Every other line must be valid, and a
line's key (the request id, or the model for an aggregate) may appear once per day; otherwise
the whole file is refused with the line number and the reason, and nothing is imported.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from datetime import date

from pydantic import ValidationError

from tollway.events.pricing import AmountError, parse_amount, unit_pattern
from tollway.events.recon import MAX_TOKENS, InvoiceLine

REQUIRED = ("date", "upstream_request_id", "model", "input_tokens", "output_tokens", "cost")
COLUMNS = (*REQUIRED, "currency", "requests")
MAX_LINES = 200_000
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_WHOLE = re.compile(r"[0-9]{1,13}", re.ASCII)


class InvoiceFormatError(ValueError):
    """The file is not a valid invoice; ``line`` is its 1-based line number (0: the file)."""

    def __init__(self, line: int, reason: str) -> None:
        """Say where and why."""
        where = f"line {line}: " if line else ""
        super().__init__(f"{where}{reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Invoice:
    """A parsed file: its lines with their line numbers, and the file's SHA-256."""

    import_id: str
    lines: tuple[tuple[int, InvoiceLine], ...]


def parse_invoice(raw: bytes) -> Invoice:
    """Every line of the file, or :class:`InvoiceFormatError` for the first bad one."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvoiceFormatError(0, "the file is not UTF-8 text") from None
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    lines: list[tuple[int, InvoiceLine]] = []
    seen: dict[tuple[date, str], int] = {}
    try:
        for row in rows:
            number = rows.line_num
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = _header(row, number)
                continue
            if len(lines) >= MAX_LINES:
                raise InvoiceFormatError(number, f"more than {MAX_LINES} lines; split the file")
            line = _line(dict(zip(header, row, strict=False)), row, header, number)
            key = (line.day, line.key)
            if key in seen:
                raise InvoiceFormatError(
                    number, f"the same request or day line as line {seen[key]}"
                )
            seen[key] = number
            lines.append((number, line))
    except csv.Error as exc:
        raise InvoiceFormatError(rows.line_num, f"not valid CSV ({exc})") from None
    if header is None:
        raise InvoiceFormatError(0, f"no header line ({','.join(COLUMNS[:-1])}[,requests])")
    return Invoice(hashlib.sha256(raw).hexdigest(), tuple(lines))


def _header(row: list[str], number: int) -> list[str]:
    names = [c.strip() for c in row]
    unknown = [n for n in names if n not in COLUMNS]
    missing = [n for n in (*REQUIRED, "currency") if n not in names]
    if unknown or missing or len(set(names)) != len(names):
        raise InvoiceFormatError(
            number,
            f"the header must name the columns {','.join(COLUMNS[:-1])}[,requests] once each"
            f" (unknown: {unknown or 'none'}, missing: {missing or 'none'})",
        )
    return names


def _line(fields: dict[str, str], row: list[str], header: list[str], number: int) -> InvoiceLine:
    if len(row) != len(header):
        raise InvoiceFormatError(number, f"expected {len(header)} fields, found {len(row)}")
    fields = {k: v.strip() for k, v in fields.items()}
    day = fields["date"]
    if not _DATE.fullmatch(day):
        raise InvoiceFormatError(number, "date: expected YYYY-MM-DD")
    try:
        parsed_day = date.fromisoformat(day)
    except ValueError:
        raise InvoiceFormatError(number, "date: not a calendar day") from None
    try:
        cost = parse_amount(fields["cost"], field="cost", sign="non_negative")
    except AmountError as exc:
        raise InvoiceFormatError(number, str(exc)) from None
    if not unit_pattern().fullmatch(fields["currency"]):
        raise InvoiceFormatError(number, "currency: expected a currency code like USD")
    try:
        return InvoiceLine(
            day=parsed_day,
            upstream_request_id=fields["upstream_request_id"] or None,
            model=fields["model"],
            requests=_count(fields.get("requests") or "1", "requests", number),
            input_tokens=_count(fields["input_tokens"], "input_tokens", number),
            output_tokens=_count(fields["output_tokens"], "output_tokens", number),
            cost_micro=cost,
            currency=fields["currency"],
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise InvoiceFormatError(number, f"{where}: {problem['msg']}") from None


def _count(text: str, name: str, number: int) -> int:
    if not _WHOLE.fullmatch(text) or int(text) > MAX_TOKENS:
        raise InvoiceFormatError(number, f"{name}: expected a whole number up to {MAX_TOKENS}")
    return int(text)
