"""A user's dashboard: balances and ledger entries, usage over time, requests and receipts, keys.

Every read goes through the same store functions as ``/v1`` self-service, scoped to the session's
account, so another account's receipt or key is "not found" here exactly as it is over the API.
Key changes go through the admin API's own functions (audited with the actor ``user:<key id>``);
a key made here can never do more than the key its maker signed in with.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import orjson
from litestar import Controller, Request, get, post
from litestar.di import Provide

# Litestar reads handler signatures at run time: these types must be importable then.
from litestar.response import Template  # noqa: TC002
from pydantic import ValidationError

from tollway.edge import admin, errors, tenants
from tollway.edge.listing import decode_cursor, encode_cursor, refuse_nul
from tollway.edge.store import ReceiptQuery
from tollway.edge.ui import charts, present
from tollway.edge.ui.guards import SessionParam, form, page, user_session
from tollway.events.ledger import OPERATOR_ONLY
from tollway.ledger import finance_store

if TYPE_CHECKING:
    from tollway.edge.store import EdgeStore
    from tollway.edge.ui.sessions import Session

PAGE = 25
ENTRIES = 15
GROUPS = ("model", "key", "project", "route")
PERIODS = (7, 14, 30)


def _store(request: Request[Any, Any, Any]) -> EdgeStore:
    store: EdgeStore = request.app.state.store
    return store


def _invalid(exc: ValidationError) -> errors.InvalidRequestError:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "form"
    return errors.InvalidRequestError(f"{field}: {first['msg']}", param=field)


async def _names(request: Request[Any, Any, Any], account_id: str) -> dict[str, dict[str, str]]:
    """Readable names of the account's keys and projects, for labels."""
    pool = request.app.state.pool
    keys = await tenants.keys(
        pool, account_id=account_id, project_id=None, status=None, after=None, limit=200
    )
    projects = await tenants.projects(pool, account_id)
    return {
        "key": {k["id"]: f"{k['name'] or k['prefix'] + '…'} ({k['id']})" for _, _, k in keys},
        "project": {p["id"]: f"{p['name']} ({p['id']})" for p in projects},
    }


