"""Task envelopes for clients: open a task with a budget per bucket, read its receipt, close it.

The edge records who owns a task and publishes ``TaskOpened`` / ``TaskClosed`` on gw.requests,
keyed by account, so the ledger applies them in order with the calls that carry
``X-Tollway-Task``. The task's receipt is folded from the ledger's receipts of its calls.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Literal

from litestar import Request, get, post
from pydantic import BaseModel, Field, ValidationError

from tollway.edge import amounts, errors
from tollway.edge import limits_store as ls
from tollway.edge.api import TASK_ID
from tollway.edge.auth import authenticate
from tollway.edge.publish import publish_request
from tollway.events.envelope import Trace, make
from tollway.events.ids import new_id
from tollway.events.limits import TaskBudget, TaskClosed, TaskOpened

if TYPE_CHECKING:
    import asyncpg
    from litestar.datastructures import State

    from tollway.edge.store import KeyInfo


class BucketAmount(BaseModel):
    """At most ``amount`` (decimal units, ``"2.50"``) spent from ``bucket``."""

    bucket: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    amount: str


class NewTask(BaseModel):
    """``POST /v1/tasks``."""

    name: str = Field(default="", max_length=200)
    budgets: list[BucketAmount] = Field(min_length=1, max_length=16)
    route_types: list[Literal["direct", "pool"]] | None = None
    fallback: Literal["any", "same_route_type", "none"] = "any"


def _parse(body: bytes) -> NewTask:
    try:
        return NewTask.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise errors.InvalidRequestError(
            f"Invalid value for '{param}': {first['msg']}.", param=param, code="invalid_parameter"
        ) from None


def _envelope(data: NewTask, units: dict[str, str], key: KeyInfo) -> list[TaskBudget]:
    out: dict[str, TaskBudget] = {}
    for i, b in enumerate(data.budgets):
        micro = amounts.amount(b.amount, field=f"budgets.{i}.amount")
        if b.bucket not in units:
            raise errors.InvalidRequestError(
                f"Account {key.account_id} has no '{b.bucket}' bucket: top it up first.",
                param=f"budgets.{i}.bucket",
                code="unknown_bucket",
            )
        if b.bucket in out:
            raise errors.InvalidRequestError(
                f"Bucket '{b.bucket}' appears twice.", param=f"budgets.{i}.bucket"
            )
        out[b.bucket] = TaskBudget(bucket=b.bucket, unit=units[b.bucket], amount_micro=micro)
    return list(out.values())


def _usable(
    budgets: list[TaskBudget], route_types: list[str], routes: set[tuple[str, str]]
) -> None:
    """Refuse an envelope that can never be used: a budget no allowed route pays from."""
    reachable = {bucket for route_type, bucket in routes if route_type in route_types}
    for i, b in enumerate(budgets):
        if b.bucket in reachable:
            continue
        pays = f"pay only from {', '.join(sorted(reachable))}" if reachable else "serve no model"
        raise errors.InvalidRequestError(
            f"The '{b.bucket}' budget can never be spent: this task's route types"
            f" ({', '.join(route_types)}) {pays} for the models this key may call."
            " Budget a bucket those routes pay from, or allow other route types.",
            param=f"budgets.{i}.bucket",
            code="budget_unreachable",
        )


def _route_types(data: NewTask, key: KeyInfo) -> list[Literal["direct", "pool"]]:
    wanted = data.route_types or [t for t in ("direct", "pool") if t in key.route_types]
    refused = [t for t in wanted if t not in key.route_types]
    if refused or not wanted:
        raise errors.InvalidRequestError(
            f"This key may only use {', '.join(key.route_types)} routes.",
            param="route_types",
            code="route_type_not_allowed",
        )
    return wanted


@post("/v1/tasks", status_code=201)
async def open_task(request: Request[Any, Any, State]) -> dict[str, Any]:
    """Open a task envelope for the key's account and project."""
    key = await authenticate(request)
    return await open_task_for(request, key, _parse(await request.body()))


async def open_task_for(
    request: Request[Any, Any, State], key: KeyInfo, data: NewTask
) -> dict[str, Any]:
    """Record the owner, publish ``TaskOpened`` (undone when the log does not confirm it)."""
    pool = request.app.state.pool
    budgets = _envelope(data, await ls.bucket_units(pool, key.account_id), key)
    route_types = _route_types(data, key)
    _usable(budgets, list(route_types), await ls.route_buckets(pool, key.allowed_models))
    task_id = "task_" + new_id()
    event = TaskOpened(
        task_id=task_id,
        account_id=key.account_id,
        project_id=key.project_id,
        key_id=key.id,
        name=data.name,
        budgets=budgets,
        route_types=route_types,
        fallback=data.fallback,
    )
    await ls.add_task(pool, task_id, key.account_id, key.project_id, key.id)
    try:
        await publish_request(
            request.app.state.producer,
            key.account_id,
            make(event, trace=Trace(task_id=task_id)),
            "Open the task again: this one was not created.",
        )
    except errors.DependencyDownError:
        await ls.forget_task(pool, task_id)
        raise
    return {"id": task_id, "object": "task", "status": "open", **_definition(event)}


