"""The receipt: one JSON document per request, written by the ledger, served by the edge.

This is its contract (schema version :data:`RECEIPT_VERSION`). The ledger opens every receipt
through :class:`Receipt` and stores ``Receipt.model_dump(mode="json")``; a reader validates a
stored body with :meth:`Receipt.model_validate`. Fields the ledger adds as the request's story
unfolds (attempts, the settlement, refunds, upstream losses, token classes...) are kept as
extra fields, so a body written by any earlier ledger still validates. A re-rated request keeps
its original ``charged_micro`` and adds ``rerates`` (one entry per re-rating: event and
correction ids, the price per 1M of each token class, charged before, re-rated, the difference)
and ``rerated_charge_micro``, what it costs the tenant now. Only add fields with
defaults; a breaking change is a new version.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

RECEIPT_VERSION = 1


class ReceiptPlanStep(BaseModel):
    """One candidate of the request's route plan, as the receipt shows it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    channel: str
    brand: str
    route_type: str
    bucket: str
    upstream_model: str
    tier: int = 0


class ReceiptHold(BaseModel):
    """The primary hold: what it reserved and how it ended."""

    model_config = ConfigDict(frozen=True, extra="allow")

    hold_id: str
    held_micro: int
    status: str


class Receipt(BaseModel):
    """A request's receipt (the fields every receipt has, from the moment the ledger opens it)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    request_id: str
    created_at: str
    account_id: str
    key_id: str
    project_id: str
    task_id: str | None = None
    user: str | None = None
    protocol: str = "openai"
    endpoint: str = "chat"
    stream: bool = False
    requested_model: str
    plan: list[ReceiptPlanStep]
    status: str = "received"
    bucket: str
    unit: str | None = None
    hold: ReceiptHold | None = None
    attempts: list[dict[str, Any]] = []
    retries: int = 0
    fallback: bool = False
    served_by: str | None = None
    usage: dict[str, Any] | None = None
    usage_estimated: bool = False
    charged_micro: int = 0
    cost_micro: int = 0
    balance_after_micro: int | None = None
    limit: str | None = None
    final_status: int | None = None
    error: str | None = None
