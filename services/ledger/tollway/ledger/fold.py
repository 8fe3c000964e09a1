"""The ledger's hot path as a pure fold: authorize, record an attempt, settle.

A batch's state (the accounts' buckets and balances, the requests' holds and receipts) is
loaded in bulk by :mod:`tollway.ledger.batch_store` when not already in memory; each record is
then decided against that state and its events are folded back into it, so the next record
of the batch sees them. Nothing here awaits, reads a clock or touches a database: the same
records over the same state always give the same events, byte for byte, live or in a replay.

``decide_*`` read the state and return a :class:`Decision` (journal events, messages for other
topics, projection changes); :func:`evolve` folds a decision into the state and into the
batch's :class:`Effects`, which the store writes in one transaction with multi-row statements.

:mod:`tollway.ledger.fold_usage` decides attempts and finishes over the same state.

The fold covers what the hot path does for accounts without budgets or task envelopes (the
router's plans, attempts and finishes), the clock's ticks and hold extensions
(:mod:`tollway.ledger.fold_expiry`), top-ups (:mod:`tollway.ledger.fold_topup`), reversals and
adjustments (:mod:`tollway.ledger.fold_corrections`) and price-table changes
(:mod:`tollway.ledger.fold_prices`); budgets and tasks go through the per-event use cases (see
:mod:`tollway.ledger.handlers`). The state a batch decides over is kept per partition across
batches (:mod:`tollway.ledger.resident`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tollway.events import topics
from tollway.events.gateway import (
    BucketRefusal,
    HoldGrant,
    RequestAuthorized,
    RequestReceived,
    RequestRejected,
)
from tollway.events.ids import derived_id
from tollway.events.ledger import (
    HoldPlaced,
    HoldRejected,
)
from tollway.ledger import domain, receipts
from tollway.ledger import limits_domain as ld
from tollway.ledger.journal import emit
from tollway.ledger.receipt_model import ReceiptRow
from tollway.runtime.outbox import Outgoing

if TYPE_CHECKING:
    from collections.abc import MutableMapping
    from datetime import datetime

    from tollway.events.envelope import Envelope, Payload
    from tollway.events.ledger import Posting, PriceTableChanged
    from tollway.ledger.recon import ReconAttempt
    from tollway.ledger.upstream_costs import CostRow


@dataclass(frozen=True, slots=True)
class Hold:
    """One hold as the ledger keeps it (a row of ``ledger.holds``)."""

    hold_id: str
    request_id: str
    account_id: str
    bucket: str
    unit: str
    amount: int
    status: str
    deadline_at: datetime
    opened_at: datetime
    closed_at: datetime | None = None
    request_offset: int | None = None


# --- what top-ups, corrections and price changes decide on (see fold_topup, fold_corrections,
# fold_prices)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A tenant's bucket and its unit (a row of ``ledger.buckets``), fixed by its first top-up."""

    account_id: str
    bucket: str
    unit: str


@dataclass(frozen=True, slots=True)
class KeyUse:
    """An applied idempotency key: a row of ``ledger.topups`` or ``ledger.corrections``.

    ``original_event_id`` and ``amount``: what a reversal took back from its original.
    """

    account_id: str
    key: str
    fingerprint: str
    event_id: str
    original_event_id: str | None = None
    amount: int = 0


@dataclass(frozen=True, slots=True)
class Original:
    """A journal entry a reversal names, with what earlier corrections did to it.

    ``reversed``: what reversals of it gave back so far; ``rerated``: the signed sum of its
    re-ratings (a re-rated charge cost the tenant its original plus those).
    """

    event_id: str
    type: str
    account_id: str
    request_id: str | None
    bucket: str | None
    postings: tuple[Posting, ...]
    reversed: int = 0
    rerated: int = 0


def original_of(env: Envelope[Any]) -> Original:
    """A journal event just folded, as a reversal of it sees it (nothing reversed yet)."""
    p = env.payload
    return Original(
        event_id=env.id,
        type=env.type,
        account_id=p.account_id,
        request_id=getattr(p, "request_id", None),
        bucket=getattr(p, "bucket", None),
        postings=tuple(getattr(p, "postings", ())),
    )


