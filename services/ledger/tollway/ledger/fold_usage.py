"""The fold's share of gw.usage: an attempt recorded, a request settled (pure, like the rest).

Decisions over :class:`tollway.ledger.fold.State`, folded by :func:`tollway.ledger.fold.evolve`:
an attempt joins its receipt and its upstream cost is booked at its channel's cost price (without
one, a failed attempt's tokens are journaled as upstream loss at the sell price); a finish settles
the served bucket's hold (or releases it; captures it late once expired), releases the request's
other holds, counts the spend against the request's budgets (:mod:`tollway.ledger.fold_limits`)
and closes the receipt's story. No IO, no clock.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tollway.events.ledger import HoldReleased, HoldSettled, LateCaptured, UpstreamLossRecorded
from tollway.events.pricing import cost_micro
from tollway.ledger import domain, fold_limits, holds, losses, receipts, recon, upstream_costs
from tollway.ledger.fold import Decision, Hold, State
from tollway.ledger.journal import emit

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tollway.events.envelope import Envelope, Payload
    from tollway.events.gateway import AttemptFinished, RequestFinished
    from tollway.events.ledger import Posting


# --- attempts ----------------------------------------------------------------------------------


def decide_attempt(state: State, env: Envelope[AttemptFinished]) -> Decision:
    """Add the attempt to its receipt; book its upstream cost, or a failed one's loss."""
    attempt, decision = env.payload, Decision()
    row = state.receipts.get(attempt.request_id)
    body = None if row is None else row.edit()
    if body is not None:
        cost = cost_micro(attempt.usage, attempt.candidate.price)
        receipts.add_attempt(body, attempt, cost)
    amount = losses.loss_of(attempt)
    if amount:
        bucket, channel = attempt.candidate.bucket, attempt.candidate.channel_id
        unit = state.units.get((attempt.account_id, bucket)) or bucket
        event = UpstreamLossRecorded(
            account_id=attempt.account_id,
            cause_id=env.id,
            request_id=attempt.request_id,
            attempt=attempt.attempt,
            channel_id=channel,
            unit=unit,
            amount_micro=amount,
            postings=domain.transfer(
                losses.UPSTREAM_LOSS, losses.upstream_cost_account(channel), unit, amount
            ),
        )
        if body is not None:
            lost = {**body.get("upstream_losses", {}), str(attempt.attempt): amount}
            body["upstream_losses"] = lost
            body["upstream_loss_micro"] = sum(lost.values())
        decision.journal(emit(env, event, "upstream_loss"))
    booked = upstream_costs.decide(env)
    if booked is not None:
        decision.journal(booked)
        decision.costs.append(upstream_costs.row_of(booked))
    if row is not None and body is not None:
        decision.receipts.append(row.with_body(body))
    _reconcile(env, decision)
    return decision


def _reconcile(env: Envelope[AttemptFinished], decision: Decision) -> None:
    """Keep the attempt's booked and reported cost; journal what the upstream reported."""
    row = recon.attempt_row(env)
    if row is None:
        return
    decision.recon.append(row)
    reported = recon.reported_event(row, env.id)
    if reported is not None:
        decision.journal(emit(env, reported, "upstream_cost_reported"))


# --- settle ------------------------------------------------------------------------------------


def served_hold(request_holds: tuple[Hold, ...], fin: RequestFinished) -> Hold | None:
    """The hold the finish settles: the served bucket's, else the primary."""
    if fin.served and fin.served_bucket is not None:
        for hold in request_holds:
            if hold.bucket == fin.served_bucket:
                return hold
    return next((h for h in request_holds if h.hold_id == fin.hold_id), None)


def decide_finish(state: State, env: Envelope[RequestFinished]) -> Decision:
    """Settle the served hold (or release it), release the others, close the receipt's story."""
    fin = env.payload
    request_holds = state.holds.get(fin.request_id, ())
    hold = served_hold(request_holds, fin)
    if hold is not None and hold.status == "expired" and fin.served:
        return _late_capture(state, env, hold)
    if hold is None or hold.status != "open":
        return Decision()
    decision = Decision()
    settlement = _settlement(env, hold)
    closed = replace(
        hold, status="settled" if fin.served else "released", closed_at=env.occurred_at
    )
    decision.journal(settlement)
    decision.holds.append(closed)
    row = state.receipts.get(fin.request_id)
    body = None if row is None else row.edit()
    if body is not None:
        after = _balance_after(state, hold, getattr(settlement.payload, "postings", ()))
        receipts.finished(body, settlement.payload, fin, after)
    _after_finish(state, env, request_holds, closed, settlement.payload, body, decision)
    if row is not None and body is not None:
        decision.receipts.append(row.with_body(body))
    return decision


