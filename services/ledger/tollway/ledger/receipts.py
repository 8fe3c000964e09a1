"""The receipt projection.

One JSON document per request, folded from the events that concern it. Pure functions over a
dict; the store persists the result.

A receipt tells the whole story: who sent it (key, project, task, user), what was asked for,
each upstream attempt (channel, upstream model, route type, outcome, latency, tokens, cost),
retries and fallback, the hold, the bucket charged and the amount, the balance after, and the
limit that stopped it, if one did.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from tollway.events.ledger import HoldReleased, HoldSettled
from tollway.events.pricing import cost_micro, line_items
from tollway.events.receipt import Receipt, ReceiptPlanStep

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tollway.events.envelope import Envelope, Payload
    from tollway.events.gateway import (
        AttemptFinished,
        Candidate,
        RequestFinished,
        RequestReceived,
    )
    from tollway.events.ledger import HoldExpired, HoldExtended, LateCaptured, Rerated


def opened(
    env: Envelope[RequestReceived],
    bucket: str,
    unit: str | None,
    plan: Sequence[Candidate] | None = None,
) -> dict[str, Any]:
    """The receipt as the request enters the ledger (the contract: ``tollway.events.receipt``).

    ``plan``: what the request's task allows of its plan (all of it when absent).
    """
    req = env.payload
    receipt = Receipt(
        request_id=req.request_id,
        created_at=env.occurred_at.isoformat(),
        account_id=req.account_id,
        key_id=req.key_id,
        project_id=req.project_id,
        task_id=req.task_id,
        user=req.user,
        protocol=req.protocol,
        endpoint=req.endpoint,
        stream=req.stream,
        requested_model=req.catalog_model,
        plan=[
            ReceiptPlanStep(
                channel=c.channel,
                brand=c.brand,
                route_type=c.route_type,
                bucket=c.bucket,
                upstream_model=c.upstream_model,
                tier=c.tier,
            )
            for c in (req.plan if plan is None else plan)
        ],
        bucket=bucket,
        unit=unit,
    )
    return receipt.model_dump(mode="json")


def hold_placed(receipt: dict[str, Any], hold_id: str, amount: int) -> None:
    """The hold that reserves the request's worst case."""
    receipt["status"] = "authorized"
    receipt["hold"] = {"hold_id": hold_id, "held_micro": amount, "status": "open"}


def rejected(receipt: dict[str, Any], limit: str, message: str) -> None:
    """Refused before any upstream call; ``limit`` names what stopped it."""
    receipt["status"] = "rejected"
    receipt["limit"] = limit
    receipt["final_status"] = 402
    receipt["error"] = message


def add_attempt(receipt: dict[str, Any], attempt: AttemptFinished, cost: int) -> None:
    """Append one upstream attempt, in attempt order, and recount retries and fallback."""
    entry = {
        "attempt": attempt.attempt,
        **attempt.candidate.model_dump(mode="json", exclude={"tier", "cost"}),
        "outcome": attempt.outcome,
        "status": attempt.status,
        "error_class": attempt.error_class,
        "latency_ms": attempt.latency_ms,
        "ttft_ms": attempt.ttft_ms,
        "usage": attempt.usage.model_dump(),
        "usage_estimated": attempt.usage_estimated,
        "token_classes": line_items(attempt.usage, attempt.candidate.price),
        "cost_micro": cost,
        "upstream_request_id": attempt.upstream_request_id,
    }
    attempts = [a for a in receipt["attempts"] if a["attempt"] != attempt.attempt]
    attempts.append(entry)
    attempts.sort(key=lambda a: a["attempt"])
    receipt["attempts"] = attempts
    channels = [a["channel_id"] for a in attempts]
    receipt["fallback"] = len(set(channels)) > 1
    receipt["retries"] = len(attempts) - len(set(channels))


def served_attempt(receipt: dict[str, Any], attempt: int | None) -> dict[str, Any] | None:
    """The attempt that produced the delivered answer, if any."""
    if attempt is None:
        return None
    return next((a for a in receipt["attempts"] if a["attempt"] == attempt), None)


