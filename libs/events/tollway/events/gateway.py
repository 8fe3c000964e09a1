"""Events of a request's life.

Received at the edge, authorized or rejected by the ledger, attempted and finished by the
router, answered on the edge's reply topic.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tollway.events.envelope import Payload, register
from tollway.events.pricing import CostPrice, Price, Usage, cost_micro

RouteType = Literal["direct", "pool"]
Protocol = Literal["openai", "anthropic"]
Endpoint = Literal["chat", "embeddings", "messages", "responses"]


class Candidate(BaseModel):
    """One step of a route plan: which channel serves, as which upstream model, paid from where."""

    model_config = ConfigDict(frozen=True)

    channel_id: str
    channel: str
    brand: str
    route_type: RouteType
    bucket: str
    upstream_model: str
    price: Price
    tier: int = 0
    weight: int = Field(default=1, ge=1)
    # What the operator pays the upstream for this channel (operators only: never on a tenant's
    # receipt); None when the channel has no cost price.
    cost: CostPrice | None = None


class SealedBody(BaseModel):
    """A request body encrypted under an epoch data key that is deleted after delivery.

    ``data`` is base64 of the nonce and the AES-GCM ciphertext (associated data: the request
    id); ``key_id`` names the key in ``tollway.runtime.bodies``. Once the key is deleted the
    body cannot be recovered from the forever-retained topics.
    """

    model_config = ConfigDict(frozen=True)

    key_id: str
    data: str


@register
class RequestReceived(Payload):
    """The edge accepted a well-formed, authenticated request (gw.requests, key: account)."""

    TYPE = "request.received"

    request_id: str
    edge_id: str
    account_id: str
    key_id: str
    project_id: str
    task_id: str | None = None
    user: str | None = None
    protocol: Protocol = "openai"
    endpoint: Endpoint = "chat"
    catalog_model: str
    stream: bool = False
    # The client's body: sealed on the log (``sealed_body``, ``body`` empty); in clear only in
    # memory, once the router has opened it.
    body: dict[str, Any] = Field(default_factory=dict)
    plan: list[Candidate] = Field(min_length=1)
    estimated_input_tokens: int = Field(ge=0)
    max_output_tokens: int = Field(ge=0)
    deadline_at: datetime
    sealed_body: SealedBody | None = None


@register
class TopUpRequested(Payload):
    """An operator asked to credit a bucket (gw.requests, key: account); idempotent by key."""

    TYPE = "topup.requested"

    account_id: str
    bucket: str
    unit: str
    amount_micro: int = Field(gt=0)
    idempotency_key: str
    reason: str = ""


class HoldGrant(BaseModel):
    """A hold the ledger placed for one bucket of a plan."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    hold_id: str
    held_micro: int


class BucketRefusal(BaseModel):
    """A bucket of the plan the ledger would not hold for, and the limit that stopped it."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    limit: str
    message: str = ""


@register
class RequestAuthorized(Payload):
    """The ledger placed a hold; the router may call upstream (gw.authorized, key: account).

    ``hold_id``/``bucket``/``held_micro`` are the primary candidate's hold. A plan whose
    candidates pay from other buckets (a direct route backed up by a pool route) gets one more
    hold per bucket in ``extra_holds``, or a ``refused`` entry naming the limit that stopped it;
    the router only tries candidates whose bucket is held.
    """

    TYPE = "request.authorized"

    request: RequestReceived
    hold_id: str
    bucket: str
    held_micro: int
    extra_holds: list[HoldGrant] = Field(default_factory=list)
    refused: list[BucketRefusal] = Field(default_factory=list)

    def held_buckets(self) -> set[str]:
        """Buckets the router may spend from."""
        return {self.bucket, *(h.bucket for h in self.extra_holds)}

    def held_in(self, bucket: str) -> int:
        """The amount held in ``bucket`` (0 when it holds nothing)."""
        if bucket == self.bucket:
            return self.held_micro
        return next((h.held_micro for h in self.extra_holds if h.bucket == bucket), 0)

    def charge_for(self, usage: Usage, price: Price, bucket: str) -> int:
        """What settling this request will charge: the cost, capped at the bucket's hold."""
        return min(cost_micro(usage, price), self.held_in(bucket))


