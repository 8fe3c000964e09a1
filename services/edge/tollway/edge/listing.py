"""Query parameters shared by listings: keyset cursors and text filters.

A cursor is the last row's ``(created_at, id)``, opaque to clients; pages are newest first.
"""

from __future__ import annotations

import base64
from datetime import datetime

from tollway.edge import errors


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """The cursor that resumes a listing after this row."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """The position a cursor names, or None for the first page; 400 for a forged one."""
    if not cursor:
        return None
    try:
        at, _, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), row_id
    except ValueError:
        raise errors.InvalidRequestError(
            "Invalid value for 'cursor': pass the next_cursor of the previous page.", param="cursor"
        ) from None


def refuse_nul(**params: str | None) -> None:
    """Postgres text cannot hold NUL, so such a filter is a client error, not a crash."""
    for name, value in params.items():
        if value is not None and "\x00" in value:
            raise errors.InvalidRequestError(
                f"Invalid value for '{name}': NUL characters are not allowed.", param=name
            )
