"""A receipt as the ledger keeps it while a batch is folded: its row's columns and its body.

The body is the JSON document the edge serves (see :mod:`tollway.ledger.receipts` for its
fields). A row may be kept in memory across batches (:mod:`tollway.ledger.resident`), so it
is never edited in place: :meth:`ReceiptRow.edit` hands out a copy of the body and
:meth:`ReceiptRow.with_body` returns a new row, which the fold keeps only once its batch
commits. A batch that fails leaves every row it read exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from datetime import datetime


_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS


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
        """A copy of the body to change (this row's own body is never changed).

        Copied through its JSON form, the form it is stored in (C speed; a Python deep copy
        was a tenth of a replay's time).
        """
        copied: dict[str, Any] = orjson.loads(orjson.dumps(self.body, option=_JSON_OPTIONS))
        return copied

    def with_body(self, body: dict[str, Any]) -> ReceiptRow:
        """The same row with ``body``."""
        return replace(self, body=body)
