"""What the consumer tests share: a scratch schema, top-up records and a handler that notes them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollway.events.envelope import encode, make
from tollway.events.gateway import TopUpRequested
from tollway.runtime.consumer import offsets_ddl
from tollway.runtime.outbox import Outgoing, outbox_ddl

if TYPE_CHECKING:
    from collections.abc import Sequence

    import asyncpg

    from tollway.runtime.consumer import Record


async def create_schema(conn: asyncpg.Connection, schema: str) -> None:
    """A service-like schema: consumer offsets, outbox, and ``seen`` for the handler's notes."""
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.execute(offsets_ddl(schema))
    await conn.execute(outbox_ddl(schema))
    await conn.execute(f"CREATE TABLE {schema}.seen (idem text NOT NULL)")


def topup(key: str) -> bytes:
    """An encoded one-micro top-up of account ``acct``, told apart by its idempotency key."""
    return encode(
        make(
            TopUpRequested(
                account_id="acct",
                bucket="credit",
                unit="credit",
                amount_micro=1,
                idempotency_key=key,
            )
        )
    )


class SeenHandler:
    """Notes each top-up's key in ``schema.seen``; echoes it to ``echo_topic`` when given.

    Fails on the record whose key is ``poison`` (after noting it, so a rollback must undo that).
    """

    def __init__(self, schema: str, echo_topic: str | None = None, poison: str | None = None):
        """Note into ``schema``; echo to ``echo_topic``; fail on ``poison``."""
        self.schema = schema
        self.echo_topic = echo_topic
        self.poison = poison
        self.calls = 0

    async def __call__(self, conn: asyncpg.Connection, records: Sequence[Record]) -> list[Outgoing]:
        """Apply ``records`` in order."""
        self.calls += 1
        out: list[Outgoing] = []
        for record in records:
            payload = record.envelope.payload
            assert isinstance(payload, TopUpRequested)
            await conn.execute(
                f"INSERT INTO {self.schema}.seen (idem) VALUES ($1)", payload.idempotency_key
            )
            if payload.idempotency_key == self.poison:
                raise ValueError("this record cannot be applied")
            if self.echo_topic is not None:
                out.append(Outgoing.of(self.echo_topic, payload.account_id, make(payload)))
        return out
