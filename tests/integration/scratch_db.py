"""A scratch database next to the stack's, with chosen migrations applied (helpers only)."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tollway.runtime.migrations import migrate


async def scratch_database(dsn: str, services: dict[str, str]) -> str:
    """Create a fresh database on the server of ``dsn``, migrate ``services``; its DSN."""
    name = f"scratch_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    target = urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
    await migrate(target, services)
    return target
