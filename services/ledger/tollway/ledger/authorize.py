"""Authorization: one hold per bucket of the plan, each within every hard limit that applies.

The primary candidate's bucket must be held or the request is rejected (402 naming the limit;
404 for a task this account does not have). Every other bucket of the plan is held too, or
refused with the limit that stopped it; the router then only tries held buckets. All of it
happens in the consumer's transaction for the account's partition, so however many requests
race, they are decided one after another against the same sums (ARCHITECTURE invariant 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from tollway.events import topics
from tollway.events.gateway import BucketRefusal, HoldGrant, RequestAuthorized, RequestRejected
from tollway.events.ids import derived_id
from tollway.events.ledger import HoldPlaced, HoldRejected
from tollway.ledger import domain, limits_store, receipts, store
from tollway.ledger import limits_domain as ld
from tollway.ledger.journal import create_receipt, emit, journal
from tollway.runtime.outbox import Outgoing

if TYPE_CHECKING:
    import asyncpg

    from tollway.events.envelope import Envelope
    from tollway.events.gateway import RequestReceived

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Placed:
    """A hold the authorization decided to place."""

    group: ld.BucketGroup
    unit: str
    hold_id: str
    charges: list[ld.Charge]


@dataclass(frozen=True, slots=True)
class Stop:
    """Why a request is rejected before any hold: status, code, message, limit."""

    status: int
    refusal: ld.Refusal
    bucket: str


async def authorize(
    conn: asyncpg.Connection, env: Envelope[RequestReceived], request_offset: int | None = None
) -> list[Outgoing]:
    """Place the plan's holds, or reject the request when its primary bucket cannot be held.

    ``request_offset``: the request's offset in its gw.requests partition, kept on its holds.
    """
    req = env.payload
    task = await limits_store.task(conn, req.task_id, req.account_id) if req.task_id else None
    stop = _task_gate(req, task)
    if stop is not None:
        return await _reject(conn, env, stop)
    plan = ld.allowed_plan(req.plan, task)
    groups = ld.bucket_groups(plan, req.estimated_input_tokens, req.max_output_tokens)
    state = await _limit_state(conn, env)
    placed: list[Placed] = []
    refused: list[tuple[ld.BucketGroup, ld.Refusal]] = []
    for group in groups:
        unit, available = await store.bucket_funds(conn, req.account_id, group.bucket)
        charges, refusal = ld.decide_group(state, req, group, unit, available)
        if refusal is not None and not placed:
            return await _reject(conn, env, Stop(402, refusal, group.bucket), plan)
        if refusal is not None:
            refused.append((group, refusal))
            continue
        ld.apply_charges(state, charges)
        placed.append(Placed(group, unit, _hold_id(env, group.bucket, first=not placed), charges))
    return await _place(conn, env, plan, placed, refused, request_offset=request_offset)


def _task_gate(req: RequestReceived, task: ld.TaskRule | None) -> Stop | None:
    if req.task_id is None:
        return None
    bucket = req.plan[0].bucket
    limit = f"task:{req.task_id}"
    if task is None:
        message = f"No task '{req.task_id}' for this account: open one with POST /v1/tasks."
        return Stop(404, ld.Refusal(limit, "task_not_found", message, 0, 0), bucket)
    if task.status != "open":
        message = f"Task '{req.task_id}' is closed: open a new task to make more calls."
        return Stop(402, ld.Refusal(limit, "task_closed", message, 0, 0), bucket)
    if not ld.allowed_plan(req.plan, task):
        message = (
            f"Task '{req.task_id}' may only use {', '.join(task.route_types)} routes,"
            " and none of them serves this model."
        )
        return Stop(403, ld.Refusal(limit, "route_type_not_allowed", message, 0, 0), bucket)
    return None


async def _limit_state(conn: asyncpg.Connection, env: Envelope[RequestReceived]) -> ld.LimitState:
    req = env.payload
    budgets = [b for b in await limits_store.budgets(conn, req.account_id) if b.covers_request(req)]
    used = {}
    for b in budgets:
        if b.mode == "hard":
            since = ld.window_start(b.window, b.timezone, env.occurred_at)
            used[b.budget_id] = await limits_store.used(conn, b.budget_id, since)
    return ld.LimitState(budgets=budgets, used=used)


def _hold_id(env: Envelope[Any], bucket: str, *, first: bool) -> str:
    # The primary keeps the id it always had, so a replay of older logs reproduces it.
    return "hold_" + derived_id(env.id, "hold" if first else f"hold:{bucket}")


async def _place(  # noqa: PLR0913 - the decision's parts
    conn: asyncpg.Connection,
    env: Envelope[RequestReceived],
    plan: list[Any],
    placed: list[Placed],
    refused: list[tuple[ld.BucketGroup, ld.Refusal]],
    *,
    request_offset: int | None,
) -> list[Outgoing]:
    req = env.payload
    out = [
        await _place_one(conn, env, p, first=i == 0, request_offset=request_offset)
        for i, p in enumerate(placed)
    ]
    out += [await _refuse_one(conn, env, g, r) for g, r in refused]
    primary = placed[0]
    receipt = receipts.opened(env, primary.group.bucket, primary.unit, plan)
    receipts.hold_placed(receipt, primary.hold_id, primary.group.worst_micro)
    receipt["extra_holds"] = [_hold_entry(p) for p in placed[1:]]
    receipt["refused"] = [_refused_entry(g, r) for g, r in refused]
    await create_receipt(conn, env, "authorized", receipt)
    authorized = RequestAuthorized(
        request=req.model_copy(update={"plan": plan}),
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
    out.append(Outgoing.of(topics.AUTHORIZED, req.account_id, emit(env, authorized, "authorized")))
    return out


async def _place_one(
    conn: asyncpg.Connection,
    env: Envelope[RequestReceived],
    p: Placed,
    *,
    first: bool,
    request_offset: int | None,
) -> Outgoing:
    req, bucket, amount = env.payload, p.group.bucket, p.group.worst_micro
    event = HoldPlaced(
        account_id=req.account_id,
        cause_id=env.id,
        hold_id=p.hold_id,
        request_id=req.request_id,
        bucket=bucket,
        unit=p.unit,
        amount_micro=amount,
        postings=domain.transfer(
            domain.bucket_account(req.account_id, bucket),
            domain.held_account(req.account_id, bucket),
            p.unit,
            amount,
        ),
    )
    await store.insert_hold(
        conn,
        hold_id=p.hold_id,
        request_id=req.request_id,
        account_id=req.account_id,
        bucket=bucket,
        unit=p.unit,
        amount=amount,
        deadline_at=req.deadline_at,
        opened_at=env.occurred_at,
        request_offset=request_offset,
    )
    await limits_store.insert_usage(
        conn,
        [
            (
                c.budget.budget_id,
                p.hold_id,
                req.request_id,
                env.occurred_at,
                c.amount,
                list(c.channels),
            )
            for c in p.charges
        ],
    )
    return await journal(
        conn, emit(env, event, "hold_placed" if first else f"hold_placed:{bucket}")
    )


async def _refuse_one(
    conn: asyncpg.Connection, env: Envelope[RequestReceived], group: ld.BucketGroup, r: ld.Refusal
) -> Outgoing:
    req = env.payload
    log.info("fallback_hold_refused", request_id=req.request_id, bucket=group.bucket, limit=r.limit)
    await _note_task_stop(conn, req, r)
    rejected = HoldRejected(
        account_id=req.account_id,
        cause_id=env.id,
        request_id=req.request_id,
        bucket=group.bucket,
        requested_micro=r.requested,
        available_micro=r.available,
        limit=r.limit,
    )
    return await journal(conn, emit(env, rejected, f"hold_rejected:{group.bucket}"))


async def _reject(
    conn: asyncpg.Connection,
    env: Envelope[RequestReceived],
    stop: Stop,
    plan: list[Any] | None = None,
) -> list[Outgoing]:
    req, r = env.payload, stop.refusal
    await _note_task_stop(conn, req, r)
    rejected = HoldRejected(
        account_id=req.account_id,
        cause_id=env.id,
        request_id=req.request_id,
        bucket=stop.bucket,
        requested_micro=r.requested,
        available_micro=r.available,
        limit=r.limit,
    )
    reply = RequestRejected(
        request_id=req.request_id, status=stop.status, code=r.code, message=r.message, limit=r.limit
    )
    unit = await store.bucket_unit(conn, req.account_id, stop.bucket)
    receipt = receipts.opened(env, stop.bucket, unit, plan)
    receipts.rejected(receipt, r.limit, r.message)
    receipt["final_status"] = stop.status
    await create_receipt(conn, env, "rejected", receipt)
    return [
        await journal(conn, emit(env, rejected, "hold_rejected")),
        Outgoing.of(
            topics.replies_topic(req.edge_id), req.request_id, emit(env, reply, "rejected")
        ),
    ]


async def _note_task_stop(conn: asyncpg.Connection, req: RequestReceived, r: ld.Refusal) -> None:
    if req.task_id is not None and r.limit == f"task:{req.task_id}":
        await limits_store.task_stopped(conn, req.task_id, req.account_id, r.message)


def _hold_entry(p: Placed) -> dict[str, Any]:
    return {
        "bucket": p.group.bucket,
        "hold_id": p.hold_id,
        "held_micro": p.group.worst_micro,
        "status": "open",
    }


def _refused_entry(group: ld.BucketGroup, r: ld.Refusal) -> dict[str, Any]:
    return {
        "bucket": group.bucket,
        "limit": r.limit,
        "message": r.message,
        "skipped": [c.channel for c in group.candidates],
    }
