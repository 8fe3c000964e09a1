"""How the ledger's use cases emit: ids derived from the cause, the journal, the receipt row.

Emitted events take ids derived from their cause and the cause's ``occurred_at``, never the wall
clock, so replaying the same log reproduces the same journal byte for byte (invariant 5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tollway.events import topics
from tollway.events.envelope import Envelope, Payload, make
from tollway.events.ids import derived_id
from tollway.ledger import store
from tollway.runtime.outbox import Outgoing

if TYPE_CHECKING:
    import asyncpg

    from tollway.events.gateway import RequestReceived


def emit(cause: Envelope[Any], payload: Payload, salt: str) -> Envelope[Payload]:
    """An event caused by ``cause``: derived id, the cause's time and trace."""
    return make(
        payload,
        trace=cause.trace,
        occurred_at=cause.occurred_at,
        event_id=derived_id(cause.id, salt),
    )


async def journal(conn: asyncpg.Connection, env: Envelope[Any]) -> Outgoing:
    """Append a money event to the journal and return it for ledger.events."""
    # One serialization serves the journal row and the published message.
    message = Outgoing.of(topics.LEDGER_EVENTS, env.payload.account_id, env)
    await store.append(conn, env, message.value)
    return message


async def create_receipt(
    conn: asyncpg.Connection, env: Envelope[RequestReceived], status: str, body: dict[str, Any]
) -> None:
    """Write a request's receipt row as the ledger first decides on it."""
    req = env.payload
    await store.insert_receipt(
        conn,
        request_id=req.request_id,
        account_id=req.account_id,
        key_id=req.key_id,
        project_id=req.project_id,
        task_id=req.task_id,
        catalog_model=req.catalog_model,
        status=status,
        created_at=env.occurred_at,
        body=body,
    )