@dataclass(frozen=True, slots=True)
class PriceVersion:
    """A channel's price version journaled as ``event_id`` (a row of ``ledger.price_versions``)."""

    event_id: str
    changed_at: datetime
    changed: PriceTableChanged


@dataclass(slots=True)
class State:
    """What a batch decides over, loaded in bulk for its accounts and requests.

    ``units``: (account, bucket) -> the bucket's unit; ``balances``: (ledger account, unit) ->
    amount, for the tenants' bucket accounts; ``holds``: request -> its holds in id order;
    ``receipts``: request -> its receipt.

    Top-ups, corrections and price changes (every map holds what a batch asked about; None:
    looked up, absent): ``topup_keys`` and ``correction_keys``: (account, idempotency key) ->
    the fingerprint of the payload it was applied with; ``originals``: journal entry id -> the
    entry as a reversal of it decides on it; ``price_versions``: channel -> its latest journaled
    price version (0: none). ``balances`` also holds each known account's top-up and
    adjustment sources.
    """

    units: MutableMapping[tuple[str, str], str] = field(default_factory=dict)
    balances: MutableMapping[tuple[str, str], int] = field(default_factory=dict)
    holds: MutableMapping[str, tuple[Hold, ...]] = field(default_factory=dict)
    receipts: MutableMapping[str, ReceiptRow] = field(default_factory=dict)
    topup_keys: MutableMapping[tuple[str, str], str | None] = field(default_factory=dict)
    correction_keys: MutableMapping[tuple[str, str], str | None] = field(default_factory=dict)
    originals: MutableMapping[str, Original | None] = field(default_factory=dict)
    price_versions: MutableMapping[str, int] = field(default_factory=dict)

    def available(self, account_id: str, bucket: str, unit: str) -> int:
        """A bucket's spendable balance in ``unit`` (0 when it never moved)."""
        return self.balances.get((domain.bucket_account(account_id, bucket), unit), 0)


@dataclass(slots=True)
class Effects:
    """What a batch's fold wrote: the store persists it in one transaction.

    ``journal``: emitted events with their encoded form (also their ledger.events message), in
    order; ``outgoing``: every message to publish, in order; ``opened``: holds placed in this
    batch (their final state); ``changed``: holds that existed before and changed; receipt ids
    created and changed (their final state is in the :class:`State`); ``costs``: booked
    upstream cost rows, in order.
    """

    journal: list[tuple[Envelope[Any], Outgoing]] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)
    opened: dict[str, Hold] = field(default_factory=dict)
    changed: dict[str, Hold] = field(default_factory=dict)
    new_receipts: set[str] = field(default_factory=set)
    changed_receipts: set[str] = field(default_factory=set)
    recon: list[ReconAttempt] = field(default_factory=list)
    costs: list[CostRow] = field(default_factory=list)
    # Top-ups, corrections, price changes: rows to insert, in order (see Decision).
    buckets: list[Bucket] = field(default_factory=list)
    topups: list[KeyUse] = field(default_factory=list)
    corrections: list[KeyUse] = field(default_factory=list)
    prices: list[PriceVersion] = field(default_factory=list)


@dataclass(slots=True)
class Decision:
    """What one record decided: events and messages in emission order, and projection changes.

    ``costs`` are the projection rows of upstream costs it booked. ``steps`` interleaves journal
    events (``("journal", envelope)``) and messages for other
    topics (``("message", outgoing)``) in the order the per-event use cases emitted them.
    """

    steps: list[tuple[str, Any]] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    receipts: list[ReceiptRow] = field(default_factory=list)
    new_receipt: ReceiptRow | None = None
    recon: list[ReconAttempt] = field(default_factory=list)
    costs: list[CostRow] = field(default_factory=list)
    # ``buckets`` opened by a first top-up; idempotency keys applied by ``topups`` and
    # ``corrections`` (a reversal's counts against its original); price ``prices`` journaled.
    buckets: list[Bucket] = field(default_factory=list)
    topups: list[KeyUse] = field(default_factory=list)
    corrections: list[KeyUse] = field(default_factory=list)
    prices: list[PriceVersion] = field(default_factory=list)

    def journal(self, env: Envelope[Payload]) -> None:
        """Emit ``env`` to the journal (and ledger.events)."""
        self.steps.append(("journal", env))

    def message(self, out: Outgoing) -> None:
        """Emit ``out`` to another topic."""
        self.steps.append(("message", out))


