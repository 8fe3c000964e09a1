"""Postgres connection pools for the services."""

from __future__ import annotations

from typing import Any

import asyncpg


class LeanConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection whose release costs no round trip.

    asyncpg resets a connection on release with ``pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL`` - one more round trip per checkout, on every hop of the money path.
    The services keep no session state (no LISTEN, cursors or session settings; the one advisory
    lock, the migrations', is released by its holder), so nothing is left to reset. An open
    transaction is still rolled back: asyncpg does that whatever this returns.
    """

    def get_reset_query(self) -> str:
        """No session state to reset (see the class docstring)."""
        return ""


async def create_pool(
    dsn: str, *, name: str, min_size: int, max_size: int, **options: Any
) -> asyncpg.Pool:
    """A pool of :class:`LeanConnection` in UTC for the service ``name``.

    ``name`` is the connections' ``application_name``: ``pg_stat_activity`` and the server log
    then say which service holds a lock or runs a statement.
    """
    settings = {
        "timezone": "UTC",
        "application_name": f"tollway-{name}",
        **options.pop("server_settings", {}),
    }
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        connection_class=LeanConnection,
        server_settings=settings,
        **options,
    )
    return pool
