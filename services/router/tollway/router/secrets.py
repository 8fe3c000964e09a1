"""Channel secrets at rest in ``router.channels``: sealed, checked at start, re-sealed on rotation.

The edge seals a secret before it writes the row (``tollway.runtime.sealing``); the router
opens it when it loads its channel cache. ``reseal`` re-encrypts every stored secret under the
first key of the ring (values in clear from before sealing existed included), so an operator
rotates by putting a new key first, running ``tollway secrets rotate``, then dropping the old key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from tollway.runtime.sealing import ENV, KeyRing, SecretKeyError, key_id_of

if TYPE_CHECKING:
    import asyncpg

log = structlog.get_logger(__name__)

SELECT_SECRETS = "SELECT id, secret FROM router.channels ORDER BY id"
# Compare-and-set: a secret an operator changed meanwhile is left to its new value.
RESEAL = "UPDATE router.channels SET secret = $3 WHERE id = $1 AND secret = $2"


class SecretsNotConfiguredError(RuntimeError):
    """Channel secrets are stored but this process cannot open them; it must not start."""


def context(channel_id: str) -> str:
    """The associated data a channel's secret is sealed with: it opens on that row only."""
    return f"channel:{channel_id}"


def open_secret(ring: KeyRing, channel_id: str, stored: str) -> str:
    """The secret in clear (a value stored in clear before sealing existed passes as is)."""
    if key_id_of(stored) is None:
        return stored
    return ring.open(stored, context(channel_id))


async def check_readable(conn: asyncpg.Connection, ring: KeyRing | None) -> None:
    """Refuse to run when stored secrets cannot be opened: no key configured, or a key missing."""
    rows = await conn.fetch(SELECT_SECRETS)
    if ring is None:
        if rows:
            raise SecretsNotConfiguredError(
                f"{len(rows)} channel secret(s) are stored but {ENV} is not set: set it to the"
                " key list they were sealed with (key_id:base64-key, first one seals)."
            )
        return
    for row in rows:
        try:
            open_secret(ring, row["id"], row["secret"])
        except SecretKeyError as exc:
            raise SecretsNotConfiguredError(
                f"the secret of channel {row['id']!r} cannot be opened: {exc}"
            ) from None


async def reseal(conn: asyncpg.Connection, ring: KeyRing, *, clear_only: bool = False) -> int:
    """Re-encrypt every secret not sealed under the ring's first key; return how many.

    Each row is opened with whichever listed key sealed it and sealed again under the first;
    a value no listed key opens stops the rotation before anything is written. ``clear_only``
    seals the values still in clear and leaves sealed ones alone (the router does it at start).
    """
    async with conn.transaction():
        rows = await conn.fetch(SELECT_SECRETS + " FOR UPDATE")
        stale = [
            r
            for r in rows
            if ring.needs_reseal(r["secret"]) and not (clear_only and key_id_of(r["secret"]))
        ]
        changed = [
            (
                r["id"],
                r["secret"],
                ring.seal(open_secret(ring, r["id"], r["secret"]), context(r["id"])),
            )
            for r in stale
        ]
        if changed:
            await conn.executemany(RESEAL, changed)
    if changed:
        log.info("channel_secrets_resealed", count=len(changed), key_id=ring.current_id)
    return len(changed)
