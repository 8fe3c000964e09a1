"""SQL migrations.

Files ``NNN_name.sql`` in a service's ``migrations`` folder, applied in order, each in its own
transaction, recorded in ``public.tollway_migrations`` with a checksum.

A Postgres advisory lock serializes concurrent runners (several instances starting at once), and
a changed checksum of an applied file stops the start-up instead of drifting silently.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import TYPE_CHECKING

import asyncpg
import structlog

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

log = structlog.get_logger(__name__)

_LOCK_KEY = 0x70_11_3A_7E
_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS public.tollway_migrations (
    service text NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, name)
)
"""


class MigrationDriftError(RuntimeError):
    """An applied migration file changed after it ran; write a new migration instead."""


def _files(package: str) -> list[Traversable]:
    folder = resources.files(package).joinpath("migrations")
    return sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)


async def apply_migrations(conn: asyncpg.Connection, service: str, package: str) -> list[str]:
    """Apply the pending migrations of ``package`` for ``service``; return the names applied."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_LEDGER_DDL)
        rows = await conn.fetch(
            "SELECT name, checksum FROM public.tollway_migrations WHERE service = $1", service
        )
        done = {r["name"]: r["checksum"] for r in rows}
        applied: list[str] = []
        for file in _files(package):
            sql = file.read_text(encoding="utf-8")
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if file.name in done:
                if done[file.name] != checksum:
                    raise MigrationDriftError(f"{service}/{file.name} changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO public.tollway_migrations (service, name, checksum)"
                    " VALUES ($1, $2, $3)",
                    service,
                    file.name,
                    checksum,
                )
            applied.append(file.name)
            log.info("migration_applied", service=service, migration=file.name)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def migrate(dsn: str, services: dict[str, str]) -> None:
    """Apply migrations for each ``service -> package`` against the database at ``dsn``."""
    conn = await asyncpg.connect(dsn)
    try:
        for service, package in services.items():
            await apply_migrations(conn, service, package)
    finally:
        await conn.close()


ALL_SERVICES = {
    "edge": "tollway.edge",
    "router": "tollway.router",
    "ledger": "tollway.ledger",
    "limits": "tollway.limits",
    "researcher": "tollway.researcher",
    # Data keys of sealed request bodies (tollway.runtime.bodies): shared by edge and router.
    "bodykeys": "tollway.runtime",
}
