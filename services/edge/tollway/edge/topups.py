"""Top-ups under ``/admin/v1`` (admin token): refused at once when the edge can tell, else 202.

    POST /topups                  credit a bucket (idempotent by the account's key)
    GET  /topups/{event_id}       pending / applied / refused (with the ledger's reason)

Everything the edge can know is refused synchronously in the client's error shape: an amount
that is not an ASCII decimal in range (400 ``invalid_amount``), an unknown account (404), a
bucket name no channel settles in and the account does not hold (400 ``unknown_bucket``), a
unit the bucket does not hold (400 ``unit_mismatch``), a balance or source the credit would take
out of range (400, ``tollway.events.pricing`` MAX_*), an idempotency key of the account reused
with another body (409 ``idempotency_key_reused`` with the ``original`` request). The edge keeps
its own record of keys (``edge.topup_requests``), written before publishing: the same key and
body answers the original 202 again, re-sending the same event if the log never confirmed it.

The rest only the ledger can decide (top-ups ahead in the log may change a balance): the 202
carries ``status_url``, which reports ``pending``, ``applied`` or ``refused`` with the ledger's
``code`` and ``reason`` (its journal, ``ledger.topped_up`` / ``ledger.topup_refused``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson
from litestar import Controller, Request, get, post
from litestar.di import Provide
from pydantic import BaseModel, Field

from tollway.edge import amounts, audit, errors, tenants
from tollway.edge.admin_auth import require_admin
from tollway.edge.listing import refuse_nul
from tollway.edge.publish import publish_request
from tollway.events.envelope import Envelope, decode, encode, make
from tollway.events.gateway import TopUpRequested
from tollway.events.pricing import BUCKET_PATTERN, UNIT_PATTERN, format_micro
from tollway.ledger import domain, finance_store

if TYPE_CHECKING:
    import asyncpg

TEXT = r"^[^\x00]*$"  # Postgres text cannot hold NUL
RETRY = "Retry with the same idempotency key: it is applied at most once."
CHANNEL_BUCKETS = "SELECT DISTINCT bucket FROM router.channels"
INSERT = """
INSERT INTO edge.topup_requests
    (account_id, idempotency_key, event_id, fingerprint, request, envelope)
VALUES ($1, $2, $3, $4, $5::jsonb, $6)
ON CONFLICT (account_id, idempotency_key) DO NOTHING
RETURNING event_id
"""
SELECT_BY_KEY = """
SELECT event_id, fingerprint, request, envelope, published_at, audit_id
FROM edge.topup_requests WHERE account_id = $1 AND idempotency_key = $2
"""
SELECT_BY_EVENT = "SELECT request FROM edge.topup_requests WHERE event_id = $1"
MARK_PUBLISHED = """
UPDATE edge.topup_requests SET published_at = now(), audit_id = $2
WHERE event_id = $1 AND published_at IS NULL
"""


class NewTopUp(BaseModel):
    """Credit a bucket; ``amount`` is a decimal string of units (``"25.50"``)."""

    account_id: str = Field(min_length=1, max_length=200, pattern=TEXT)
    bucket: str = Field(pattern=BUCKET_PATTERN)
    unit: str = Field(pattern=UNIT_PATTERN)
    amount: str = Field(max_length=64)
    idempotency_key: str = Field(min_length=1, max_length=200, pattern=TEXT)
    reason: str = Field(default="", max_length=500, pattern=TEXT)


def _pool(request: Request[Any, Any, Any]) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def status_url(event_id: str) -> str:
    """Where a top-up's outcome is reported."""
    return f"/admin/v1/topups/{event_id}"


async def _refuse_known(pool: asyncpg.Pool, data: NewTopUp, micro: int) -> None:
    """400/404 for what the edge can tell now, from the ledger's read model of the account."""
    await tenants.require_account(pool, data.account_id)
    async with pool.acquire() as conn:
        credit = await finance_store.credit_state(
            conn, data.account_id, data.bucket, data.unit, micro
        )
        known = {r["bucket"] for r in await conn.fetch(CHANNEL_BUCKETS)}
    if credit.bucket_unit is None and data.bucket not in known:
        raise errors.InvalidRequestError(
            f"No channel settles in bucket '{data.bucket}' and account '{data.account_id}' does"
            f" not hold it; buckets: {', '.join(sorted(known))}.",
            param="bucket",
            code="unknown_bucket",
        )
    refusal = domain.refuse_credit(credit)
    if refusal is not None:
        param = "unit" if refusal.code == "unit_mismatch" else "amount"
        raise errors.InvalidRequestError(
            f"Top-up refused: {refusal.reason}.", param=param, code=refusal.code
        )


def _request_view(data: NewTopUp, micro: int) -> dict[str, Any]:
    return {
        "account_id": data.account_id,
        "bucket": data.bucket,
        "unit": data.unit,
        "amount": format_micro(micro),
        "amount_micro": micro,
        "idempotency_key": data.idempotency_key,
        "reason": data.reason,
    }


