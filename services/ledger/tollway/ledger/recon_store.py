"""asyncpg adapter of reconciliation: attempt rows, invoice line revisions, raised alerts.

Writes happen in the ledger consumer's transaction (with its offsets); reads serve the drift
report (``/admin/v1/recon/drift``, ``tollway recon drift``) and the drift alert.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollway.events.recon import InvoiceLine
from tollway.ledger.recon import InvoiceRow, ReconAttempt

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import date, datetime

    import asyncpg

    from tollway.events.recon import InvoiceLineRevised

ATTEMPT_COLUMNS = (
    "event_id, day, channel_id, account_id, request_id, attempt, outcome, upstream_request_id,"
    " upstream_model, input_tokens, output_tokens, booked_micro, booked_currency,"
    " reported_micro, reported_currency, occurred_at"
)
# Applied once per event id: a redelivered attempt inserts nothing.
INSERT_ATTEMPTS = f"""
INSERT INTO ledger.recon_attempts ({ATTEMPT_COLUMNS})
SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[], $6::int[],
    $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[],
    $14::bigint[], $15::text[], $16::timestamptz[])
ON CONFLICT (event_id) DO NOTHING
"""  # noqa: S608 - column names are constants
# What an attempt's booked cost is now: as booked, plus its cost re-ratings (signed), which the
# drift compares with what the upstream reported.
BOOKED_NOW = """
(a.booked_micro + coalesce((SELECT sum(x.amount) FROM ledger.upstream_cost_rerates x
                            WHERE x.attempt_event_id = a.event_id), 0))::bigint
"""
SELECT_ATTEMPTS = f"""
SELECT {ATTEMPT_COLUMNS.replace(" booked_micro,", f" {BOOKED_NOW} AS booked_micro,")}
FROM ledger.recon_attempts a
WHERE ($1::text IS NULL OR channel_id = $1) AND day >= $2 AND day <= $3
ORDER BY channel_id, day, occurred_at, event_id
"""  # noqa: S608 - column names are constants
LINE_COLUMNS = (
    "channel_id, day, line_key, revision, upstream_request_id, model, requests, input_tokens,"
    " output_tokens, cost_micro, currency"
)
LATEST_LINE = f"""
SELECT {LINE_COLUMNS} FROM ledger.recon_invoice_lines
WHERE channel_id = $1 AND day = $2 AND line_key = $3 ORDER BY revision DESC LIMIT 1
"""  # noqa: S608 - column names are constants
LATEST_LINES = f"""
SELECT DISTINCT ON (channel_id, day, line_key) {LINE_COLUMNS} FROM ledger.recon_invoice_lines
WHERE ($1::text IS NULL OR channel_id = $1) AND day >= $2 AND day <= $3
ORDER BY channel_id, day, line_key, revision DESC
"""  # noqa: S608 - column names are constants
INSERT_LINE = """
INSERT INTO ledger.recon_invoice_lines
    (channel_id, day, line_key, revision, upstream_request_id, model, requests, input_tokens,
     output_tokens, cost_micro, currency, import_id, line, event_id, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
"""
# What the answers of a channel-day reported, against what was booked for those same attempts.
RESPONSE_TOTALS = f"""
SELECT count(*) AS requests, coalesce(sum({BOOKED_NOW}), 0)::bigint AS booked,
       coalesce(sum(reported_micro), 0)::bigint AS reported, min(booked_currency) AS currency
FROM ledger.recon_attempts a WHERE channel_id = $1 AND day = $2 AND reported_micro IS NOT NULL
"""  # noqa: S608 - a constant expression
ALERTED = """
SELECT 1 FROM ledger.recon_alerts
WHERE channel_id = $1 AND day = $2 AND basis = $3 AND threshold_ppm = $4
"""
INSERT_ALERT = """
INSERT INTO ledger.recon_alerts (channel_id, day, basis, threshold_ppm, event_id, raised_at)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING event_id
"""


async def insert_attempts(conn: asyncpg.Connection, rows: Sequence[ReconAttempt]) -> None:
    """Write attempt rows with one multi-row statement."""
    if not rows:
        return
    columns = [c.strip() for c in ATTEMPT_COLUMNS.split(",")]
    await conn.execute(INSERT_ATTEMPTS, *([getattr(r, c) for r in rows] for c in columns))


async def attempts(
    conn: asyncpg.Connection, channel_id: str | None, start: date, end: date
) -> list[ReconAttempt]:
    """Attempt rows of ``channel_id`` (every channel when None) from ``start`` to ``end``."""
    rows = await conn.fetch(SELECT_ATTEMPTS, channel_id, start, end)
    return [ReconAttempt(**dict(r)) for r in rows]


def _invoice_row(r: asyncpg.Record) -> InvoiceRow:
    line = InvoiceLine(
        day=r["day"],
        upstream_request_id=r["upstream_request_id"],
        model=r["model"],
        requests=r["requests"],
        input_tokens=r["input_tokens"],
        output_tokens=r["output_tokens"],
        cost_micro=r["cost_micro"],
        currency=r["currency"],
    )
    return InvoiceRow(r["channel_id"], r["line_key"], r["revision"], line)


async def latest_line(
    conn: asyncpg.Connection, channel_id: str, day: date, line_key: str
) -> InvoiceRow | None:
    """The current value of one invoice line, or None when never imported."""
    row = await conn.fetchrow(LATEST_LINE, channel_id, day, line_key)
    return None if row is None else _invoice_row(row)


async def latest_lines(
    conn: asyncpg.Connection, channel_id: str | None, start: date, end: date
) -> list[InvoiceRow]:
    """The current value of every invoice line of the range."""
    return [_invoice_row(r) for r in await conn.fetch(LATEST_LINES, channel_id, start, end)]


async def record_line(
    conn: asyncpg.Connection, event_id: str, p: InvoiceLineRevised, at: datetime
) -> None:
    """Keep a journaled revision (its journal row, ``event_id``, is written first)."""
    line = p.invoice
    await conn.execute(
        INSERT_LINE,
        p.channel_id,
        line.day,
        p.line_key,
        p.revision,
        line.upstream_request_id,
        line.model,
        line.requests,
        line.input_tokens,
        line.output_tokens,
        line.cost_micro,
        line.currency,
        p.import_id,
        p.line,
        event_id,
        at,
    )


async def response_totals(
    conn: asyncpg.Connection, channel_id: str, day: date
) -> tuple[int, int, int, str | None]:
    """(requests, booked, reported, currency) over the channel-day's attempts that reported."""
    r = await conn.fetchrow(RESPONSE_TOTALS, channel_id, day)
    return int(r["requests"]), int(r["booked"]), int(r["reported"]), r["currency"]


async def alerted(
    conn: asyncpg.Connection, channel_id: str, day: date, basis: str, threshold_ppm: int
) -> bool:
    """Whether the channel-day-basis already raised its alert at this threshold."""
    return bool(await conn.fetchval(ALERTED, channel_id, day, basis, threshold_ppm))


async def claim_alert(  # noqa: PLR0913, PLR0917 - the alert's identity
    conn: asyncpg.Connection,
    channel_id: str,
    day: date,
    basis: str,
    threshold_ppm: int,
    event_id: str,
    at: datetime,
) -> bool:
    """Record the alert; False when this channel-day-basis-threshold already raised one."""
    found = await conn.fetchval(INSERT_ALERT, channel_id, day, basis, threshold_ppm, event_id, at)
    return found is not None