@register
class RequestRejected(Payload):
    """The ledger refused the request before any upstream call (to the edge's reply topic)."""

    TYPE = "request.rejected"

    request_id: str
    status: int
    code: str
    message: str
    limit: str | None = None


@register
class ReplyFinal(Payload):
    """The router's final answer for the client (to the edge's reply topic)."""

    TYPE = "reply.final"

    request_id: str
    status: int
    body: dict[str, Any]
    # The charge settling this answer takes (the served attempt's cost capped at its hold) and
    # the bucket it comes from; None when no attempt served.
    cost_micro: int | None = None
    bucket: str | None = None


class SseFrame(BaseModel):
    """One server-sent event, already in the client's protocol (``data`` is the JSON text)."""

    model_config = ConfigDict(frozen=True)

    event: str | None = None
    data: str


@register
class ReplyChunk(Payload):
    """Frames of a streamed answer, relayed to the client as they arrive (reply topic).

    ``seq`` counts from 0 per request, so the edge can tell a gap or a duplicate from order.
    """

    TYPE = "reply.chunk"

    request_id: str
    seq: int = Field(ge=0)
    frames: list[SseFrame]


@register
class ReplyStreamEnd(Payload):
    """The last frames of a streamed answer (reply topic).

    ``ok`` is False when the stream ended on an error: ``frames`` then carry the error event in
    the client's protocol, never a clean end that looks like success.
    """

    TYPE = "reply.stream_end"

    request_id: str
    seq: int = Field(ge=0)
    frames: list[SseFrame]
    ok: bool = True
    error_code: str | None = None
    cost_micro: int | None = None
    bucket: str | None = None


@register
class RequestCancelled(Payload):
    """The client went away; any router serving the request stops its upstream call (gw.cancels).

    Broadcast: every router instance reads every partition, and the one serving the request
    acts on it; the rest ignore it.
    """

    TYPE = "request.cancelled"

    request_id: str
    reason: str = "client_disconnected"


AttemptOutcome = Literal["ok", "http_error", "timeout", "connect_error", "protocol_error"]


@register
class AttemptFinished(Payload):
    """One upstream attempt ended, failed ones included (gw.usage, key: account)."""

    TYPE = "attempt.finished"

    request_id: str
    account_id: str
    attempt: int = Field(ge=1)
    candidate: Candidate
    outcome: AttemptOutcome
    status: int | None = None
    error_class: str | None = None
    latency_ms: int = Field(ge=0)
    ttft_ms: int | None = None
    usage: Usage = Usage()
    usage_estimated: bool = False
    upstream_request_id: str | None = None
    # What the upstream itself said this attempt cost (OpenRouter-style ``usage.cost``, or the
    # channel's configured JSON path), exact micro-units of ``reported_cost_currency``; None when
    # it did not say.
    reported_cost_micro: int | None = Field(default=None, ge=0)
    reported_cost_currency: str | None = None
    # The client received output from this attempt (a stream that started): it is the served
    # attempt and its tokens are charged to the tenant, even when it ended badly (a cut stream),
    # so they are never booked as the operator's upstream loss as well.
    delivered: bool = False
    # Who spent the tokens, so velocity windows need no lookup (limits service).
    key_id: str | None = None
    project_id: str | None = None
    catalog_model: str | None = None


class SkippedCandidate(BaseModel):
    """A candidate of the plan the router did not try, and why (``circuit_open``, …)."""

    model_config = ConfigDict(frozen=True)

    channel_id: str
    channel: str
    reason: str