class UserPages(Controller):
    """Pages of a signed-in user; each needs a user session."""

    path = "/ui"
    dependencies = {"session": Provide(user_session)}  # noqa: RUF012

    @get("/")
    async def overview(self, request: Request[Any, Any, Any], session: SessionParam) -> Template:
        """Balances per bucket and the newest ledger entries."""
        account_id = session.user_key.account_id
        balances = await _store(request).balances(account_id)
        async with request.app.state.pool.acquire() as conn:
            rows = await finance_store.entries(conn, account_id, 2**62, ENTRIES)
        entries = []
        for r in rows:
            if r["type"] in OPERATOR_ONLY:
                continue  # the operator's upstream cost: journaled under the account, not its own
            payload = _payload(r["payload"])
            movements = present.movements(payload, account_id)
            entries.append({**r, "payload": payload, "movements": movements})
        return page("overview.html", session, balances=balances, entries=entries, nav="overview")

    @get("/usage")
    async def usage(
        self,
        request: Request[Any, Any, Any],
        session: SessionParam,
        group_by: Literal["model", "key", "project", "route"] = "model",
        metric: Literal["charged", "tokens", "requests"] = "charged",
        days: int = 14,
    ) -> Template:
        """Usage over time by key, project, model or route, as charts and totals."""
        account_id = session.user_key.account_id
        period = days if days in PERIODS else 14
        today = datetime.now(UTC).date()
        since = datetime.combine(today - timedelta(days=period - 1), datetime.min.time(), UTC)
        store = _store(request)
        rows = await store.usage(account_id, group_by, since, None, per_day=True)
        totals = await store.usage(account_id, group_by, since, None)
        names = (await _names(request, account_id)).get(group_by, {})
        for r in [*rows, *totals]:
            r[group_by] = names.get(r[group_by], r[group_by])
        labels = present.days(today, period)
        short = [label[5:] for label in labels]
        drawn = []
        for (kind, unit), series in sorted(
            present.usage_series(rows, group_by, labels, metric).items()
        ):
            fmt = present.money if kind == "charged" else present.number
            title = {"charged": f"Charged ({unit}) per day", "tokens": "Tokens per day"}.get(
                kind, "Requests per day"
            )
            drawn.append((title, charts.stacked_bars(short, series, title=title, value_format=fmt)))
        return page(
            "usage.html",
            session,
            nav="usage",
            charts=drawn,
            totals=totals,
            group_by=group_by,
            metric=metric,
            days=period,
            groups=GROUPS,
            periods=PERIODS,
        )

    @get("/requests")
    async def requests(  # noqa: PLR0913, PLR0917 - one parameter per filter
        self,
        request: Request[Any, Any, Any],
        session: SessionParam,
        project: str | None = None,
        key: str | None = None,
        model: str | None = None,
        task: str | None = None,
        since: str | None = None,
        until: str | None = None,
        cursor: str | None = None,
    ) -> Template:
        """The request log, newest first, with filters and pages."""
        account_id = session.user_key.account_id
        filters = {"project": project, "key": key, "model": model, "task": task}
        filters = {k: v or None for k, v in filters.items()}
        refuse_nul(**filters, since=since, until=until)
        store = _store(request)
        if not await store.owns(account_id, project_id=filters["project"], key_id=filters["key"]):
            raise errors.NotFoundError("No such project or key for this account.")
        query = ReceiptQuery(
            **filters,
            since=_day(since, "since"),
            until=_day(until, "until", end=True),
            after=decode_cursor(cursor),
            limit=PAGE,
        )
        rows = await store.receipts(account_id, query)
        more = len(rows) == PAGE
        names = await _names(request, account_id)
        return page(
            "requests.html",
            session,
            nav="requests",
            receipts=[body for _, _, body in rows],
            next_cursor=encode_cursor(rows[-1][0], rows[-1][1]) if rows and more else None,
            filters=filters | {"since": since or "", "until": until or ""},
            names=names,
            models=[name for name, _ in await store.catalog()],
        )

    @get("/requests/{request_id:str}")
    async def receipt(
        self, request: Request[Any, Any, Any], session: SessionParam, request_id: str
    ) -> Template:
        """One receipt, with its chain of attempts drawn."""
        refuse_nul(request_id=request_id)
        body = await _store(request).receipt(request_id, session.user_key.account_id)
        if body is None:
            raise errors.NotFoundError(
                f"No receipt '{request_id}' for this account (yet).", code="receipt_not_found"
            )
        balances = await _store(request).balances(session.user_key.account_id)
        units = present.bucket_units(body, balances)
        return page(
            "receipt.html",
            session,
            nav="requests",
            receipt=body,
            chain=present.attempt_chain(body, units),
            units=units,
            hold_unit=present.hold_unit(body, units),
        )

    @get("/keys")
    async def keys(self, request: Request[Any, Any, Any], session: SessionParam) -> Template:
        """The account's API keys."""
        return await _keys_page(request, session, None)

    @post("/keys")
    async def create_key(self, request: Request[Any, Any, Any], session: SessionParam) -> Template:
        """Issue a key like the admin API does; its secret is on this page once."""
        fields = await form(request)
        mine = session.user_key
        try:
            data = admin.NewKey(
                account_id=mine.account_id,
                project_id=fields.get("project_id") or None,
                name=fields.get("name", ""),
                # Never more than the signing-in key may do.
                allowed_models=list(mine.allowed_models) if mine.allowed_models else None,
                route_types=list(mine.route_types),
            )
        except ValidationError as exc:
            raise _invalid(exc) from None
        created = await admin.create_key(request, data, actor=session.actor)
        return await _keys_page(request, session, created)

    @post("/keys/{key_id:str}/revoke")
    async def revoke_key(
        self, request: Request[Any, Any, Any], session: SessionParam, key_id: str
    ) -> Template:
        """Revoke one of the account's keys (another account's key is not found)."""
        refuse_nul(key_id=key_id)
        if not await _store(request).owns(
            session.user_key.account_id, project_id=None, key_id=key_id
        ):
            raise errors.NotFoundError(f"No API key '{key_id}'.", code="key_not_found")
        revoked = await admin.revoke_key(request, key_id, actor=session.actor)
        return await _keys_page(request, session, None, revoked=revoked)


async def _keys_page(
    request: Request[Any, Any, Any],
    session: Session,
    created: dict[str, Any] | None,
    revoked: dict[str, Any] | None = None,
) -> Template:
    account_id = session.user_key.account_id
    pool = request.app.state.pool
    rows = await tenants.keys(
        pool, account_id=account_id, project_id=None, status=None, after=None, limit=200
    )
    return page(
        "keys.html",
        session,
        nav="keys",
        keys=[k for _, _, k in rows],
        projects=await tenants.projects(pool, account_id),
        created=created,
        revoked=revoked,
    )


def _payload(raw: Any) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    return value


def _day(value: str | None, param: str, *, end: bool = False) -> datetime | None:
    """A date or instant from a filter field; a date's end is the next midnight."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise errors.InvalidRequestError(
            f"Invalid value for '{param}': expected a date like 2026-01-31.", param=param
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if end and len(value) == len("2026-01-31"):
        moment += timedelta(days=1)
    return moment
