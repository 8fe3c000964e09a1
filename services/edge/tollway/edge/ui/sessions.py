"""Dashboard sessions: who is signed in, behind an HttpOnly cookie that holds only a random id.

The cookie carries 256 random bits; ``edge.ui_sessions`` holds their SHA-256 with the kind of
session (``user``: the id of the API key used to sign in, and its account; ``operator``: the
actor name audited for their changes). Any edge instance serves any session. A user's session
is only as good as its key: every page re-reads the key, so revoking or expiring it signs the
session out.

One exception keeps the key itself: research runs call the researcher with the user's own key
(it calls the gateway with it), so the instance that signed the user in keeps the key in memory
(never on disk, in the database, the cookie or a log) until logout or expiry. Another instance,
or the same one after a restart, asks for the key again on the research page.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tollway.edge.store import KeyInfo

if TYPE_CHECKING:
    import asyncpg

COOKIE = "tollway_session"
COOKIE_PATH = "/ui"
INSERT = """
INSERT INTO edge.ui_sessions (id_hash, kind, actor, account_id, key_id, expires_at)
VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
"""
# Sessions ended or expired more than a day ago are of no use to anyone: dropped at each login.
PRUNE = "DELETE FROM edge.ui_sessions WHERE expires_at < now() - interval '1 day'"
SELECT = """
SELECT s.kind, s.actor, s.account_id, extract(epoch FROM s.expires_at) AS expires,
       k.id AS key_id, k.project_id, k.allowed_models, k.route_types, k.expires_at, k.revoked_at
FROM edge.ui_sessions s LEFT JOIN edge.api_keys k ON k.id = s.key_id
WHERE s.id_hash = $1 AND s.ended_at IS NULL AND s.expires_at > now()
"""
END = "UPDATE edge.ui_sessions SET ended_at = now() WHERE id_hash = $1 AND ended_at IS NULL"
MAX_KEPT_KEYS = 10_000


def digest(token: str) -> bytes:
    """The stored form of a session id."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: a user's (with the key they signed in with) or an operator's."""

    digest: bytes
    kind: Literal["user", "operator"]
    actor: str
    account_id: str | None
    key: KeyInfo | None

    @property
    def user_key(self) -> KeyInfo:
        """The signed-in key of a user session."""
        if self.key is None:
            raise TypeError("an operator session has no key")
        return self.key


class SessionStore:
    """Sessions in Postgres; the research key vault in this process's memory."""

    def __init__(self, pool: asyncpg.Pool, hours: float) -> None:
        """Keep sessions in ``pool``'s database for ``hours``."""
        self._pool = pool
        self._seconds = hours * 3600
        self._keys: dict[bytes, tuple[float, str]] = {}

    @property
    def max_age(self) -> int:
        """The cookie's lifetime in seconds (the session's)."""
        return int(self._seconds)

    async def open_user(self, key: KeyInfo, secret: str) -> str:
        """A new user session for ``key``; the secret is kept in memory for research only."""
        token = await self._open("user", f"user:{key.id}", key.account_id, key.id)
        self.keep_key(digest(token), secret)
        return token

    async def open_operator(self, actor: str) -> str:
        """A new operator session, audited as ``actor``."""
        return await self._open("operator", actor, None, None)

    async def _open(self, kind: str, actor: str, account_id: str | None, key_id: str | None) -> str:
        token = secrets.token_urlsafe(32)
        async with self._pool.acquire() as conn:
            await conn.execute(PRUNE)
            await conn.execute(
                INSERT, digest(token), kind, actor, account_id, key_id, self._seconds
            )
        return token

    async def get(self, token: str | None) -> Session | None:
        """The live session behind a cookie value, or None."""
        if not token or len(token) > 100:
            return None
        hashed = digest(token)
        row = await self._pool.fetchrow(SELECT, hashed)
        if row is None:
            self._keys.pop(hashed, None)
            return None
        key = None if row["key_id"] is None else KeyInfo.from_row(row, row["key_id"])
        return Session(hashed, row["kind"], row["actor"], row["account_id"], key)

    async def end(self, session: Session) -> None:
        """Sign out: the session id is refused from now on, on every instance."""
        self._keys.pop(session.digest, None)
        await self._pool.execute(END, session.digest)

    def keep_key(self, hashed: bytes, secret: str) -> None:
        """Remember the user's key for this session's research calls (memory only)."""
        now = time.monotonic()
        if len(self._keys) >= MAX_KEPT_KEYS:
            self._keys = {h: v for h, v in self._keys.items() if v[0] > now}
        self._keys[hashed] = (now + self._seconds, secret)

    def kept_key(self, session: Session) -> str | None:
        """The session's key if this instance still holds it."""
        kept = self._keys.get(session.digest)
        if kept is None or kept[0] <= time.monotonic():
            return None
        return kept[1]
