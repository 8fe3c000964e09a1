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

The fold covers what the hot path does (the router's plans, attempts and finishes, with the
budgets and task envelopes that limit them: :mod:`tollway.ledger.fold_limits`), the clock's
ticks and hold extensions (:mod:`tollway.ledger.fold_expiry`), top-ups
(:mod:`tollway.ledger.fold_topup`), reversals and adjustments
(:mod:`tollway.ledger.fold_corrections`) and price-table changes
(:mod:`tollway.ledger.fold_prices`); re-ratings and invoice imports go through their use cases
(see :mod:`tollway.ledger.handlers`). The state a batch decides over is kept per partition
across batches (:mod:`tollway.ledger.resident`).
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
from tollway.ledger import domain, fold_limits, receipts
from tollway.ledger import limits_domain as ld
from tollway.ledger.fold_limits import BudgetUsage, Stop, UsageRow
from tollway.ledger.journal import emit
from tollway.ledger.receipt_model import ReceiptRow
from tollway.runtime.outbox import Outgoing

if TYPE_CHECKING:
    from collections.abc import MutableMapping
    from datetime import datetime

    from tollway.events.envelope import Envelope, Payload
    from tollway.events.gateway import Candidate
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

    Limits (:mod:`tollway.ledger.fold_limits`): ``budgets``: account -> its budgets (task
    envelopes included) in id order; ``tasks``: (account, task) -> the task (every task of a
    known account); ``usage``: budget -> its usage rows; ``request_usage``: request -> the usage
    rows of its holds, in (budget, hold) order; ``budget_owners``/``task_owners``: budget id /
    task id -> the account that has it (None: nobody), for the ids definitions name (read again
    for every run of records that has definitions).
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
    budgets: MutableMapping[str, tuple[ld.Budget, ...]] = field(default_factory=dict)
    tasks: MutableMapping[tuple[str, str], ld.TaskRule] = field(default_factory=dict)
    usage: MutableMapping[str, BudgetUsage] = field(default_factory=dict)
    request_usage: MutableMapping[str, tuple[UsageRow, ...]] = field(default_factory=dict)
    budget_owners: MutableMapping[str, str | None] = field(default_factory=dict)
    task_owners: MutableMapping[str, str | None] = field(default_factory=dict)
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
    upstream cost rows, in order. ``usage_new``/``usage_changed``: budget usage rows inserted
    and updated (final state, by (budget, hold)); ``task_stops``: (task, account) -> the first
    refusal by the task's own limit; ``budget_changes``: budget id -> its last change;
    ``tasks_opened``/``tasks_closed``: tasks opened and closed.
    """

    journal: list[tuple[Envelope[Any], Outgoing]] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)
    opened: dict[str, Hold] = field(default_factory=dict)
    changed: dict[str, Hold] = field(default_factory=dict)
    new_receipts: set[str] = field(default_factory=set)
    changed_receipts: set[str] = field(default_factory=set)
    recon: list[ReconAttempt] = field(default_factory=list)
    costs: list[CostRow] = field(default_factory=list)
    usage_new: dict[tuple[str, str], UsageRow] = field(default_factory=dict)
    usage_changed: dict[tuple[str, str], UsageRow] = field(default_factory=dict)
    task_stops: dict[tuple[str, str], str] = field(default_factory=dict)
    budget_changes: dict[str, fold_limits.BudgetChange] = field(default_factory=dict)
    tasks_opened: dict[str, fold_limits.OpenedTask] = field(default_factory=dict)
    tasks_closed: dict[tuple[str, str], fold_limits.ClosedTask] = field(default_factory=dict)
    # Top-ups, corrections, price changes: rows to insert, in order (see Decision).
    buckets: list[Bucket] = field(default_factory=list)
    topups: list[KeyUse] = field(default_factory=list)
    corrections: list[KeyUse] = field(default_factory=list)
    prices: list[PriceVersion] = field(default_factory=list)


@dataclass(slots=True)
class Decision:
    """What one record decided: events and messages in emission order, and projection changes.

    ``costs`` are the projection rows of upstream costs it booked; ``usage``: budget usage rows
    added or changed (their new state); ``tasks``: (account, task) it noted a stop on.
    ``steps`` interleaves journal
    events (``("journal", envelope)``) and messages for other
    topics (``("message", outgoing)``) in the order the per-event use cases emitted them.
    """

    steps: list[tuple[str, Any]] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    receipts: list[ReceiptRow] = field(default_factory=list)
    new_receipt: ReceiptRow | None = None
    recon: list[ReconAttempt] = field(default_factory=list)
    costs: list[CostRow] = field(default_factory=list)
    usage: list[UsageRow] = field(default_factory=list)
    tasks: list[tuple[str, ld.TaskRule]] = field(default_factory=list)
    defined: fold_limits.Defined | None = None
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
    _evolve_limits(state, effects, decision)
    _evolve_inputs(state, effects, decision)


def _evolve_limits(state: State, effects: Effects, decision: Decision) -> None:
    """Fold budget usage rows and task stops (:mod:`tollway.ledger.fold_limits`)."""
    for row in decision.usage:
        before = state.request_usage.get(row.request_id, ())
        others = [r for r in before if r.key != row.key]
        state.request_usage[row.request_id] = tuple(sorted([*others, row], key=lambda r: r.key))
        usage = state.usage.get(row.budget_id)
        if usage is not None:
            state.usage[row.budget_id] = usage.put(row)
        if row.key in effects.usage_new or len(others) == len(before):
            effects.usage_new[row.key] = row
        else:
            effects.usage_changed[row.key] = row
    for account_id, task in decision.tasks:
        state.tasks[(account_id, task.task_id)] = task
        if task.stopped_by is not None:
            effects.task_stops.setdefault((task.task_id, account_id), task.stopped_by)
    if decision.defined is not None:
        _evolve_definitions(state, effects, decision.defined)


def _evolve_definitions(state: State, effects: Effects, defined: fold_limits.Defined) -> None:
    """Fold budgets set or removed and tasks opened or closed."""
    for change in defined.budgets:
        account = change.account_id
        kept = [b for b in state.budgets.get(account, ()) if b.budget_id != change.budget_id]
        if change.budget is not None:
            kept.append(change.budget)
            if change.budget_id not in state.usage:
                state.usage[change.budget_id] = BudgetUsage({})
        state.budgets[account] = tuple(sorted(kept, key=lambda b: b.budget_id))
        state.budget_owners[change.budget_id] = None if change.budget is None else account
        effects.budget_changes[change.budget_id] = change
    for account_id, task in defined.tasks:
        state.tasks[(account_id, task.task_id)] = task
    for opened in defined.opened:
        state.task_owners[opened.task_id] = opened.account_id
        effects.tasks_opened[opened.task_id] = opened
    for closed in defined.closed:
        effects.tasks_closed[(closed.task_id, closed.account_id)] = closed


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

    A task's request passes its task's gate first and may only use what its task allows of
    its plan; each hold fits the bucket's balance and every hard budget that covers it
    (:mod:`tollway.ledger.fold_limits`), counting the holds placed before it.
    """
    req = env.payload
    if req.request_id in state.receipts:
        raise DuplicateRequestError(f"request {req.request_id} was already authorized")
    task = fold_limits.task_of(state, req)
    stop = fold_limits.task_gate(req, task)
    if stop is not None:
        return _reject(state, env, stop, None)
    plan = ld.allowed_plan(req.plan, task)
    limits = fold_limits.limit_state(state, env)
    placed: list[_Placed] = []
    refused: list[tuple[ld.BucketGroup, ld.Refusal]] = []
    for group in ld.bucket_groups(plan, req.estimated_input_tokens, req.max_output_tokens):
        unit = state.units.get((req.account_id, group.bucket), "")
        available = state.available(req.account_id, group.bucket, unit) if unit else 0
        charges, refusal = ld.decide_group(limits, req, group, unit, available)
        if refusal is not None and not placed:
            return _reject(state, env, Stop(402, refusal, group.bucket), plan)
        if refusal is not None:
            refused.append((group, refusal))
            continue
        ld.apply_charges(limits, charges)
        salt = "hold" if not placed else f"hold:{group.bucket}"
        placed.append(_Placed(group, unit, "hold_" + derived_id(env.id, salt), charges))
    decision = _place(env, placed, refused, offset, None if task is None else plan)
    for _, r in refused:
        _note_task_stop(state, req, r, decision)
    return decision