def _fingerprint(view: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(view, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _answer(event_id: str, micro: int, audit_id: int | None) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "amount_micro": micro,
        "status": "accepted",
        "status_url": status_url(event_id),
        "audit_id": audit_id,
    }


async def request_topup(
    request: Request[Any, Any, Any], data: NewTopUp, actor: str | None = None
) -> dict[str, Any]:
    """Refuse what the edge can tell, record the key, publish for the ledger; 202 to follow."""
    micro = amounts.amount(data.amount, field="amount")
    pool = _pool(request)
    view = _request_view(data, micro)
    # A key already used decides first: the same body gets the original answer even when a
    # check below would now fail (the first top-up itself may have filled the bucket).
    known = await _replayed(request, data, view, actor)
    if known is not None:
        return known
    await _refuse_known(pool, data, micro)
    env = make(
        TopUpRequested(
            account_id=data.account_id,
            bucket=data.bucket,
            unit=data.unit,
            amount_micro=micro,
            idempotency_key=data.idempotency_key,
            reason=data.reason,
        )
    )
    row = (data.account_id, data.idempotency_key, env.id, _fingerprint(view), orjson.dumps(view))
    if await pool.fetchval(INSERT, *row[:4], row[4].decode(), encode(env)) is None:
        raced = await _replayed(request, data, view, actor)  # the same key, concurrently
        if raced is not None:
            return raced
    return await _publish(request, data, env, view, actor)


async def _replayed(
    request: Request[Any, Any, Any], data: NewTopUp, view: dict[str, Any], actor: str | None
) -> dict[str, Any] | None:
    """The answer to a key already recorded (409 for another body), or None for a new key."""
    row = await _pool(request).fetchrow(SELECT_BY_KEY, data.account_id, data.idempotency_key)
    if row is None:
        return None
    if row["fingerprint"] != _fingerprint(view):
        raise errors.ConflictError(
            f"Idempotency key '{data.idempotency_key}' was used for another top-up of this"
            " account; 'original' is that request. Use a new key for a new top-up.",
            param="idempotency_key",
            code="idempotency_key_reused",
            details={"original": orjson.loads(row["request"])},
        )
    if row["published_at"] is not None:
        return _answer(row["event_id"], view["amount_micro"], row["audit_id"])
    # Recorded, never confirmed by the log: send the very same event again (applied once).
    return await _publish(request, data, decode(row["envelope"]), view, actor)


async def _publish(
    request: Request[Any, Any, Any],
    data: NewTopUp,
    env: Envelope[Any],
    view: dict[str, Any],
    actor: str | None,
) -> dict[str, Any]:
    async def send() -> None:
        await publish_request(request.app.state.producer, data.account_id, env, RETRY)

    change = audit.Change(
        "topup.request",
        f"{data.account_id}/{data.bucket}",
        data.account_id,
        after=view | {"event_id": env.id, "status": "accepted"},
    )
    who = actor or audit.actor_of(request)
    audit_id = await audit.published(_pool(request), who, change, send)
    await _pool(request).execute(MARK_PUBLISHED, env.id, audit_id)
    return _answer(env.id, view["amount_micro"], audit_id)


async def topup_status(pool: asyncpg.Pool, event_id: str) -> dict[str, Any]:
    """The request and what the ledger made of it: pending, applied or refused (and why)."""
    refuse_nul(event_id=event_id)
    raw = await pool.fetchval(SELECT_BY_EVENT, event_id)
    if raw is None:
        raise errors.NotFoundError(
            f"No top-up '{event_id}'.", param="event_id", code="topup_not_found"
        )
    async with pool.acquire() as conn:
        outcome = await finance_store.topup_outcome(conn, event_id)
    answer: dict[str, Any] = {"event_id": event_id, "request": orjson.loads(raw)}
    if outcome is None:
        return answer | {"status": "pending"}
    payload = outcome["payload"]
    if outcome["type"] == "ledger.topped_up":
        return answer | {"status": "applied"}
    return answer | {
        "status": "refused",
        "code": payload.get("code") or None,
        "reason": payload.get("reason"),
    }


class TopUpController(Controller):
    """Request a top-up and follow it; every endpoint needs the admin token."""

    path = "/admin/v1/topups"
    tags = ["tenancy"]  # noqa: RUF012
    dependencies = {"_admin": Provide(require_admin, sync_to_thread=False)}  # noqa: RUF012

    @post("/", status_code=202)
    async def create(
        self, request: Request[Any, Any, Any], data: NewTopUp, _admin: None
    ) -> dict[str, Any]:
        """Request a top-up; the ledger applies it once per (account, idempotency key)."""
        return await request_topup(request, data)

    @get("/{event_id:str}")
    async def status(
        self, request: Request[Any, Any, Any], event_id: str, _admin: None
    ) -> dict[str, Any]:
        """``pending``, ``applied`` or ``refused`` (with ``code`` and ``reason``)."""
        return await topup_status(_pool(request), event_id)
