"""The dashboard under ``/ui``: server-rendered pages for users and operators.

Everything it needs ships in this package: Jinja2 templates, one CSS file and one small script
for the live parts (channel health, breakers, alerts, research progress), charts drawn as inline
SVG on the server. Nothing is fetched from another site at run time.

    /ui/login, /ui/logout            users sign in with an API key
    /ui/, /ui/usage, /ui/requests[/{id}], /ui/keys, /ui/tasks[/{id}], /ui/research[/{id}]
    /ui/admin/login                  operators sign in with the admin token
    /ui/admin/routes, /margins, /alerts, /breakers, /accounts[/{id}], /whatif

Every form carries a CSRF token (Litestar's double-submit cookie, signed with
``TOLLWAY_EDGE_UI_SECRET``); a POST without it is refused with 403 before any handler runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import structlog
from litestar import Request, Response, Router
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import Cookie, ResponseHeader
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from tollway.edge import errors
from tollway.edge.ui import login, present
from tollway.edge.ui.alerts import AlertFeed
from tollway.edge.ui.guards import LoginRequiredError
from tollway.edge.ui.operator_pages import OperatorPages
from tollway.edge.ui.research import ResearchClient
from tollway.edge.ui.sessions import COOKIE_PATH, SessionStore
from tollway.edge.ui.user_pages import UserPages
from tollway.edge.ui.whatif_page import WhatIfPage
from tollway.edge.ui.work_pages import WorkPages

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar import Litestar

    from tollway.edge.settings import EdgeSettings

log = structlog.get_logger(__name__)
HERE = Path(__file__).parent
CSRF_COOKIE = "tollway_csrf"
# Only this site's own files run or load; no other site may frame a page (clickjacking); pages
# (a new key's secret among them) are not cached.
HEADERS = [
    ResponseHeader(
        name="content-security-policy",
        value="default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none';"
        " form-action 'self'; frame-ancestors 'none'",
    ),
    ResponseHeader(name="x-frame-options", value="DENY"),
    ResponseHeader(name="x-content-type-options", value="nosniff"),
    ResponseHeader(name="referrer-policy", value="same-origin"),
    ResponseHeader(name="cache-control", value="no-store"),
]


def csrf_secret(settings: EdgeSettings) -> str:
    """The key that signs CSRF tokens.

    The configured one, else one derived from the admin token (so every instance and restart
    agrees), else a random one for this process.
    """
    if settings.ui_secret:
        return settings.ui_secret
    if settings.admin_token:
        label = b"tollway-ui-csrf"
        return hmac.new(settings.admin_token.encode(), label, hashlib.sha256).hexdigest()
    return secrets.token_hex(32)


def _filters(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters.update(money=present.money, number=present.number, when=present.when)


TEMPLATES = TemplateConfig(
    directory=HERE / "templates", engine=JinjaTemplateEngine, engine_callback=_filters
)


def _error_page(status: int, message: str) -> Template:
    title = {401: "Not signed in", 403: "Refused", 404: "Not found"}.get(status, "Error")
    return Template(
        template_name="error.html",
        context={"session": None, "status": status, "title": title, "message": message},
        status_code=status,
    )


def _to_login(_: Request[Any, Any, Any], exc: LoginRequiredError) -> Response[Any]:
    return Redirect(path=f"{exc.login}?next={quote(exc.next_path, safe='/')}", status_code=303)


def _gateway_error(_: Request[Any, Any, Any], exc: errors.GatewayError) -> Response[Any]:
    return _error_page(exc.status, exc.message)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    message = exc.detail if isinstance(exc.detail, str) else "The request was not accepted."
    if exc.status_code == 403 and "CSRF" in message:
        page = _error_page(
            403,
            "The form's security token is missing or stale (CSRF check). Reload the page and"
            " submit it again.",
        )
        # A cookie signed with an older secret is never replaced by the middleware: drop it, so
        # the reload gets a fresh one.
        page.cookies.append(
            Cookie(key=CSRF_COOKIE, value="", path=COOKIE_PATH, max_age=0, samesite="strict")
        )
        return page
    return _error_page(exc.status_code, message)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    request_id = request.scope.get("state", {}).get("request_id")
    log.error("ui_unhandled_error", path=request.url.path, error=type(exc).__name__, exc_info=exc)
    return _error_page(500, f"Something went wrong; quote request id {request_id}.")


def router(settings: EdgeSettings) -> Router:
    """Every dashboard route, behind the CSRF check and with HTML error pages."""
    csrf = CSRFConfig(
        secret=csrf_secret(settings),
        cookie_name=CSRF_COOKIE,
        cookie_path=COOKIE_PATH,
        cookie_httponly=True,
        cookie_samesite="strict",
        cookie_secure=settings.ui_cookie_secure,
    )
    static = create_static_files_router(
        path="/ui/static", directories=[HERE / "static"], include_in_schema=False
    )
    return Router(
        path="/",
        route_handlers=[*login.ROUTES, UserPages, WorkPages, OperatorPages, WhatIfPage, static],
        middleware=[DefineMiddleware(CSRFMiddleware, config=csrf)],
        response_headers=HEADERS,
        exception_handlers={
            LoginRequiredError: _to_login,
            errors.GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        include_in_schema=False,
    )


@contextlib.asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    """The dashboard's resources, after the edge's own (it uses their pool)."""
    settings: EdgeSettings = app.state.settings
    research = ResearchClient(settings.researcher_url)
    feed = AlertFeed(settings.kafka_bootstrap_servers)
    app.state.update(
        ui_sessions=SessionStore(app.state.pool, settings.ui_session_hours),
        ui_research=research,
        ui_alerts=feed,
    )
    try:
        yield
    finally:
        await feed.stop()
        await research.aclose()
