"""Re-rating past charges under ``/admin/v1/rerates`` (admin token): dry run, apply, follow.

    POST /rerates                    dry_run: what it would book; else apply (202)
    GET  /rerates/{correction_id}    the request, the accounts, and the ledger's outcome of each

An operator corrects a channel's sell price for a past period: the charges of ``channel_id`` in
``bucket`` settled in ``[from, to)`` are re-rated at ``prices`` (decimal strings per 1M tokens
of each class, parsed by ``parse_amount``). Nothing is written here: the edge enumerates the
accounts with such charges (in id order, from the ledger's read model) and publishes one
``RerateRequested`` per account on gw.requests, keyed by the account, so each account's
partition has one writer; the ledger chooses the account's charges itself at the command's
place in the log (:mod:`tollway.ledger.rerating`), which a replay repeats. The accounts are
fixed when the correction is first applied (``edge.rerate_requests``): the same id and body
answers the original 202 again, re-sending the very same commands if the log never confirmed
them, and another body under a used id is a 409 ``idempotency_key_reused`` with the original.

A dry run and the ledger decide with the same function (:mod:`tollway.ledger.rerate`) on the
same rows, so the dry run's figures are what the apply books while no new charge of the period
arrives. An account the correction would take below zero (its available balance, holds
excluded) is flagged; applying skips it (the ledger journals ``balance_below_owed``) unless
``allow_negative`` is ``true`` or lists it. ``side: "cost"`` re-rates what upstreams cost the
operator (``cost`` instead of ``bucket`` and ``prices``; :mod:`tollway.edge.cost_rerates`),
recorded, fingerprinted and published the same way.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson
from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from pydantic import BaseModel, ConfigDict, Field

from tollway.edge import audit, cost_rerates, errors
from tollway.edge.admin_auth import require_admin
from tollway.edge.listing import refuse_nul
from tollway.edge.publish import publish_request
from tollway.edge.route_tree import CostPrices, Prices
from tollway.events.envelope import Envelope, decode, encode, make
from tollway.events.gateway import RerateRequested
from tollway.events.pricing import BUCKET_PATTERN, Price, format_micro
from tollway.ledger import rerate, rerate_store

if TYPE_CHECKING:
    from collections.abc import Callable

    import asyncpg

TEXT = r"^[^\x00]*$"  # Postgres text cannot hold NUL
RETRY = "Retry with the same correction id: it is applied at most once per account."
INSERT = """
INSERT INTO edge.rerate_requests (correction_id, fingerprint, request, preview, envelopes)
VALUES ($1, $2, $3::jsonb, $4::jsonb, $5::text[])
ON CONFLICT (correction_id) DO NOTHING
RETURNING correction_id
"""
SELECT = """
SELECT fingerprint, request, preview, envelopes, published_at, audit_id
FROM edge.rerate_requests WHERE correction_id = $1
"""
MARK_PUBLISHED = """
UPDATE edge.rerate_requests SET published_at = now(), audit_id = $2
WHERE correction_id = $1 AND published_at IS NULL
"""


class NewRerate(BaseModel):
    """Re-rate a channel's charges in a bucket, settled in ``[from, to)``, at ``prices``.

    ``side: "cost"``: re-rate the channel's booked upstream costs of attempts in ``[from, to)``
    at ``cost`` (no ``bucket``, ``prices`` or ``allow_negative``: no tenant account moves).
    """

    model_config = ConfigDict(populate_by_name=True)

    correction_id: str = Field(min_length=1, max_length=200, pattern=TEXT)
    side: Literal["sell", "cost"] = "sell"
    channel_id: str = Field(min_length=1, max_length=200, pattern=TEXT)
    bucket: str | None = Field(default=None, pattern=BUCKET_PATTERN)
    period_from: str = Field(alias="from", max_length=64)
    period_to: str = Field(alias="to", max_length=64)
    prices: Prices | None = None
    cost: CostPrices | None = None
    reason: str = Field(min_length=1, max_length=500, pattern=TEXT)
    dry_run: bool = False
    # True: every account may go below zero; a list: those accounts only.
    allow_negative: bool | list[str] = False
    # Only these accounts (default: every account with matching charges).
    accounts: list[str] | None = Field(default=None, max_length=10_000)


def _instant(value: str, param: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise errors.InvalidRequestError(
            f"'{param}' must be an ISO 8601 instant, like 2026-01-31T00:00:00Z.", param=param
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _period(data: NewRerate) -> tuple[datetime, datetime]:
    start, end = _instant(data.period_from, "from"), _instant(data.period_to, "to")
    if start >= end:
        raise errors.InvalidRequestError("'to' must be after 'from'.", param="to")
    if end > datetime.now(UTC):
        raise errors.InvalidRequestError(
            "'to' is in the future: re-rate a period that has ended.", param="to"
        )
    return start, end


def _need(value: object, param: str, side: str) -> None:
    if value is None:
        raise errors.InvalidRequestError(f"The {side} side needs '{param}'.", param=param)


def _refuse_for_cost(data: NewRerate) -> None:
    """The cost side moves no tenant account: the sell side's fields have no meaning there."""
    for param, given in (
        ("bucket", data.bucket is not None),
        ("prices", data.prices is not None),
        ("allow_negative", data.allow_negative is not False),
    ):
        if given:
            raise errors.InvalidRequestError(
                f"'{param}' is for the sell side; the cost side takes 'cost' (the corrected cost"
                " price) and moves no tenant account.",
                param=param,
            )


