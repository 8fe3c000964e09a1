"""Account statements and past balances, in event time.

A statement lists a tenant's postings between two instants with the opening balance, a running
balance per ledger account and the closing balance. Times are the journal's ``occurred_at``,
never when a row was written, so a statement reads the same on a replay.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tollway.events.pricing import format_micro
from tollway.ledger import finance_store

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

CSV_COLUMNS = (
    "occurred_at",
    "type",
    "event_id",
    "request_id",
    "account",
    "unit",
    "amount_micro",
    "amount",
    "balance_micro",
)


@dataclass
class Statement:
    """A tenant's movements between ``start`` and ``end``."""

    account_id: str
    start: datetime
    end: datetime
    opening: dict[tuple[str, str], int] = field(default_factory=dict)
    lines: list[dict[str, Any]] = field(default_factory=list)
    closing: dict[tuple[str, str], int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready form (amounts stay integer micro-units)."""
        return {
            "account_id": self.account_id,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "opening": _balances_json(self.opening),
            "lines": [
                {**line, "occurred_at": line["occurred_at"].isoformat()} for line in self.lines
            ],
            "closing": _balances_json(self.closing),
        }

    def as_csv(self) -> str:
        """One row per posting, with the running balance of its ledger account."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for line in self.lines:
            writer.writerow(
                [
                    line["occurred_at"].isoformat(),
                    line["type"],
                    line["event_id"],
                    line["request_id"] or "",
                    line["account"],
                    line["unit"],
                    line["amount"],
                    format_micro(line["amount"]),
                    line["balance_micro"],
                ]
            )
        return out.getvalue()


def _balances_json(balances: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
    return [
        {"account": a, "unit": u, "amount_micro": v, "amount": format_micro(v)}
        for (a, u), v in sorted(balances.items())
    ]


def running(
    opening: dict[tuple[str, str], int], lines: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], int]]:
    """Attach each line's running balance; return the lines and the closing balances."""
    current = dict(opening)
    out = []
    for line in lines:
        key = (line["account"], line["unit"])
        current[key] = current.get(key, 0) + line["amount"]
        out.append({**line, "balance_micro": current[key]})
    return out, current


async def balance_at(
    conn: asyncpg.Connection, account_id: str, at: datetime
) -> dict[tuple[str, str], int]:
    """Every ledger account of a tenant as of event time ``at``."""
    accounts = await finance_store.ledger_accounts(conn, account_id)
    rows = await finance_store.balances_at(conn, accounts, at)
    return {(r["account"], r["unit"]): int(r["amount"]) for r in rows}


async def statement(
    conn: asyncpg.Connection, account_id: str, start: datetime, end: datetime
) -> Statement:
    """The tenant's statement for ``[start, end)``."""
    accounts = await finance_store.ledger_accounts(conn, account_id)
    opening = await balance_at(conn, account_id, start)
    raw = await finance_store.statement_lines(conn, accounts, start, end)
    lines, closing = running(opening, raw)
    return Statement(account_id, start, end, opening, lines, closing)
