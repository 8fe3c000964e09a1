"""Corrections through ``/admin/v1/ledger`` (bearer admin token): reversals and adjustments.

Like top-ups, nothing is written here: the edge publishes the command on gw.requests (keyed by
account) and the ledger applies it once per idempotency key, or journals why it refused
(``ledger.correction_refused``: more than the original left, unknown original, key reused).
Each request is audited once the event log confirmed it.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.di import Provide
from pydantic import BaseModel, Field

from tollway.edge import amounts, audit
from tollway.edge.admin_auth import require_admin
from tollway.edge.publish import publish_request
from tollway.events.envelope import Envelope, make
from tollway.events.gateway import AdjustmentRequested, ReversalRequested

RETRY = "Retry with the same idempotency key: it is applied at most once."


class NewReversal(BaseModel):
    """Refund (part of) a charge or a top-up; ``amount`` is a decimal string of units."""

    account_id: str = Field(min_length=1)
    original_event_id: str = Field(min_length=1)
    amount: str
    reason: str = Field(min_length=1, max_length=500)
    idempotency_key: str = Field(min_length=1, max_length=200)


class NewAdjustment(BaseModel):
    """Correct a bucket by a signed decimal ``amount`` (``"-1.5"`` debits it)."""

    account_id: str = Field(min_length=1)
    bucket: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    unit: str = Field(min_length=1, max_length=16)
    amount: str
    reason: str = Field(min_length=1, max_length=500)
    idempotency_key: str = Field(min_length=1, max_length=200)


def _micro(amount: str, *, positive: bool) -> int:
    return amounts.amount(amount, field="amount", sign="positive" if positive else "non_zero")


async def _publish(
    request: Request[Any, Any, Any],
    action: str,
    target: str,
    account_id: str,
    env: Envelope[AdjustmentRequested] | Envelope[ReversalRequested],
) -> dict[str, Any]:
    answer = {"event_id": env.id, "amount_micro": env.payload.amount_micro, "status": "accepted"}

    async def send() -> None:
        await publish_request(request.app.state.producer, account_id, env, RETRY)

    after = env.payload.model_dump(mode="json") | answer
    change = audit.Change(action, target, account_id, after=after)
    pool = request.app.state.pool
    audit_id = await audit.published(pool, audit.actor_of(request), change, send)
    return answer | {"audit_id": audit_id}


class LedgerCorrectionsController(Controller):
    """Operator corrections; every endpoint needs the admin token."""

    path = "/admin/v1/ledger"
    dependencies = {"_admin": Provide(require_admin, sync_to_thread=False)}  # noqa: RUF012

    @post("/reversals", status_code=202)
    async def reversals(
        self, request: Request[Any, Any, Any], data: NewReversal, _admin: None
    ) -> dict[str, Any]:
        """Ask the ledger to reverse (part of) an entry; follow ``event_id`` in the journal."""
        micro = _micro(data.amount, positive=True)
        env = make(
            ReversalRequested(
                account_id=data.account_id,
                original_event_id=data.original_event_id,
                amount_micro=micro,
                reason=data.reason,
                idempotency_key=data.idempotency_key,
            )
        )
        target = data.original_event_id
        return await _publish(request, "ledger.reversal", target, data.account_id, env)

    @post("/adjustments", status_code=202)
    async def adjustments(
        self, request: Request[Any, Any, Any], data: NewAdjustment, _admin: None
    ) -> dict[str, Any]:
        """Ask the ledger to adjust a bucket, with the reason on the journal entry."""
        micro = _micro(data.amount, positive=False)
        env = make(
            AdjustmentRequested(
                account_id=data.account_id,
                bucket=data.bucket,
                unit=data.unit,
                amount_micro=micro,
                reason=data.reason,
                idempotency_key=data.idempotency_key,
            )
        )
        target = f"{data.account_id}/{data.bucket}"
        return await _publish(request, "ledger.adjustment", target, data.account_id, env)