def _selection(data: NewRerate) -> rerate.Selection:
    _need(data.bucket, "bucket", "sell")
    _need(data.prices, "prices", "sell")
    start, end = _period(data)
    return rerate.Selection(data.channel_id, data.bucket or "", start, end)


def _price(data: NewRerate) -> Price:
    assert data.prices is not None  # checked by _selection
    return Price.model_validate(data.prices.micro())


def _allowed(data: NewRerate, account_id: str) -> bool:
    if isinstance(data.allow_negative, bool):
        return data.allow_negative
    return account_id in data.allow_negative


def _view(data: NewRerate, sel: rerate.Selection, price: Price) -> dict[str, Any]:
    """The request as recorded and fingerprinted (``dry_run`` aside)."""
    return {
        "correction_id": data.correction_id,
        "side": data.side,
        "channel_id": data.channel_id,
        "bucket": data.bucket,
        "from": sel.start.isoformat(),
        "to": sel.end.isoformat(),
        "prices_per_1m_micro": price.model_dump(),
        "reason": data.reason,
        "allow_negative": data.allow_negative,
        "accounts": data.accounts,
    }


def _fingerprint(view: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(view, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _money(name: str, micro: int) -> dict[str, Any]:
    return {f"{name}_micro": micro, name: format_micro(micro)}


def account_view(plan: rerate.AccountPlan, *, allowed: bool) -> dict[str, Any]:
    """One account's figures: requests, charged, re-rated, difference, the balance it leaves."""
    return {
        "account_id": plan.account_id,
        "bucket": plan.bucket,
        "unit": plan.unit,
        "requests": len(plan.lines),
        "changed": len(plan.changed),
        "skipped": [{"request_id": s.request_id, "code": s.code} for s in plan.skipped],
        **_money("charged", plan.charged),
        **_money("rerated", plan.rerated),
        **_money("difference", plan.difference),
        **_money("available", plan.available),
        **_money("balance_after", plan.balance_after),
        "flagged": plan.overdraws,
        "code": rerate.BALANCE_BELOW_OWED if plan.overdraws else None,
        "will_apply": not plan.overdraws or allowed,
    }


def _totals(accounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    units: dict[str, dict[str, int]] = {}
    for a in accounts:
        t = units.setdefault(a["unit"] or "", {"requests": 0, "charged": 0, "rerated": 0})
        t["requests"] += a["requests"]
        t["charged"] += a["charged_micro"]
        t["rerated"] += a["rerated_micro"]
    return [
        {
            "unit": unit,
            "requests": t["requests"],
            **_money("charged", t["charged"]),
            **_money("rerated", t["rerated"]),
            **_money("difference", t["rerated"] - t["charged"]),
        }
        for unit, t in sorted(units.items())
    ]


async def preview(
    pool: asyncpg.Pool, sel: rerate.Selection, price: Price, only: list[str] | None = None
) -> list[rerate.AccountPlan]:
    """Each matched account's plan (``only``: of these accounts), in one snapshot of the ledger."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        found = await rerate_store.accounts(conn, sel)
        if only is not None:
            wanted = set(only)
            found = [a for a in found if a in wanted]
        return [await rerate_store.plan(conn, a, sel, price) for a in found]


def _answer(view: dict[str, Any], accounts: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        **view,
        "accounts": accounts,
        "totals": _totals(accounts),
        "flagged_accounts": [a["account_id"] for a in accounts if a["flagged"]],
        **extra,
    }


def status_url(correction_id: str) -> str:
    """Where a re-rating's outcome per account is reported."""
    return f"/admin/v1/rerates/{correction_id}"


async def request_rerate(request: Request[Any, Any, Any], data: NewRerate) -> Response[Any]:
    """Dry run (200) or apply (202): see the module docstring."""
    if data.side == "cost":
        return await request_cost_rerate(request, data)
    sel = _selection(data)
    price = _price(data)
    view = _view(data, sel, price)
    pool: asyncpg.Pool = request.app.state.pool
    if not data.dry_run:
        known = await _replayed(request, data.correction_id, view)
        if known is not None:
            return Response(known, status_code=202)
    plans = await preview(pool, sel, price, data.accounts)
    accounts = [account_view(p, allowed=_allowed(data, p.account_id)) for p in plans]
    if data.dry_run:
        return Response(_answer(view, accounts, dry_run=True), status_code=200)
    envelopes = [_command(request, data, p, sel, price) for p in plans]
    return await _record_and_publish(request, view, accounts, envelopes)


async def request_cost_rerate(request: Request[Any, Any, Any], data: NewRerate) -> Response[Any]:
    """The cost side: dry run (200) or apply (202), recorded and published like the sell side's."""
    _refuse_for_cost(data)
    _need(data.cost, "cost", "cost")
    assert data.cost is not None  # checked above
    cost = cost_rerates.cost_price(data.cost)
    sel = cost_rerates.selection(data.channel_id, *_period(data))
    view = cost_rerates.view(data, sel, cost)
    pool: asyncpg.Pool = request.app.state.pool
    if not data.dry_run:
        known = await _replayed(request, data.correction_id, view)
        if known is not None:
            return Response(known, status_code=202)
    plans = await cost_rerates.preview(pool, sel, cost, data.accounts)
    cost_rerates.refuse_currency(plans, cost)
    accounts = [cost_rerates.account_view(p) for p in plans]
    if data.dry_run:
        return Response(cost_rerates.answer(view, accounts, dry_run=True), status_code=200)
    actor = audit.actor_of(request)
    envelopes = [cost_rerates.command(data, p, sel, cost, actor) for p in plans]
    return await _record_and_publish(request, view, accounts, envelopes)


async def _record_and_publish(
    request: Request[Any, Any, Any],
    view: dict[str, Any],
    accounts: list[dict[str, Any]],
    envelopes: list[Envelope[Any]],
) -> Response[Any]:
    row = (view["correction_id"], _fingerprint(view), orjson.dumps(view).decode())
    texts = [encode(e).decode() for e in envelopes]
    pool: asyncpg.Pool = request.app.state.pool
    if await pool.fetchval(INSERT, *row, orjson.dumps(accounts).decode(), texts) is None:
        raced = await _replayed(request, view["correction_id"], view)  # the same id, concurrently
        if raced is not None:
            return Response(raced, status_code=202)
    answer = await _publish(request, view, accounts, envelopes)
    return Response(answer, status_code=202)


def _answer_of(view: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    """How a recorded request's answer is drawn: the cost side's figures or the sell side's."""
    return cost_rerates.answer if view.get("side") == "cost" else _answer


def _command(
    request: Request[Any, Any, Any],
    data: NewRerate,
    plan: rerate.AccountPlan,
    sel: rerate.Selection,
    price: Price,
) -> Envelope[RerateRequested]:
    return make(
        RerateRequested(
            account_id=plan.account_id,
            correction_id=data.correction_id,
            side=data.side,
            channel_id=sel.channel_id,
            bucket=sel.bucket,
            period_from=sel.start,
            period_to=sel.end,
            prices=price,
            reason=data.reason,
            allow_negative=_allowed(data, plan.account_id),
            actor=audit.actor_of(request),
        )
    )


async def _replayed(
    request: Request[Any, Any, Any], correction_id: str, view: dict[str, Any]
) -> dict[str, Any] | None:
    """The answer to an id already recorded (409 for another body), or None for a new id."""
    row = await request.app.state.pool.fetchrow(SELECT, correction_id)
    if row is None:
        return None
    if row["fingerprint"] != _fingerprint(view):
        raise errors.ConflictError(
            f"Correction id '{correction_id}' was used for another re-rating; 'original' is that"
            " request. Use a new id for a new correction.",
            param="correction_id",
            code=rerate.KEY_REUSED,
            details={"original": orjson.loads(row["request"])},
        )
    accounts: list[dict[str, Any]] = orjson.loads(row["preview"])
    envelopes = [decode(t.encode()) for t in row["envelopes"]]
    if row["published_at"] is not None:
        return _answer_of(view)(
            view,
            accounts,
            status="accepted",
            status_url=status_url(correction_id),
            audit_id=row["audit_id"],
            commands=[_command_ref(e) for e in envelopes],
        )
    # Recorded, never confirmed by the log: send the very same commands again (applied once).
    return await _publish(request, view, accounts, envelopes)


def _command_ref(env: Envelope[Any]) -> dict[str, str]:
    return {"account_id": env.payload.account_id, "event_id": env.id}


async def _publish(
    request: Request[Any, Any, Any],
    view: dict[str, Any],
    accounts: list[dict[str, Any]],
    envelopes: list[Envelope[Any]],
) -> dict[str, Any]:
    async def send() -> None:
        for env in envelopes:
            await publish_request(request.app.state.producer, env.payload.account_id, env, RETRY)

    commands = [_command_ref(e) for e in envelopes]
    change = audit.Change(
        "ledger.rerate",
        f"{view['channel_id']}/{view.get('bucket') or 'cost'}",  # the cost side has no bucket
        None,
        after=view | {"accounts": accounts, "commands": commands, "status": "accepted"},
    )
    pool: asyncpg.Pool = request.app.state.pool
    audit_id = await audit.published(pool, audit.actor_of(request), change, send)
    await pool.execute(MARK_PUBLISHED, view["correction_id"], audit_id)
    return _answer_of(view)(
        view,
        accounts,
        status="accepted",
        status_url=status_url(view["correction_id"]),
        audit_id=audit_id,
        commands=commands,
    )


async def rerate_status(pool: asyncpg.Pool, correction_id: str) -> dict[str, Any]:
    """The request, and per account: pending, applied (with its figures) or refused (and why)."""
    refuse_nul(correction_id=correction_id)
    row = await pool.fetchrow(SELECT, correction_id)
    if row is None:
        raise errors.NotFoundError(
            f"No re-rating '{correction_id}'.", param="correction_id", code="rerate_not_found"
        )
    outcomes = []
    async with pool.acquire() as conn:
        for text in row["envelopes"]:
            env = decode(text.encode())
            found = await rerate_store.outcome(conn, env.id)
            outcomes.append(_outcome(env, found))
    pending = any(o["status"] == "pending" for o in outcomes)
    return {
        "correction_id": correction_id,
        "request": orjson.loads(row["request"]),
        "status": "pending" if pending or row["published_at"] is None else "done",
        "audit_id": row["audit_id"],
        "accounts": outcomes,
    }


def _outcome(env: Envelope[Any], found: dict[str, Any] | None) -> dict[str, Any]:
    base = _command_ref(env)
    if found is None:
        return base | {"status": "pending"}
    p = found["payload"]
    if found["type"] == cost_rerates.APPLIED_TYPE:
        return base | cost_rerates.outcome(p)
    if found["type"] != "ledger.rerate_applied":
        return base | {"status": "refused", "code": p.get("code") or None, "reason": p["reason"]}
    return base | {
        "status": "applied",
        "requests": p["requests"],
        "changed": p["changed"],
        "skipped": p["skipped"],
        **_money("charged", p["charged_micro"]),
        **_money("rerated", p["rerated_micro"]),
        **_money("difference", p["difference_micro"]),
        **_money("balance_after", p["balance_after_micro"]),
    }


class RerateController(Controller):
    """Re-rate past charges and follow a re-rating; every endpoint needs the admin token."""

    path = "/admin/v1/rerates"
    tags = ["ledger"]  # noqa: RUF012
    dependencies = {"_admin": Provide(require_admin, sync_to_thread=False)}  # noqa: RUF012

    @post("/")
    async def create(
        self, request: Request[Any, Any, Any], data: NewRerate, _admin: None
    ) -> Response[Any]:
        """``dry_run: true``: what it would book (200); else book it once per id (202)."""
        return await request_rerate(request, data)

    @get("/{correction_id:str}")
    async def status(
        self, request: Request[Any, Any, Any], correction_id: str, _admin: None
    ) -> dict[str, Any]:
        """``pending`` until the ledger decided every account, then ``done`` with each outcome."""
        return await rerate_status(request.app.state.pool, correction_id)
