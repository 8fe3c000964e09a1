"""The operator's dashboard pages.

The route tree with live health, margins, alerts, breakers, budgets, accounts and top-ups.

Reads use the admin API's own stores (route tree, breaker board, budgets, tenants, the ledger's
read model); changes call the admin API's own functions (top-ups, account creation, breaker
resets), audited under the operator's session actor (``ui:<name>``) with the same commands,
idempotency keys and confirmations as over ``/admin/v1``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from litestar import Controller, Request, get, post
from litestar.di import Provide
from litestar.params import Parameter

# Litestar reads handler signatures at run time: these types must be importable then.
from litestar.response import (
    Redirect,
    Template,
)
from pydantic import ValidationError

from tollway.edge import (
    admin,
    audit,
    budgets,
    errors,
    limits_admin,
    margins_admin,
    tenants,
    topups,
)
from tollway.edge import limits_store as ls
from tollway.edge.listing import decode_cursor, encode_cursor, refuse_nul
from tollway.edge.ui import present
from tollway.edge.ui.guards import SessionParam, form, operator_session, page
from tollway.events.envelope import utcnow
from tollway.ledger import finance_store, margins

if TYPE_CHECKING:
    from tollway.edge.route_tree import RouteTreeStore
    from tollway.edge.ui.alerts import AlertFeed

ACCOUNTS_PAGE = 50


def _tree(request: Request[Any, Any, Any]) -> RouteTreeStore:
    store: RouteTreeStore = request.app.state.route_tree
    return store


def _feed(request: Request[Any, Any, Any]) -> AlertFeed:
    feed: AlertFeed = request.app.state.ui_alerts
    feed.start()
    return feed


def _invalid(exc: ValidationError) -> errors.InvalidRequestError:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "form"
    return errors.InvalidRequestError(f"{field}: {first['msg']}", param=field)


def _breakers(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    return limits_admin.describe_breakers(request.app.state.breakers.board, utcnow())


class OperatorPages(Controller):
    """Pages of a signed-in operator; each needs an operator session."""

    path = "/ui/admin"
    dependencies = {"session": Provide(operator_session)}  # noqa: RUF012

    @get("/")
    async def home(self, session: SessionParam) -> Redirect:  # noqa: ARG002 - signed in or redirected
        """The route tree is the operator's front page."""
        return Redirect(path="/ui/admin/routes", status_code=303)

    @get("/routes")
    async def routes(self, request: Request[Any, Any, Any], session: SessionParam) -> Template:
        """Channel type → brand → channel → routed models, and each model's primary/backup order."""
        tree = await _tree(request).tree()
        return page("routes.html", session, nav="routes", tree=tree)

    @get("/routes.json")
    async def routes_live(
        self,
        request: Request[Any, Any, Any],
        session: SessionParam,  # noqa: ARG002 - signed in, or redirected to the login
    ) -> dict[str, Any]:
        """Each channel's circuit state, for the live route tree."""
        tree = await _tree(request).tree()
        health = {
            c["id"]: c["health"]
            for rt in tree["route_types"]
            for b in rt["brands"]
            for c in b["channels"]
        }
        return {"channels": health}

    @get("/channels/{channel_id:str}")
    async def channel(
        self, request: Request[Any, Any, Any], session: SessionParam, channel_id: str
    ) -> Template:
        """A channel's circuit transitions, newest first."""
        refuse_nul(channel_id=channel_id)
        history = await _tree(request).health_history(channel_id)
        return page("channel.html", session, nav="routes", channel_id=channel_id, history=history)

    @get("/margins")
    async def margins(
        self,
        request: Request[Any, Any, Any],
        session: SessionParam,
        group_by: str = "channel",
        from_: str | None = Parameter(query="from", default=None),
        to: str | None = None,
    ) -> Template:
        """Revenue against upstream cost per group, as ``GET /admin/v1/margins`` reports it."""
        refuse_nul(group_by=group_by, from_=from_, to=to)
        groups = margins_admin.parse_groups(group_by)
        start, end = margins_admin.window(from_ or None, to or None)
        rows = await margins_admin.margin_report(request, groups, start, end)
        views = [margins_admin.row_view(r) for r in rows]
        total = margins_admin.row_view(margins.total(rows))
        return page(
            "margins.html",
            session,
            nav="margins",
            rows=views,
            total=total,
            group_by=groups,
            group_keys=list(margins.GROUPS),
            start=start,
            end=end,
            csv_query=urlencode(
                {"group_by": ",".join(groups), "from": start.isoformat(), "to": end.isoformat()}
            ),
            charts=present.margin_charts(groups, views),
        )

    @get("/receipt")
    async def receipt_lookup(
        self,
        session: SessionParam,  # noqa: ARG002 - signed in, or redirected to the login
        request_id: str = "",
    ) -> Redirect:
        """The receipt form's target: on to the receipt's operator page."""
        refuse_nul(request_id=request_id)
        return Redirect(path=f"/ui/admin/receipts/{quote(request_id.strip(), safe='')}")

    @get("/receipts/{request_id:str}")
    async def receipt(
        self, request: Request[Any, Any, Any], session: SessionParam, request_id: str
    ) -> Template:
        """A receipt of any account with each attempt's upstream cost and margin."""
        refuse_nul(request_id=request_id)
        async with request.app.state.pool.acquire() as conn:
            found = await margins.operator_receipt(conn, request_id)
        if found is None:
            raise errors.NotFoundError(f"No receipt '{request_id}' (yet).", param="request_id")
        receipt = margins_admin.costed_receipt(*found)
        return page("operator_receipt.html", session, nav="margins", receipt=receipt)

    @get("/alerts")
    async def alerts(self, request: Request[Any, Any, Any], session: SessionParam) -> Template:
        """The live alert feed."""
        return page("alerts.html", session, nav="alerts", alerts=_feed(request).latest())

    @get("/alerts.json")
    async def alerts_live(
        self,
        request: Request[Any, Any, Any],
        session: SessionParam,  # noqa: ARG002 - signed in, or redirected to the login
    ) -> dict[str, Any]:
        """The newest alerts, for the live feed."""
        feed = _feed(request)
        return {"reading": feed.reading, "alerts": feed.latest()}

    @get("/breakers")
    async def breakers(self, request: Request[Any, Any, Any], session: SessionParam) -> Template:
        """Every velocity breaker's latest record; open ones can be reset."""
        return page("breakers.html", session, nav="breakers", breakers=_breakers(request))

    @get("/breakers.json")
    async def breakers_live(
        self,
        request: Request[Any, Any, Any],
        session: SessionParam,  # noqa: ARG002 - signed in, or redirected to the login
    ) -> dict[str, Any]:
        """Each breaker's key and whether it is open, for the live page."""
        return {"breakers": [{"key": b["key"], "open": b["open"]} for b in _breakers(request)]}

    @post("/breakers/reset")
    async def reset(self, request: Request[Any, Any, Any], session: SessionParam) -> Redirect:
        """Close an open breaker, exactly as ``POST /admin/v1/breakers/reset`` does."""
        fields = await form(request)
        try:
            data = limits_admin.ResetBreaker(
                scope=fields.get("scope", ""),
                scope_id=fields.get("scope_id", ""),
            )
        except ValidationError as exc:
            raise _invalid(exc) from None
        await limits_admin.reset_breaker(request, data, actor=session.actor)
        return Redirect(path="/ui/admin/breakers", status_code=303)

    @get("/accounts")
    async def accounts(
        self, request: Request[Any, Any, Any], session: SessionParam, cursor: str | None = None
    ) -> Template:
        """Accounts, newest first."""
        rows = await tenants.accounts(request.app.state.pool, decode_cursor(cursor), ACCOUNTS_PAGE)
        more = len(rows) == ACCOUNTS_PAGE
        return page(
            "accounts.html",
            session,
            nav="accounts",
            accounts=[a for _, _, a in rows],
            next_cursor=encode_cursor(rows[-1][0], rows[-1][1]) if rows and more else None,
        )

    @post("/accounts")
    async def create_account(
        self, request: Request[Any, Any, Any], session: SessionParam
    ) -> Redirect:
        """Open an account (with its default project), audited like the admin API."""
        fields = await form(request)
        try:
            data = admin.NewAccount(name=fields.get("name", ""), id=fields.get("id") or None)
        except ValidationError as exc:
            raise _invalid(exc) from None
        created = await admin.create_account(request, data, actor=session.actor)
        return Redirect(path=f"/ui/admin/accounts/{created['id']}", status_code=303)

    @get("/accounts/{account_id:str}")
    async def account(
        self, request: Request[Any, Any, Any], session: SessionParam, account_id: str
    ) -> Template:
        """An account: ledger balances, budgets, a top-up form and its audit trail."""
        refuse_nul(account_id=account_id)
        pool = request.app.state.pool
        found = await tenants.account(pool, account_id)
        async with pool.acquire() as conn:
            balances = await finance_store.current_balances(conn, account_id)
        rows = await ls.budgets(pool, account_id)
        trail = await audit.page(pool, audit.AuditQuery(account_id=account_id, limit=30))
        return page(
            "account.html",
            session,
            nav="accounts",
            account=found,
            balances=balances,
            budgets=[budgets.row_view(r) for r in rows],
            units=await ls.bucket_units(pool, account_id),
            audit=trail,
            # A fresh idempotency key per rendered form: a double submit is applied once.
            idempotency_key=f"ui-{uuid.uuid4()}",
        )

    @post("/accounts/{account_id:str}/topups")
    async def topup(
        self, request: Request[Any, Any, Any], session: SessionParam, account_id: str
    ) -> Redirect:
        """Request a top-up through the admin API's own path (the ledger applies it once)."""
        fields = await form(request)
        try:
            data = topups.NewTopUp(
                account_id=account_id,
                bucket=fields.get("bucket", ""),
                unit=fields.get("unit", ""),
                amount=fields.get("amount", ""),
                idempotency_key=fields.get("idempotency_key", ""),
                reason=fields.get("reason", ""),
            )
        except ValidationError as exc:
            raise _invalid(exc) from None
        await topups.request_topup(request, data, actor=session.actor)
        return Redirect(path=f"/ui/admin/accounts/{account_id}?topup=accepted", status_code=303)