class DuplicateRequestError(ValueError):
    """A second RequestReceived for a request id the ledger already decided: poison."""


def evolve(state: State, effects: Effects, decision: Decision) -> None:
    """Fold ``decision`` into ``state`` (balances, holds, receipts) and into ``effects``."""
    for kind, item in decision.steps:
        if kind == "journal":
            message = Outgoing.of(topics.LEDGER_EVENTS, item.payload.account_id, item)
            for p in getattr(item.payload, "postings", ()):
                key = (p.account, p.unit)
                state.balances[key] = state.balances.get(key, 0) + p.amount
            effects.journal.append((item, message))
            effects.outgoing.append(message)
        else:
            effects.outgoing.append(item)
    for hold in decision.holds:
        before = state.holds.get(hold.request_id, ())
        others = [h for h in before if h.hold_id != hold.hold_id]
        state.holds[hold.request_id] = tuple(sorted([*others, hold], key=lambda h: h.hold_id))
        # New to the state (placed now) or placed earlier in this batch: inserted in its final
        # state. Anything else (closed, or extended while open) is an update.
        if hold.hold_id in effects.opened or len(others) == len(before):
            effects.opened[hold.hold_id] = hold
        else:
            effects.changed[hold.hold_id] = hold
    if decision.new_receipt is not None:
        state.receipts[decision.new_receipt.request_id] = decision.new_receipt
        effects.new_receipts.add(decision.new_receipt.request_id)
    for row in decision.receipts:
        state.receipts[row.request_id] = row
        if row.request_id not in effects.new_receipts:
            effects.changed_receipts.add(row.request_id)
    effects.recon.extend(decision.recon)
    effects.costs.extend(decision.costs)
    _evolve_inputs(state, effects, decision)


def _evolve_inputs(state: State, effects: Effects, decision: Decision) -> None:
    """Fold what a top-up, correction or price change decided (see :class:`State`)."""
    originals = state.originals
    if originals:
        # An entry a reversal of this batch names, journaled after the batch looked it up.
        for kind, item in decision.steps:
            if kind == "journal" and item.id in originals and originals[item.id] is None:
                originals[item.id] = original_of(item)
    for b in decision.buckets:
        state.units[(b.account_id, b.bucket)] = b.unit
    for use in decision.topups:
        state.topup_keys[(use.account_id, use.key)] = use.fingerprint
    for use in decision.corrections:
        state.correction_keys[(use.account_id, use.key)] = use.fingerprint
        original = originals.get(use.original_event_id) if use.original_event_id else None
        if original is not None:
            originals[original.event_id] = replace(
                original, reversed=original.reversed + use.amount
            )
    for version in decision.prices:
        state.price_versions[version.changed.channel_id] = version.changed.version
    effects.buckets.extend(decision.buckets)
    effects.topups.extend(decision.topups)
    effects.corrections.extend(decision.corrections)
    effects.prices.extend(decision.prices)


# --- authorize ---------------------------------------------------------------------------------


def decide_request(state: State, env: Envelope[RequestReceived], offset: int | None) -> Decision:
    """Hold every bucket of the plan, or reject the request when its primary cannot be held.

    The fold's share of :func:`tollway.ledger.authorize.authorize`: no task, no budgets.
    """
    req = env.payload
    if req.request_id in state.receipts:
        raise DuplicateRequestError(f"request {req.request_id} was already authorized")
    limits = ld.LimitState(budgets=[], used={})
    placed: list[tuple[ld.BucketGroup, str, str]] = []
    refused: list[tuple[ld.BucketGroup, ld.Refusal]] = []
    for group in ld.bucket_groups(req.plan, req.estimated_input_tokens, req.max_output_tokens):
        unit = state.units.get((req.account_id, group.bucket), "")
        available = state.available(req.account_id, group.bucket, unit) if unit else 0
        _, refusal = ld.decide_group(limits, req, group, unit, available)
        if refusal is not None and not placed:
            return _reject(state, env, group.bucket, refusal)
        if refusal is not None:
            refused.append((group, refusal))
            continue
        salt = "hold" if not placed else f"hold:{group.bucket}"
        placed.append((group, unit, "hold_" + derived_id(env.id, salt)))
    return _place(env, placed, refused, offset)