def _definition(event: TaskOpened) -> dict[str, Any]:
    return {
        "name": event.name,
        "budgets": [b.model_dump() for b in event.budgets],
        "route_types": event.route_types,
        "fallback": event.fallback,
    }


async def _owned(request: Request[Any, Any, State], task_id: str) -> KeyInfo:
    key = await authenticate(request)
    await require_task(request.app.state.pool, task_id, key.account_id)
    return key


async def require_task(pool: asyncpg.Pool, task_id: str, account_id: str) -> None:
    """404 unless ``account_id`` opened the task (another account's task is not found either)."""
    if not TASK_ID.match(task_id) or not await ls.owns_task(pool, task_id, account_id):
        raise errors.NotFoundError(f"No task '{task_id}' for this account.", code="task_not_found")


LIST_LIMIT = 100


@get("/v1/tasks")
async def list_tasks(request: Request[Any, Any, State]) -> dict[str, Any]:
    """The calling key's tasks, newest first (at most 100): each one's receipt is its URL."""
    key = await authenticate(request)
    rows = await ls.key_tasks(request.app.state.pool, key.account_id, key.id, LIST_LIMIT)
    return {"object": "list", "data": [_listed(r) for r in rows]}


def _listed(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "task",
        "created_at": row["created_at"].isoformat(),
        "name": row["name"],
        "status": row["status"] or "opening",
        "route_types": None if row["route_types"] is None else list(row["route_types"]),
        "fallback": row["fallback"],
        "stopped_by": row["stopped_by"],
        "url": f"/v1/tasks/{row['id']}",
    }


@get("/v1/tasks/{task_id:str}")
async def task_receipt(request: Request[Any, Any, State], task_id: str) -> dict[str, Any]:
    """The task's receipt: calls, tokens, cost per bucket, retries, fallbacks, what stopped it."""
    key = await _owned(request, task_id)
    return await task_view(request.app.state.pool, key.account_id, task_id)


async def task_view(pool: asyncpg.Pool, account_id: str, task_id: str) -> dict[str, Any]:
    """The receipt of a task the caller already knows ``account_id`` owns."""
    task = await ls.ledger_task(pool, task_id, account_id)
    budgets = await ls.budgets(pool, account_id, task_id)
    receipts = await ls.task_receipts(pool, account_id, task_id)
    return summarize(task_id, task, budgets, receipts)


@post("/v1/tasks/{task_id:str}/close", status_code=202)
async def close_task(request: Request[Any, Any, State], task_id: str) -> dict[str, Any]:
    """Close a task: further calls are refused; in-flight calls settle normally."""
    key = await _owned(request, task_id)
    return await close_task_for(request, key, task_id)


async def close_task_for(
    request: Request[Any, Any, State], key: KeyInfo, task_id: str
) -> dict[str, Any]:
    """Publish ``TaskClosed`` for a task of ``key``'s account (ownership checked by the caller)."""
    await publish_request(
        request.app.state.producer,
        key.account_id,
        make(TaskClosed(task_id=task_id, account_id=key.account_id), trace=Trace(task_id=task_id)),
        "Closing is idempotent: send it again.",
    )
    return {"id": task_id, "object": "task", "status": "closing"}


def summarize(
    task_id: str,
    task: dict[str, Any] | None,
    budgets: list[dict[str, Any]],
    receipts: list[dict[str, Any]],
) -> dict[str, Any]:
    """Fold a task's receipts into its own receipt (pure)."""
    cost: dict[str, dict[str, Any]] = {}
    statuses: dict[str, int] = defaultdict(int)
    tokens = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    for r in receipts:
        statuses[r["status"]] += 1
        if r.get("charged_micro"):
            entry = cost.setdefault(
                r["bucket"], {"unit": r["unit"], "charged_micro": 0, "calls": 0}
            )
            entry["charged_micro"] += r["charged_micro"]
            entry["calls"] += 1
        usage = r.get("usage") or {}
        tokens["input_tokens"] += usage.get("input_tokens", 0)
        tokens["output_tokens"] += usage.get("output_tokens", 0)
    tokens["total_tokens"] = tokens["input_tokens"] + tokens["output_tokens"]
    return {
        "id": task_id,
        "object": "task",
        "status": "opening" if task is None else task["status"],
        "name": None if task is None else task["name"],
        "route_types": None if task is None else list(task["route_types"]),
        "fallback": None if task is None else task["fallback"],
        "stopped_by": None if task is None else task["stopped_by"],
        "budgets": [_budget_view(b) for b in budgets],
        "calls": len(receipts),
        "calls_by_status": dict(statuses),
        "tokens": tokens,
        "cost": cost,
        "retries": sum(r.get("retries", 0) for r in receipts),
        "fallbacks": sum(1 for r in receipts if r.get("fallback")),
        "limits_hit": sorted({r["limit"] for r in receipts if r.get("limit")}),
    }


def _budget_view(b: dict[str, Any]) -> dict[str, Any]:
    return {
        "bucket": b["bucket"],
        "unit": b["unit"],
        "amount_micro": b["amount"],
        "spent_micro": b["spent"],
        "held_micro": b["held"],
        "remaining_micro": max(b["amount"] - b["spent"] - b["held"], 0),
    }
