"""The edge's audit migration on a database that already has route-tree audit rows.

The route tree's trail used to be ``router.audit``; the edge's migration moves its rows into
``edge.audit`` with their ids, so ``RouteTreeChanged.audit_id`` keeps naming the same change,
and new rows continue after them. The trail stays append-only.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tollway.ledger.replay import fresh_database
from tollway.runtime.migrations import apply_migrations

pytestmark = pytest.mark.integration

OLD_ROWS = [
    ("ops-1", "channel.create", "openai-direct", None, '{"id": "openai-direct"}'),
    ("ops-2", "routes.set", "gpt-4o-mini", '{"routes": []}', '{"model": "gpt-4o-mini"}'),
]


async def _migrate_with_old_rows(dsn: str) -> dict[str, Any]:
    target = await fresh_database(dsn, "edge_audit_migration_test")
    conn = await asyncpg.connect(target)
    try:
        await apply_migrations(conn, "router", "tollway.router")
        await conn.executemany(
            "INSERT INTO router.audit (actor, action, subject, before, after)"
            " VALUES ($1, $2, $3, $4, $5)",
            OLD_ROWS,
        )
        await apply_migrations(conn, "edge", "tollway.edge")
        moved = [
            dict(r)
            for r in await conn.fetch(
                "SELECT id, actor, action, kind, target, before, after FROM edge.audit ORDER BY id"
            )
        ]
        next_id = await conn.fetchval(
            "INSERT INTO edge.audit (actor, action, target) VALUES ('ops-3', 'key.revoke', 'k')"
            " RETURNING id"
        )
        refused = None
        try:
            await conn.execute("DELETE FROM edge.audit")
        except asyncpg.PostgresError as exc:
            refused = str(exc)
        return {"moved": moved, "next_id": next_id, "refused": refused}
    finally:
        await conn.close()


def test_route_tree_audit_rows_move_to_the_edge_trail_with_their_ids(stack) -> None:
    result = asyncio.run(_migrate_with_old_rows(stack.dsn))

    moved = result["moved"]
    assert [(r["id"], r["actor"], r["action"], r["kind"], r["target"]) for r in moved] == [
        (1, "ops-1", "channel.create", "channel", "openai-direct"),
        (2, "ops-2", "routes.set", "routes", "gpt-4o-mini"),
    ]
    assert moved[1]["before"] == '{"routes": []}'
    assert result["next_id"] == len(OLD_ROWS) + 1
    assert result["refused"] is not None
    assert "append-only" in result["refused"]
