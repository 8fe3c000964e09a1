"""A test-only stop inside a batch's transaction, so crash tests kill the ledger mid-batch.

Armed only when ``TOLLWAY_LEDGER_CRASH_PAUSE_FILE`` names a file (never in production). The
first batch with at least ``min_records`` records and a finish among them writes its effects,
then, still inside its open transaction (outbox rows and offsets not yet written), reports what
it wrote to that file and waits for ever: the test reads the file and SIGKILLs the process. So
a crash is proven at a point where journal rows, postings and settlements exist uncommitted,
rather than wherever the scheduler happened to be.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import structlog

from tollway.events.gateway import RequestFinished

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    import asyncpg

    from tollway.runtime.consumer import Record

log = structlog.get_logger(__name__)

FINISHED = RequestFinished.TYPE

# The journal rows this transaction wrote (xmin is the writing transaction's id).
WRITTEN_HERE = (
    "SELECT event_id, type FROM ledger.journal WHERE xmin = pg_current_xact_id()::xid ORDER BY seq"
)


def pause_hook(
    path: str, min_records: int
) -> Callable[[asyncpg.Connection, Sequence[Record]], Awaitable[None]] | None:
    """The consumer's ``mid_batch`` hook, or None when ``path`` is empty (not armed)."""
    if not path:
        return None
    target = Path(path)

    async def pause(conn: asyncpg.Connection, records: Sequence[Record]) -> None:
        types = Counter(r.envelope.type for r in records)
        if len(records) < min_records or not types[FINISHED]:
            return
        written = await conn.fetch(WRITTEN_HERE)
        report = {
            "pid": os.getpid(),
            "records": len(records),
            "types": dict(types),
            "journal": [{"event_id": r["event_id"], "type": r["type"]} for r in written],
        }
        partial = target.with_suffix(".partial")
        partial.write_bytes(orjson.dumps(report))
        partial.rename(target)  # the test never reads half a report
        log.warning("paused_mid_batch", records=len(records), journal=len(written))
        await asyncio.Event().wait()

    return pause