@dataclass(frozen=True, slots=True)
class _Placed:
    """A hold the authorization decided to place, and what it adds to each budget."""

    group: ld.BucketGroup
    unit: str
    hold_id: str
    charges: list[ld.Charge]


def _note_task_stop(state: State, req: RequestReceived, r: ld.Refusal, decision: Decision) -> None:
    noted = next((t for a, t in decision.tasks if a == req.account_id), None)
    if noted is not None:
        return  # the first refusal of this request is the one that counts
    task = fold_limits.task_stop(state, req, r)
    if task is not None:
        decision.tasks.append((req.account_id, task))


def _place(
    env: Envelope[RequestReceived],
    placed: list[_Placed],
    refused: list[tuple[ld.BucketGroup, ld.Refusal]],
    offset: int | None,
    plan: list[Candidate] | None,
) -> Decision:
    req, decision = env.payload, Decision()
    for i, p in enumerate(placed):
        group, unit, hold_id = p.group, p.unit, p.hold_id
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
        decision.usage.extend(fold_limits.usage_rows(env, hold_id, p.charges))
        decision.journal(emit(env, event, "hold_placed" if i == 0 else f"hold_placed:{bucket}"))
    for group, r in refused:
        rejected = _rejected(env, group.bucket, r)
        decision.journal(emit(env, rejected, f"hold_rejected:{group.bucket}"))
    primary = placed[0]
    body = receipts.opened(env, primary.group.bucket, primary.unit, plan)
    receipts.hold_placed(body, primary.hold_id, primary.group.worst_micro)
    body["extra_holds"] = [
        {
            "bucket": p.group.bucket,
            "hold_id": p.hold_id,
            "held_micro": p.group.worst_micro,
            "status": "open",
        }
        for p in placed[1:]
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
        request=req if plan is None else req.model_copy(update={"plan": plan}),
        hold_id=primary.hold_id,
        bucket=primary.group.bucket,
        held_micro=primary.group.worst_micro,
        extra_holds=[
            HoldGrant(bucket=p.group.bucket, hold_id=p.hold_id, held_micro=p.group.worst_micro)
            for p in placed[1:]
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


def _reject(
    state: State, env: Envelope[RequestReceived], stop: Stop, plan: list[Candidate] | None
) -> Decision:
    req, decision, r = env.payload, Decision(), stop.refusal
    _note_task_stop(state, req, r, decision)
    body = receipts.opened(env, stop.bucket, state.units.get((req.account_id, stop.bucket)), plan)
    receipts.rejected(body, r.limit, r.message)
    body["final_status"] = stop.status
    decision.new_receipt = _new_receipt(env, body)
    decision.journal(emit(env, _rejected(env, stop.bucket, r), "hold_rejected"))
    reply = RequestRejected(
        request_id=req.request_id, status=stop.status, code=r.code, message=r.message, limit=r.limit
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