def finished(
    receipt: dict[str, Any], settlement: Payload, fin: RequestFinished, available: int
) -> None:
    """Close the story: what was charged, what went back, the balance after."""
    served = served_attempt(receipt, fin.served_attempt)
    receipt["final_status"] = fin.status
    receipt["balance_after_micro"] = available
    # Candidates the router left out (an open circuit, ...) are part of the story too, and
    # serving from a later candidate because earlier ones were skipped is a fallback.
    receipt["skipped"] = [s.model_dump() for s in fin.skipped]
    receipt["fallback"] = bool(receipt["fallback"] or (served is not None and fin.fallbacks > 0))
    if served is not None and fin.status >= HTTPStatus.BAD_REQUEST:
        # Part of the answer reached the client before the stream broke: charged, and said so.
        receipt["error"] = (
            f"The stream failed after it started ({served['error_class']});"
            " the tokens delivered are charged."
        )
    if isinstance(settlement, HoldSettled):
        receipt["status"] = "settled"
        receipt["hold"] = {
            **(receipt["hold"] or {}),
            "status": "settled",
            "released_micro": settlement.released_micro,
        }
        receipt["charged_micro"] = settlement.charged_micro
        receipt["cost_micro"] = cost_micro(fin.usage, fin.price) if fin.price else 0
        receipt["served_by"] = served["channel"] if served else fin.served_channel_id
        receipt["usage"] = fin.usage.model_dump()
        receipt["usage_estimated"] = fin.usage_estimated
        _priced(receipt, fin)
    elif isinstance(settlement, HoldReleased):
        receipt["status"] = "released"
        receipt["hold"] = {
            **(receipt["hold"] or {}),
            "status": "released",
            "released_micro": settlement.released_micro,
        }


def expired(receipt: dict[str, Any], event: HoldExpired, at: str, available: int) -> None:
    """The hold outlived its deadline: released by the ledger's clock, nothing charged (yet)."""
    receipt["status"] = "expired"
    receipt["hold"] = {
        **(receipt["hold"] or {}),
        "status": "expired",
        "released_micro": event.released_micro,
        "expired_at": at,
    }
    receipt["balance_after_micro"] = available


def extended(receipt: dict[str, Any], event: HoldExtended) -> None:
    """A running request kept its hold longer."""
    receipt["hold"] = {
        **(receipt["hold"] or {}),
        "deadline_at": event.deadline_at.isoformat(),
        "extensions": int((receipt["hold"] or {}).get("extensions", 0)) + 1,
    }


def late_captured(
    receipt: dict[str, Any], event: LateCaptured, fin: RequestFinished, available: int
) -> None:
    """Served after the hold expired: charged from the bucket directly, and said so."""
    served = served_attempt(receipt, fin.served_attempt)
    receipt["status"] = "settled"
    receipt["late_capture"] = True
    receipt["final_status"] = fin.status
    receipt["charged_micro"] = event.charged_micro
    receipt["cost_micro"] = cost_micro(fin.usage, fin.price) if fin.price else 0
    receipt["served_by"] = served["channel"] if served else fin.served_channel_id
    receipt["usage"] = fin.usage.model_dump()
    receipt["balance_after_micro"] = available
    _priced(receipt, fin)


def _priced(receipt: dict[str, Any], fin: RequestFinished) -> None:
    """Each token class of the served attempt, its price per 1M and its share of the cost."""
    if fin.price is None:
        return
    receipt["price_per_1m_micro"] = fin.price.per_class()
    receipt["token_classes"] = line_items(fin.usage, fin.price)


def annotate_finish(receipt: dict[str, Any], fin: RequestFinished, settled: str, unit: str) -> None:
    """After the finish: other holds released; a fallback bucket's hold carries the settlement."""
    extras = receipt.get("extra_holds") or []
    primary = receipt.get("hold") or {}
    for extra in extras:
        extra.update(status="released", released_micro=extra["held_micro"])
    if fin.served and primary.get("hold_id") != settled:
        # A fallback bucket served: its hold carries the settlement, the primary went back.
        outcome = {"status": primary.get("status"), "released_micro": primary.get("released_micro")}
        receipt["hold"] = {**primary, "status": "released", "released_micro": primary["held_micro"]}
        for extra in extras:
            if extra["hold_id"] == settled:
                extra.update(outcome)
    if fin.served and fin.served_bucket is not None:
        receipt["bucket"] = fin.served_bucket
        receipt["unit"] = unit
    refused = receipt.get("refused") or []
    if not fin.served and refused and receipt.get("limit") is None:
        receipt["limit"] = refused[0]["limit"]
        receipt["error"] = refused[0]["message"]


def rerated(receipt: dict[str, Any], event_id: str, event: Rerated, at: str) -> None:
    """A re-rating entry next to the original charge, which the receipt keeps as it was.

    ``charged_micro`` stays the original charge; ``rerates`` lists each entry (correction id,
    the price used per 1M of every token class, before, after, the difference) and
    ``rerated_charge_micro`` is what the request costs the tenant now.
    """
    entry = {
        "event_id": event_id,
        "correction_id": event.correction_id,
        "side": event.side,
        "original_event_id": event.original_event_id,
        "at": at,
        "price_per_1m_micro": event.price.per_class(),
        "charged_before_micro": event.charged_before_micro,
        "rerated_micro": event.rerated_micro,
        "amount_micro": event.amount_micro,
        "reason": event.reason,
    }
    receipt["rerates"] = [*receipt.get("rerates", []), entry]
    receipt["rerated_charge_micro"] = event.rerated_micro
