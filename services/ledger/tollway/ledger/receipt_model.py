"""A receipt as the ledger keeps it while a batch is folded: its row's columns and its body.

The body is the JSON document the edge serves (see :mod:`tollway.ledger.receipts` for its
fields). It is edited in place by the batch that owns it; the batch's state is discarded
whole when its transaction fails, so no half-applied edit outlives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime


@dataclass(slots=True)
class ReceiptRow:
    """One row of ``ledger.receipts``; its ``status`` column is the body's ``status``."""

    request_id: str
    account_id: str
    key_id: str
    project_id: str
    task_id: str | None
    catalog_model: str
    created_at: datetime
    body: dict[str, Any]

    @property
    def status(self) -> str:
        """The receipt's status (the row's indexed column)."""
        return str(self.body["status"])

    def edit(self) -> dict[str, Any]:
        """The body to change (the batch owns it: see the module docstring)."""
        return self.body

    def with_body(self, body: dict[str, Any]) -> ReceiptRow:
        """Replace the body (the row itself, returned for chaining)."""
        self.body = body
        return self
