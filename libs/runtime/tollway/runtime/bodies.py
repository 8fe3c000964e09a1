"""Request bodies off the forever-retained topics: crypto-shredding with epoch data keys.

``gw.requests`` and ``gw.authorized`` are kept forever so the ledger can be replayed; the prompt
inside a request must not be. The edge seals each body (AES-256-GCM, associated data: the
request id, so a sealed body cannot be moved onto another request) under the data key of the
current epoch: one random key per ``epoch_seconds``, shared by every edge through the
``bodykeys.keys`` table. The router opens it with the key id the event carries. A sweeper
deletes each key once every request of its epoch is past delivery (the epoch's end plus the
retention, an operator setting whose default is the request deadline plus a margin); from then on
the bodies it sealed are noise on the topics, while the billing facts beside them (who, which
model, how many tokens, what price) stay in clear and replay exactly as before.

Both sides cache keys in memory: the hot path reads or writes the table once per epoch per
process, never per request.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tollway.events.gateway import SealedBody

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger(__name__)

NONCE_BYTES = 12
INSERT_KEY = """
INSERT INTO bodykeys.keys (id, key, delete_after) VALUES ($1, $2, $3)
ON CONFLICT (id) DO NOTHING
"""
# A key past its deletion time is gone even before the sweeper removes the row.
SELECT_KEY = "SELECT id, key, delete_after FROM bodykeys.keys WHERE id = $1 AND delete_after > $2"
DELETE_EXPIRED = "DELETE FROM bodykeys.keys WHERE delete_after <= $1"


class BodyUnavailableError(LookupError):
    """The key that sealed a body is deleted (retention passed) or does not open it."""


@dataclass(frozen=True, slots=True)
class DataKey:
    """One epoch's key and the instant it is deleted."""

    id: str
    key: bytes
    delete_after: datetime
    # Built once per key: the hot path seals and opens with it, never re-deriving the schedule.
    aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Prepare the cipher."""
        object.__setattr__(self, "aead", AESGCM(self.key))


def seal_body(body: dict[str, Any], key: DataKey, request_id: str) -> SealedBody:
    """``body`` encrypted under ``key``, bound to ``request_id``."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = key.aead.encrypt(nonce, orjson.dumps(body), request_id.encode())
    return SealedBody(key_id=key.id, data=base64.b64encode(nonce + sealed).decode())


def open_body(sealed: SealedBody, key: DataKey, request_id: str) -> dict[str, Any]:
    """The body in clear; :class:`BodyUnavailableError` when ``key`` does not open it."""
    raw = base64.b64decode(sealed.data)
    try:
        plain = key.aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], request_id.encode())
    except InvalidTag:
        raise BodyUnavailableError(f"key {key.id} does not open request {request_id}") from None
    body: dict[str, Any] = orjson.loads(plain)
    return body


class BodyKeys:
    """The epoch keys: the current one for sealing (edge), any live one by id (router)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        epoch_seconds: float = 600.0,
        retention_seconds: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Keys in ``pool``: a new one every ``epoch_seconds``, deleted after its epoch ends.

        ``retention_seconds`` is how long past its epoch's end a key (and its bodies) lives.
        """
        self._pool = pool
        self._epoch = epoch_seconds
        self._retention = retention_seconds
        self._clock = clock
        self._current: tuple[int, DataKey] | None = None
        self._known: dict[str, DataKey] = {}
        self._lock = asyncio.Lock()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def current(self) -> DataKey:
        """The key of the current epoch, made by whichever edge needs it first."""
        epoch = int(self._clock() // self._epoch)
        cached = self._current
        if cached is not None and cached[0] == epoch:
            return cached[1]
        async with self._lock:
            if self._current is None or self._current[0] != epoch:
                key_id = f"{int(self._epoch)}s-{epoch}"
                ends = datetime.fromtimestamp((epoch + 1) * self._epoch + self._retention, UTC)
                async with self._pool.acquire() as conn:
                    await conn.execute(INSERT_KEY, key_id, secrets.token_bytes(32), ends)
                    row = await conn.fetchrow(SELECT_KEY, key_id, self._now())
                if row is None:
                    raise BodyUnavailableError(f"key {key_id} was deleted as it was made")
                self._current = (epoch, _key(row))
            return self._current[1]

    async def find(self, key_id: str) -> DataKey | None:
        """The live key ``key_id`` (cached), or None once it is deleted."""
        now = self._now()
        key = self._known.get(key_id)
        if key is not None and key.delete_after > now:
            return key
        # Forget what is past its time, in memory as in the table.
        self._known = {k: v for k, v in self._known.items() if v.delete_after > now}
        row = await self._pool.fetchrow(SELECT_KEY, key_id, now)
        if row is None:
            return None
        key = self._known[key_id] = _key(row)
        return key

    async def open(self, sealed: SealedBody, request_id: str) -> dict[str, Any]:
        """Open a sealed body; :class:`BodyUnavailableError` once its key is deleted."""
        key = await self.find(sealed.key_id)
        if key is None:
            raise BodyUnavailableError(f"key {sealed.key_id} is deleted (retention passed)")
        return open_body(sealed, key, request_id)

    async def sweep(self) -> int:
        """Delete every key past its time; return how many."""
        result = await self._pool.execute(DELETE_EXPIRED, self._now())
        deleted = int(result.split()[-1])
        if deleted:
            log.info("body_keys_deleted", count=deleted)
        return deleted

    async def run_sweeper(self, every_seconds: float) -> None:
        """Sweep forever (until cancelled); a failed sweep is retried on the next turn."""
        while True:
            try:
                await self.sweep()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("body_key_sweep_failed", error=type(exc).__name__)
            await asyncio.sleep(every_seconds)


def _key(row: Any) -> DataKey:
    return DataKey(id=row["id"], key=bytes(row["key"]), delete_after=row["delete_after"])
