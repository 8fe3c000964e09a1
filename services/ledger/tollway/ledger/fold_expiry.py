"""The fold's share of a hold's life after it is placed: expiry by a clock tick, extension (pure).

A :class:`~tollway.events.ledger.ClockTicked` names the holds it may expire by their deadline
and by where their request sits in the log (``requests_before``); which those are is read from
Postgres before the fold (the holds a batch placed are written before its tick is decided), and
:func:`decide_tick` then expires them over the partition's state, in deadline order, and stops
counting them against budgets. :func:`decide_extension` moves an open hold's deadline later.
No IO, no clock.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tollway.events.ledger import HoldExpired, HoldExtended
from tollway.ledger import domain, fold_limits, holds, receipts
from tollway.ledger.fold import Decision, Hold, State
from tollway.ledger.journal import emit

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tollway.events.envelope import Envelope
    from tollway.events.gateway import HoldExtensionRequested
    from tollway.events.ledger import ClockTicked


def decide_tick(state: State, env: Envelope[ClockTicked], due: Sequence[Hold]) -> Decision:
    """Expire ``due`` (open holds of this partition, in deadline order) and say so on receipts.

    Each receipt shows its bucket's balance once that hold's reservation is back, as the
    per-event path read it after journaling each expiry.
    """
    decision = Decision()
    moved: dict[tuple[str, str], int] = defaultdict(int)
    bodies: dict[str, dict[str, Any]] = {}
    at = env.occurred_at.isoformat()
    for hold in due:
        event = HoldExpired(
            account_id=hold.account_id,
            cause_id=env.id,
            hold_id=hold.hold_id,
            request_id=hold.request_id,
            bucket=hold.bucket,
            unit=hold.unit,
            released_micro=hold.amount,
            deadline_at=hold.deadline_at,
            postings=holds.expiry_postings(hold.account_id, hold.bucket, hold.unit, hold.amount),
        )
        decision.journal(emit(env, event, f"expired:{hold.hold_id}"))
        decision.holds.append(replace(hold, status="expired", closed_at=env.occurred_at))
        # Budgets stop counting it as held (a late capture counts what it charges).
        decision.usage.extend(fold_limits.released(state, hold.request_id, hold.hold_id))
        for p in event.postings:
            moved[(p.account, p.unit)] += p.amount
        row = state.receipts.get(hold.request_id)
        if row is None:
            continue
        body = bodies.get(hold.request_id) or row.edit()
        bucket = (domain.bucket_account(hold.account_id, hold.bucket), hold.unit)
        available = state.available(hold.account_id, hold.bucket, hold.unit) + moved[bucket]
        receipts.expired(body, event, at, available)
        bodies[hold.request_id] = body
    for request_id, body in bodies.items():
        decision.receipts.append(state.receipts[request_id].with_body(body))
    return decision


def decide_extension(state: State, env: Envelope[HoldExtensionRequested]) -> Decision:
    """Move an open hold's deadline later; anything else (closed, earlier, unknown) is a no-op.

    The hold is looked up among the named request's holds of the named account (a request may
    only extend its own holds).
    """
    ask, decision = env.payload, Decision()
    hold = next(
        (
            h
            for h in state.holds.get(ask.request_id, ())
            if h.hold_id == ask.hold_id and h.account_id == ask.account_id
        ),
        None,
    )
    if hold is None or hold.status != "open":
        return decision
    new_deadline = holds.extended_deadline(hold.deadline_at, ask.deadline_at)
    if new_deadline is None:
        return decision
    event = HoldExtended(
        account_id=hold.account_id,
        cause_id=env.id,
        hold_id=hold.hold_id,
        request_id=hold.request_id,
        previous_deadline_at=hold.deadline_at,
        deadline_at=new_deadline,
    )
    decision.holds.append(replace(hold, deadline_at=new_deadline))
    row = state.receipts.get(hold.request_id)
    if row is not None:
        body = row.edit()
        receipts.extended(body, event)
        decision.receipts.append(row.with_body(body))
    decision.journal(emit(env, event, "hold_extended"))
    return decision
