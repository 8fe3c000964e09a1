"""Refusing calls whose key, project, task or account has an open velocity breaker.

The view is this instance's fold of ``limits.breakers`` (see ``tollway.runtime.breakers``); a
check is a dictionary lookup, so every call pays it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tollway.edge import errors
from tollway.events.envelope import utcnow
from tollway.runtime.breakers import request_scopes

if TYPE_CHECKING:
    from tollway.edge.store import KeyInfo
    from tollway.runtime.breakers import BreakerBoard


def check_breakers(board: BreakerBoard, key: KeyInfo, task_id: str | None) -> None:
    """Raise 429 (with ``retry-after``) naming the breaker when one covers this call."""
    now = utcnow()
    scopes = request_scopes(key.account_id, key.id, key.project_id, task_id)
    tripped = board.open_for(scopes, now)
    if tripped is None:
        return
    retry = max(1, math.ceil((tripped.until - now).total_seconds()))
    raise errors.RateLimitedError(
        f"Breaker '{tripped.name}' is open on {tripped.scope} '{tripped.scope_id}':"
        f" {tripped.reason}. Retry after {retry}s, or ask an operator to reset it.",
        code="breaker_open",
        headers={"retry-after": str(retry)},
    )