@register
class RequestFinished(Payload):
    """The router is done with a request: which attempt (if any) produced the answer.

    Published after every ``AttemptFinished`` of the request on the same partition. It carries
    the served attempt's channel, tokens and price itself, so the charge is computed from this
    event alone and never depends on a projection having seen the attempt.
    """

    TYPE = "request.finished"

    request_id: str
    account_id: str
    hold_id: str
    served_attempt: int | None = None
    served_channel_id: str | None = None
    served_bucket: str | None = None
    usage: Usage = Usage()
    price: Price | None = None
    status: int
    attempts: int = Field(ge=0)
    usage_estimated: bool = False
    skipped: list[SkippedCandidate] = Field(default_factory=list)
    # Who asked, for which route, and how many times the plan moved to another channel.
    key_id: str | None = None
    project_id: str | None = None
    catalog_model: str | None = None
    fallbacks: int = Field(default=0, ge=0)
    stopped_by: str | None = None

    @property
    def served(self) -> bool:
        """An attempt produced the delivered answer, and it is billable."""
        return self.served_attempt is not None and self.price is not None


@register
class HoldExtensionRequested(Payload):
    """A request still running asks to keep its hold open longer (gw.usage, key: account)."""

    TYPE = "hold.extension_requested"

    request_id: str
    account_id: str
    hold_id: str
    deadline_at: datetime


@register
class ReversalRequested(Payload):
    """An operator refunds (part of) a journal entry (gw.requests, key: account); idempotent.

    The original is a charge (a settlement or a late capture: money back from the channel's
    revenue to the bucket) or a top-up (money back to the top-up source). Reversals of one
    original can never add up to more than it moved.
    """

    TYPE = "reversal.requested"

    account_id: str
    original_event_id: str
    amount_micro: int = Field(gt=0)
    reason: str = Field(min_length=1)
    idempotency_key: str


@register
class AdjustmentRequested(Payload):
    """An operator corrects a bucket by a signed amount, with a reason (gw.requests); idempotent."""

    TYPE = "adjustment.requested"

    account_id: str
    bucket: str
    unit: str
    amount_micro: int
    reason: str = Field(min_length=1)
    idempotency_key: str


RerateSide = Literal["sell", "cost"]


@register
class RerateRequested(Payload):
    """An operator re-rates one account's past charges on a channel (gw.requests, key: account).

    ``side`` ``"sell"`` corrects what tenants were charged: every charge (a settlement or a late
    capture) of ``account_id`` in ``bucket`` earned by ``channel_id`` whose settlement time (the
    journal's ``occurred_at``) is in ``[period_from, period_to)`` is re-rated at ``prices``, the
    ledger choosing them from its own projections at this command's place in the log, so a
    replay chooses the same. The cost side travels as :class:`CostRerateRequested`; a
    ``"cost"`` here is refused by the ledger (``not_supported``). One ``correction_id`` is
    applied at most once per account; ``allow_negative`` lets a correction take the bucket's
    available balance below zero (otherwise the account is refused, ``balance_below_owed``).
    """

    TYPE = "rerate.requested"

    account_id: str
    correction_id: str = Field(min_length=1)
    side: RerateSide = "sell"
    channel_id: str
    bucket: str
    period_from: datetime
    period_to: datetime
    prices: Price
    reason: str = Field(min_length=1)
    allow_negative: bool = False
    actor: str = ""


@register
class CostRerateRequested(Payload):
    """An operator corrects a channel's upstream cost price for a past period, for one account.

    gw.requests, key: ``account_id``, the tenant whose requests the attempts served: each
    attempt's cost is booked on the tenant's partition (``ledger.upstream_cost_booked``), so
    one ledger consumer decides on it. Every booked attempt cost of ``channel_id`` whose attempt
    time (the booking's ``occurred_at``) is in ``[period_from, period_to)`` is re-rated at
    ``cost``: the attempt's tokens at its class prices, rounded up once, plus ``per_request``;
    a compensating entry moves the difference between the channel's operator accounts (never a
    tenant's). ``cost.currency`` must be the bookings' currency: a re-rating corrects amounts,
    not the currency. One ``correction_id`` is applied at most once per account.
    """

    TYPE = "rerate.cost_requested"

    account_id: str
    correction_id: str = Field(min_length=1)
    channel_id: str
    period_from: datetime
    period_to: datetime
    cost: CostPrice
    reason: str = Field(min_length=1)
    actor: str = ""