def _balance_after(state: State, hold: Hold, postings: Iterable[Posting]) -> int:
    """The bucket's balance once ``postings`` are applied (evolve applies them for real)."""
    account = domain.bucket_account(hold.account_id, hold.bucket)
    moved = sum(int(p.amount) for p in postings if p.account == account and p.unit == hold.unit)
    return state.available(hold.account_id, hold.bucket, hold.unit) + moved


def _settlement(env: Envelope[RequestFinished], hold: Hold) -> Envelope[Payload]:
    fin = env.payload
    s = domain.settle(hold.amount, fin.usage if fin.served else None, fin.price)
    postings = domain.closing_postings(
        hold.account_id, hold.bucket, hold.unit, s, fin.served_channel_id
    )
    common: dict[str, Any] = {
        "account_id": hold.account_id,
        "cause_id": env.id,
        "hold_id": hold.hold_id,
        "request_id": fin.request_id,
        "bucket": hold.bucket,
        "unit": hold.unit,
    }
    if not fin.served:
        released = HoldReleased(**common, released_micro=s.released, postings=postings)
        return emit(env, released, "hold_released")
    settled = HoldSettled(
        **common,
        held_micro=hold.amount,
        charged_micro=s.charged,
        released_micro=s.released,
        postings=postings,
    )
    return emit(env, settled, "hold_settled")


def _late_capture(state: State, env: Envelope[RequestFinished], hold: Hold) -> Decision:
    """Served after its hold expired: charged from the bucket directly (captured once)."""
    fin, decision = env.payload, Decision()
    settlement = domain.settle(hold.amount, fin.usage, fin.price)
    channel = fin.served_channel_id or ""
    event = LateCaptured(
        account_id=hold.account_id,
        cause_id=env.id,
        hold_id=hold.hold_id,
        request_id=fin.request_id,
        bucket=hold.bucket,
        unit=hold.unit,
        charged_micro=settlement.charged,
        postings=holds.late_capture_postings(
            hold.account_id, hold.bucket, hold.unit, settlement, channel
        ),
    )
    captured = replace(hold, status="settled")
    decision.journal(emit(env, event, "late_captured"))
    decision.holds.append(captured)
    row = state.receipts.get(fin.request_id)
    body = None if row is None else row.edit()
    if body is not None:
        receipts.late_captured(body, event, fin, _balance_after(state, hold, event.postings))
    request_holds = tuple(
        captured if h.hold_id == hold.hold_id else h for h in state.holds.get(fin.request_id, ())
    )
    _after_finish(state, env, request_holds, captured, event, body, decision)
    if row is not None and body is not None:
        decision.receipts.append(row.with_body(body))
    return decision


def _after_finish(  # noqa: PLR0913, PLR0917 - the finish's parts
    state: State,
    env: Envelope[RequestFinished],
    request_holds: tuple[Hold, ...],
    settled_hold: Hold,
    settled: Payload,
    body: dict[str, Any] | None,
    decision: Decision,
) -> None:
    """Release the request's other open holds, count the spend against budgets, annotate.

    Each budget the request counted against stops counting its holds and counts what was
    spent; a spend that crosses 50/80/100 % of a budget is journaled (after the releases).
    """
    fin = env.payload
    for hold in request_holds:
        if hold.hold_id == settled_hold.hold_id or hold.status != "open":
            continue
        released = HoldReleased(
            account_id=hold.account_id,
            cause_id=env.id,
            hold_id=hold.hold_id,
            request_id=hold.request_id,
            bucket=hold.bucket,
            unit=hold.unit,
            released_micro=hold.amount,
            postings=holds.expiry_postings(hold.account_id, hold.bucket, hold.unit, hold.amount),
        )
        decision.holds.append(replace(hold, status="released", closed_at=env.occurred_at))
        decision.journal(emit(env, released, f"hold_released:{hold.hold_id}"))
    rows, crossings = fold_limits.settle(state, env, settled)
    decision.usage.extend(rows)
    for crossing in crossings:
        decision.journal(crossing)
    if body is not None:
        receipts.annotate_finish(
            body, fin, str(getattr(settled, "hold_id", "")), str(getattr(settled, "unit", ""))
        )
