"""Driving the dashboard over plain HTTP: a cookie-keeping client, CSRF tokens, sign-ins."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN

CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')
ERROR_MESSAGE = re.compile(r'class="error-message">([^<]*)<')


def ui_client(stack: Any) -> httpx.Client:
    """A browser-like client: keeps cookies, does not follow redirects (tests look at them)."""
    return httpx.Client(base_url=stack.edge_url, timeout=30, follow_redirects=False)


def csrf_token(client: httpx.Client, page: str) -> str:
    """The CSRF token of the form on ``page`` (GET sets the cookie it is checked against)."""
    response = client.get(page)
    assert response.status_code == 200, response.text[:500]
    found = CSRF_FIELD.search(response.text)
    assert found, f"no CSRF field on {page}"
    return found.group(1)


def post_form(client: httpx.Client, page: str, action: str, **fields: str) -> httpx.Response:
    """Submit the form ``action`` as a browser would from ``page``."""
    return client.post(action, data={"_csrf_token": csrf_token(client, page), **fields})


def login_user(client: httpx.Client, api_key: str) -> httpx.Response:
    """Sign in with an API key."""
    return post_form(client, "/ui/login", "/ui/login", api_key=api_key)


def login_operator(
    client: httpx.Client, token: str = ADMIN_TOKEN, name: str = "alice"
) -> httpx.Response:
    """Sign in with the admin token."""
    return post_form(client, "/ui/admin/login", "/ui/admin/login", admin_token=token, name=name)


def error_message(response: httpx.Response) -> str:
    """The message an error page shows."""
    found = ERROR_MESSAGE.search(response.text)
    return found.group(1) if found else ""
