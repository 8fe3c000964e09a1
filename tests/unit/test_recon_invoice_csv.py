"""An upstream's invoice CSV (tollway.edge.recon_import): the documented format, all or nothing."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from tollway.edge.recon_import import InvoiceFormatError, parse_invoice
from tollway.edge.route_tree import ChannelPatch

HEADER = "date,upstream_request_id,model,input_tokens,output_tokens,cost,currency\n"


def test_a_valid_invoice_is_parsed_exactly() -> None:
    raw = (
        HEADER
        + "2026-05-03,up-1,gpt-4o-mini,1200,300,0.000123,USD\n"
        + "\n# a comment line\n"
        + "2026-05-03,,gpt-4o-mini,120000,30000,12.5,USD\n"
    ).encode()
    invoice = parse_invoice(raw)
    assert len(invoice.import_id) == 64
    [(n1, first), (n2, aggregate)] = invoice.lines
    assert (n1, n2) == (2, 5)
    assert first.day == date(2026, 5, 3)
    assert (first.upstream_request_id, first.cost_micro, first.currency) == ("up-1", 123, "USD")
    assert (aggregate.upstream_request_id, aggregate.cost_micro) == (None, 12_500_000)
    assert aggregate.key == "day:gpt-4o-mini"
    assert parse_invoice(raw).import_id == invoice.import_id  # the same file, the same id


def test_a_requests_column_counts_an_aggregate_and_columns_may_come_in_any_order() -> None:
    raw = b"currency,cost,date,model,upstream_request_id,output_tokens,input_tokens,requests\n"
    raw += b"USD,1,2026-05-03,m,,10,20,7\n"
    [(_, line)] = parse_invoice(raw).lines
    assert (line.requests, line.input_tokens, line.output_tokens) == (7, 20, 10)


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        ("2026-05-03,up-1,m,1,1,-1,USD\n", 2, "cost"),
        ("2026-05-03,up-1,m,1,1,0.0000001,USD\n", 2, "decimal places"),
        ("2026-05-03,up-1,m,1,1,1e3,USD\n", 2, "cost"),
        ("2026-5-3,up-1,m,1,1,1,USD\n", 2, "date"),
        ("2026-02-30,up-1,m,1,1,1,USD\n", 2, "calendar day"),
        ("2026-05-03,up-1,m,1.5,1,1,USD\n", 2, "input_tokens"),
        ("2026-05-03,up-1,m,1,-1,1,USD\n", 2, "output_tokens"),
        ("2026-05-03,up-1,,1,1,1,USD\n", 2, "model"),
        ("2026-05-03,up-1,m,1,1,1,\n", 2, "currency"),
        ("2026-05-03,up-1,m,1,1,1\n", 2, "expected 7 fields"),
        ("2026-05-03,up-1,m,1,1,1,USD\n2026-05-03,up-1,m,1,1,2,USD\n", 3, "as line 2"),
        ("2026-05-03,up-1,m,1,1,1,USD\n2026-05-03,up-2,m,1,1,x,USD\n", 3, "cost"),
    ],
)
def test_a_bad_line_refuses_the_whole_file_with_its_number(
    body: str, line: int, reason: str
) -> None:
    with pytest.raises(InvoiceFormatError) as raised:
        parse_invoice((HEADER + body).encode())
    assert raised.value.line == line
    assert reason in str(raised.value)
    assert str(raised.value).startswith(f"line {line}: ")


@pytest.mark.parametrize(
    "raw",
    [b"", b"# only a comment\n", b"date,model,cost\n", b"\xff\xfe", b"date,date,model\n"],
)
def test_a_file_without_a_usable_header_is_refused(raw: bytes) -> None:
    with pytest.raises(InvoiceFormatError):
        parse_invoice(raw)


def test_a_channel_reported_cost_path_is_validated() -> None:
    assert ChannelPatch(reported_cost_path="x_cost.usd").reported_cost_path == "x_cost.usd"
    assert ChannelPatch(reported_cost_path="").reported_cost_path == ""
    with pytest.raises(ValidationError, match="reported_cost_path"):
        ChannelPatch(reported_cost_path="usage[0].cost")
