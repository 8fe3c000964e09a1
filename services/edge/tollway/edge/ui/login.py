"""Signing in and out of the dashboard.

Users sign in with an API key (checked exactly as the client API checks it), operators with the
admin token (compared in constant time) and a name their changes are audited under. Either way
the browser gets a fresh random session id in an HttpOnly, SameSite=Strict cookie scoped to
``/ui``; the key or token is never put in a cookie, a URL or a log line.
"""

from __future__ import annotations

import hmac
import re
from typing import Any

from litestar import Request, get, post
from litestar.datastructures import Cookie
from litestar.response import Redirect, Template

from tollway.edge import errors
from tollway.edge.auth import check_key
from tollway.edge.ui.guards import OPERATOR_LOGIN, USER_LOGIN, form, page, sessions
from tollway.edge.ui.present import safe_next
from tollway.edge.ui.sessions import COOKIE, COOKIE_PATH

ACTOR = re.compile(r"^[A-Za-z0-9 _.@-]{1,60}$")


def _cookie(request: Request[Any, Any, Any], token: str, max_age: int) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=token,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.app.state.settings.ui_cookie_secure,
        max_age=max_age,
    )


def _login_page(template: str, error: str | None, next_path: str, status: int = 200) -> Template:
    response = page(template, None, error=error, next=next_path)
    response.status_code = status
    return response


@get(USER_LOGIN)
async def user_login_form(next: str | None = None) -> Template:  # noqa: A002 - the query name
    """Sign in with an API key."""
    return _login_page("login.html", None, safe_next(next, "/ui/"))


@post(USER_LOGIN)
async def user_login(request: Request[Any, Any, Any]) -> Template | Redirect:
    """Check the key like any client call; on success open a session and go on."""
    fields = await form(request)
    next_path = safe_next(fields.get("next"), "/ui/")
    secret = fields.get("api_key", "")
    if not secret:
        return _login_page("login.html", "Enter your API key.", next_path, status=401)
    try:
        key = await check_key(request.app.state.store, secret)
    except errors.AuthenticationError as exc:
        return _login_page("login.html", exc.message, next_path, status=401)
    store = sessions(request)
    token = await store.open_user(key, secret)
    return Redirect(
        path=next_path, status_code=303, cookies=[_cookie(request, token, store.max_age)]
    )


@get(OPERATOR_LOGIN)
async def operator_login_form(next: str | None = None) -> Template:  # noqa: A002
    """Sign in as an operator with the admin token."""
    return _login_page("operator_login.html", None, safe_next(next, "/ui/admin/"))


@post(OPERATOR_LOGIN)
async def operator_login(request: Request[Any, Any, Any]) -> Template | Redirect:
    """Compare the admin token in constant time; audit the operator under the given name."""
    fields = await form(request)
    next_path = safe_next(fields.get("next"), "/ui/admin/")
    expected: str = request.app.state.admin_token
    given = fields.get("admin_token", "")
    name = fields.get("name") or "operator"
    if not expected:
        return _login_page(
            "operator_login.html",
            "The operator dashboard is disabled: TOLLWAY_ADMIN_TOKEN is not set on the edge.",
            next_path,
            status=503,
        )
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return _login_page("operator_login.html", "That is not the admin token.", next_path, 401)
    if not ACTOR.match(name):
        return _login_page(
            "operator_login.html",
            "Use letters, digits, spaces and . _ @ - for your name (60 at most).",
            next_path,
            400,
        )
    store = sessions(request)
    token = await store.open_operator(f"ui:{name}")
    return Redirect(
        path=next_path, status_code=303, cookies=[_cookie(request, token, store.max_age)]
    )


@post("/ui/logout")
async def logout(request: Request[Any, Any, Any]) -> Redirect:
    """End the session (on every instance) and forget the cookie."""
    store = sessions(request)
    session = await store.get(request.cookies.get(COOKIE))
    target = USER_LOGIN
    if session is not None:
        target = OPERATOR_LOGIN if session.kind == "operator" else USER_LOGIN
        await store.end(session)
    gone = Cookie(key=COOKIE, value="", path=COOKIE_PATH, max_age=0, httponly=True)
    return Redirect(path=target, status_code=303, cookies=[gone])


ROUTES = [user_login_form, user_login, operator_login_form, operator_login, logout]