def _place(
    env: Envelope[RequestReceived],
    placed: list[tuple[ld.BucketGroup, str, str]],
    refused: list[tuple[ld.BucketGroup, ld.Refusal]],
    offset: int | None,
) -> Decision:
    req, decision = env.payload, Decision()
    for i, (group, unit, hold_id) in enumerate(placed):
        bucket, amount = group.bucket, group.worst_micro
        event = HoldPlaced(
            account_id=req.account_id,
            cause_id=env.id,
            hold_id=hold_id,
            request_id=req.request_id,
            bucket=bucket,
            unit=unit,
            amount_micro=amount,
            postings=domain.transfer(
                domain.bucket_account(req.account_id, bucket),
                domain.held_account(req.account_id, bucket),
                unit,
                amount,
            ),
        )
        decision.holds.append(
            Hold(
                hold_id,
                req.request_id,
                req.account_id,
                bucket,
                unit,
                amount,
                "open",
                req.deadline_at,
                env.occurred_at,
                request_offset=offset,
            )
        )
        decision.journal(emit(env, event, "hold_placed" if i == 0 else f"hold_placed:{bucket}"))
    for group, r in refused:
        rejected = _rejected(env, group.bucket, r)
        decision.journal(emit(env, rejected, f"hold_rejected:{group.bucket}"))
    primary_group, primary_unit, primary_id = placed[0]
    body = receipts.opened(env, primary_group.bucket, primary_unit)
    receipts.hold_placed(body, primary_id, primary_group.worst_micro)
    body["extra_holds"] = [
        {"bucket": g.bucket, "hold_id": h, "held_micro": g.worst_micro, "status": "open"}
        for g, _, h in placed[1:]
    ]
    body["refused"] = [
        {
            "bucket": g.bucket,
            "limit": r.limit,
            "message": r.message,
            "skipped": [c.channel for c in g.candidates],
        }
        for g, r in refused
    ]
    decision.new_receipt = _new_receipt(env, body)
    authorized = RequestAuthorized(
        request=req,
        hold_id=primary_id,
        bucket=primary_group.bucket,
        held_micro=primary_group.worst_micro,
        extra_holds=[
            HoldGrant(bucket=g.bucket, hold_id=h, held_micro=g.worst_micro)
            for g, _, h in placed[1:]
        ],
        refused=[
            BucketRefusal(bucket=g.bucket, limit=r.limit, message=r.message) for g, r in refused
        ],
    )
    decision.message(
        Outgoing.of(topics.AUTHORIZED, req.account_id, emit(env, authorized, "authorized"))
    )
    return decision


def _rejected(env: Envelope[RequestReceived], bucket: str, r: ld.Refusal) -> HoldRejected:
    req = env.payload
    return HoldRejected(
        account_id=req.account_id,
        cause_id=env.id,
        request_id=req.request_id,
        bucket=bucket,
        requested_micro=r.requested,
        available_micro=r.available,
        limit=r.limit,
    )


def _reject(state: State, env: Envelope[RequestReceived], bucket: str, r: ld.Refusal) -> Decision:
    req, decision = env.payload, Decision()
    body = receipts.opened(env, bucket, state.units.get((req.account_id, bucket)))
    receipts.rejected(body, r.limit, r.message)
    body["final_status"] = 402
    decision.new_receipt = _new_receipt(env, body)
    decision.journal(emit(env, _rejected(env, bucket, r), "hold_rejected"))
    reply = RequestRejected(
        request_id=req.request_id, status=402, code=r.code, message=r.message, limit=r.limit
    )
    decision.message(
        Outgoing.of(topics.replies_topic(req.edge_id), req.request_id, emit(env, reply, "rejected"))
    )
    return decision


def _new_receipt(env: Envelope[RequestReceived], body: dict[str, Any]) -> ReceiptRow:
    req = env.payload
    return ReceiptRow(
        request_id=req.request_id,
        account_id=req.account_id,
        key_id=req.key_id,
        project_id=req.project_id,
        task_id=req.task_id,
        catalog_model=req.catalog_model,
        created_at=env.occurred_at,
        body=body,
    )
