"""asyncpg adapter of tenancy in the edge schema: accounts, their projects, and API keys.

Writes take the caller's connection so each one commits with its audit row (see
``tollway.edge.audit.mutate``); reads take the pool. A key's secret never leaves
``issue_key``'s caller: rows hold its SHA-256 digest and a display prefix, and no view here
returns either the digest or the secret.

A key's status is derived when read (``revoked`` wins over ``expired``), so expiry needs no job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from tollway.edge import errors

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

STATUS = (
    "CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked'"
    " WHEN k.expires_at <= now() THEN 'expired' ELSE 'active' END"
)
INSERT_ACCOUNT = """
INSERT INTO edge.accounts (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING
RETURNING id, name, created_at
"""
INSERT_PROJECT = """
INSERT INTO edge.projects (id, account_id, name) VALUES ($1, $2, $3)
ON CONFLICT (account_id, name) DO NOTHING RETURNING id
"""
INSERT_KEY = """
INSERT INTO edge.api_keys (id, key_hash, prefix, account_id, project_id, name, allowed_models,
                           route_types, expires_at, metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
SELECT_ACCOUNT = "SELECT id, name, created_at FROM edge.accounts WHERE id = $1"
LIST_ACCOUNTS = f"""
SELECT a.id, a.name, a.created_at,
       (SELECT count(*) FROM edge.projects p WHERE p.account_id = a.id) AS projects,
       (SELECT count(*) FROM edge.api_keys k WHERE k.account_id = a.id) AS keys,
       (SELECT count(*) FROM edge.api_keys k WHERE k.account_id = a.id
            AND {STATUS} = 'active') AS active_keys
FROM edge.accounts a
WHERE ($1::timestamptz IS NULL OR (a.created_at, a.id) < ($1, $2::text))
ORDER BY a.created_at DESC, a.id DESC LIMIT $3
"""  # noqa: S608 - STATUS is a constant
# Projects with their keys counted by status; one account's, or one project.
SELECT_PROJECTS = f"""
SELECT p.id, p.account_id, p.name, p.created_at,
       count(k.id) AS keys,
       count(k.id) FILTER (WHERE {STATUS} = 'active') AS active,
       count(k.id) FILTER (WHERE {STATUS} = 'revoked') AS revoked,
       count(k.id) FILTER (WHERE {STATUS} = 'expired') AS expired
FROM edge.projects p LEFT JOIN edge.api_keys k ON k.project_id = p.id
WHERE ($1::text IS NULL OR p.account_id = $1) AND ($2::text IS NULL OR p.id = $2)
GROUP BY p.id ORDER BY p.created_at, p.id
"""  # noqa: S608 - STATUS is a constant
DEFAULT_PROJECT = """
SELECT id FROM edge.projects WHERE account_id = $1 ORDER BY created_at, id LIMIT 1
"""
PROJECT_OWNER = "SELECT account_id FROM edge.projects WHERE id = $1"
KEY_COLUMNS = f"""
k.id, k.name, k.prefix, k.account_id, k.project_id, k.allowed_models, k.route_types,
k.expires_at, k.revoked_at, k.created_at, k.metadata, {STATUS} AS status
"""
SELECT_KEY = f"SELECT {KEY_COLUMNS} FROM edge.api_keys k WHERE k.id = $1"  # noqa: S608
LIST_KEYS = f"""
SELECT {KEY_COLUMNS} FROM edge.api_keys k
WHERE ($1::text IS NULL OR k.account_id = $1)
  AND ($2::text IS NULL OR k.project_id = $2)
  AND ($3::text IS NULL OR {STATUS} = $3)
  AND ($4::timestamptz IS NULL OR (k.created_at, k.id) < ($4, $5::text))
ORDER BY k.created_at DESC, k.id DESC LIMIT $6
"""  # noqa: S608 - constants only
REVOKE_KEY = """
UPDATE edge.api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL
RETURNING key_hash
"""
KNOWN_MODELS = "SELECT name FROM router.catalog_models WHERE name = ANY($1::text[])"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def key_view(row: Any) -> dict[str, Any]:
    """A key as the admin API shows it: never the secret, never its digest."""
    return {
        "id": row["id"],
        "object": "api_key",
        "name": row["name"],
        "prefix": row["prefix"],
        "account_id": row["account_id"],
        "project_id": row["project_id"],
        "allowed_models": row["allowed_models"],
        "route_types": row["route_types"],
        "metadata": orjson.loads(row["metadata"]),
        "status": row["status"],
        "expires_at": _iso(row["expires_at"]),
        "revoked_at": _iso(row["revoked_at"]),
        "created_at": _iso(row["created_at"]),
    }


def project_view(row: Any) -> dict[str, Any]:
    """A project with its keys counted by status."""
    return {
        "id": row["id"],
        "object": "project",
        "account_id": row["account_id"],
        "name": row["name"],
        "created_at": _iso(row["created_at"]),
        "keys": {s: row[s] for s in ("active", "revoked", "expired")} | {"total": row["keys"]},
    }


async def insert_account(conn: asyncpg.Connection, account_id: str, name: str) -> dict[str, Any]:
    """Open an account (409 when the id is taken)."""
    row = await conn.fetchrow(INSERT_ACCOUNT, account_id, name)
    if row is None:
        raise errors.ConflictError(
            f"Account '{account_id}' already exists.", param="id", code="account_exists"
        )
    return {"id": row["id"], "object": "account", "name": row["name"], **_created(row)}


def _created(row: Any) -> dict[str, Any]:
    return {"created_at": _iso(row["created_at"])}


async def insert_project(
    conn: asyncpg.Connection | asyncpg.Pool, project_id: str, account_id: str, name: str
) -> dict[str, Any]:
    """Add a project to a known account (404 for an unknown one, 409 for a taken name)."""
    await require_account(conn, account_id)
    if await conn.fetchval(INSERT_PROJECT, project_id, account_id, name) is None:
        raise errors.ConflictError(
            f"Account '{account_id}' already has a project named '{name}'.",
            param="name",
            code="project_exists",
        )
    return await project(conn, project_id)


async def require_account(conn: asyncpg.Connection | asyncpg.Pool, account_id: str) -> Any:
    """The account's row, or 404 naming ``account_id``."""
    row = await conn.fetchrow(SELECT_ACCOUNT, account_id)
    if row is None:
        raise errors.NotFoundError(
            f"No account '{account_id}'.", param="account_id", code="account_not_found"
        )
    return row


async def key_project(conn: asyncpg.Connection, account_id: str, project_id: str | None) -> str:
    """The project a new key belongs to: the given one of this account, else its first."""
    await require_account(conn, account_id)
    if project_id is None:
        found: str = await conn.fetchval(DEFAULT_PROJECT, account_id)
        return found
    if await conn.fetchval(PROJECT_OWNER, project_id) != account_id:
        raise errors.NotFoundError(
            f"Account '{account_id}' has no project '{project_id}'.",
            param="project_id",
            code="project_not_found",
        )
    return project_id


async def require_models(conn: asyncpg.Connection, names: list[str] | None) -> None:
    """400 naming the first entry of ``allowed_models`` that is not a catalog model."""
    if names is None:
        return
    known = {r["name"] for r in await conn.fetch(KNOWN_MODELS, names)}
    for i, name in enumerate(names):
        if name not in known:
            raise errors.InvalidRequestError(
                f"'{name}' is not a catalog model.",
                param=f"allowed_models[{i}]",
                code="model_not_found",
            )


async def insert_key(conn: asyncpg.Connection, key_id: str, values: dict[str, Any]) -> None:
    """Store a key's digest and settings (``values`` follows ``INSERT_KEY``'s column order)."""
    await conn.execute(
        INSERT_KEY,
        key_id,
        values["key_hash"],
        values["prefix"],
        values["account_id"],
        values["project_id"],
        values["name"],
        values["allowed_models"],
        values["route_types"],
        values["expires_at"],
        orjson.dumps(values["metadata"]).decode(),
    )


async def key(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> dict[str, Any]:
    """A key's view, or 404."""
    row = await conn.fetchrow(SELECT_KEY, key_id)
    if row is None:
        raise errors.NotFoundError(f"No API key '{key_id}'.", param="key_id", code="key_not_found")
    return key_view(row)


async def revoke(conn: asyncpg.Connection, key_id: str) -> bytes | None:
    """Revoke a live key; its digest (to drop from caches), or None when already revoked."""
    digest: bytes | None = await conn.fetchval(REVOKE_KEY, key_id)
    return digest


async def project(conn: asyncpg.Connection | asyncpg.Pool, project_id: str) -> dict[str, Any]:
    """A project with its key counts, or 404."""
    rows = await conn.fetch(SELECT_PROJECTS, None, project_id)
    if not rows:
        raise errors.NotFoundError(
            f"No project '{project_id}'.", param="project_id", code="project_not_found"
        )
    return project_view(rows[0])


async def projects(pool: asyncpg.Pool, account_id: str) -> list[dict[str, Any]]:
    """An account's projects, oldest first, with key counts."""
    return [project_view(r) for r in await pool.fetch(SELECT_PROJECTS, account_id, None)]


async def account(pool: asyncpg.Pool, account_id: str) -> dict[str, Any]:
    """An account with its projects and its keys counted by status, or 404."""
    row = await require_account(pool, account_id)
    owned = await projects(pool, account_id)
    counts = {s: sum(p["keys"][s] for p in owned) for s in ("active", "revoked", "expired")}
    return {
        "id": row["id"],
        "object": "account",
        "name": row["name"],
        **_created(row),
        "projects": owned,
        "keys": counts | {"total": sum(p["keys"]["total"] for p in owned)},
    }


async def accounts(
    pool: asyncpg.Pool, after: tuple[datetime, str] | None, limit: int
) -> list[tuple[datetime, str, dict[str, Any]]]:
    """A page of accounts, newest first, each with its cursor position."""
    after_at, after_id = after or (None, None)
    rows = await pool.fetch(LIST_ACCOUNTS, after_at, after_id, limit)
    return [
        (
            r["created_at"],
            r["id"],
            {
                "id": r["id"],
                "object": "account",
                "name": r["name"],
                **_created(r),
                "projects": r["projects"],
                "keys": {"total": r["keys"], "active": r["active_keys"]},
            },
        )
        for r in rows
    ]


async def keys(  # noqa: PLR0913 - one parameter per filter
    pool: asyncpg.Pool,
    *,
    account_id: str | None,
    project_id: str | None,
    status: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[tuple[datetime, str, dict[str, Any]]]:
    """A page of keys, newest first, each with its cursor position."""
    after_at, after_id = after or (None, None)
    rows = await pool.fetch(LIST_KEYS, account_id, project_id, status, after_at, after_id, limit)
    return [(r["created_at"], r["id"], key_view(r)) for r in rows]
