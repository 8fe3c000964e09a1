"""Every client error in the client's own format: the OpenAI shape on OpenAI routes, the
Anthropic shape on /v1/messages, with the right status and nothing half-written.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import upstream_calls
from tests.e2e.route_kit import admin_client, new_channel, new_model

pytestmark = pytest.mark.e2e

ROUTES = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    502: "api_error",
    504: "timeout_error",
}


def _body(dialect: str, model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if dialect == "anthropic":
        body["max_tokens"] = 50
    return {**body, **extra}


def _post(stack: Any, dialect: str, key: str | None, **kwargs: Any) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["x-api-key" if dialect == "anthropic" else "authorization"] = (
            key if dialect == "anthropic" else f"Bearer {key}"
        )
    return httpx.post(f"{stack.edge_url}{ROUTES[dialect]}", headers=headers, timeout=40, **kwargs)


def _assert_error(response: httpx.Response, dialect: str, status: int) -> str:
    """The status and the dialect's error shape; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    if dialect == "anthropic":
        assert body["type"] == "error"
        assert body["error"]["type"] == ANTHROPIC_TYPES[status]
        return str(body["error"]["message"])
    # A refusal by a limit names it for machines too (error.limit, OpenRouter's limit_source).
    limit_fields = {"limit", "limit_source", "metadata"} if "limit" in body["error"] else set()
    assert set(body["error"]) == {"message", "type", "param", "code", *limit_fields}
    return str(body["error"]["message"])


DIALECTS = pytest.mark.parametrize("dialect", ["openai", "anthropic"])


@DIALECTS
@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"{not json", "JSON"),
        (b"\xff\xfe{}", "JSON"),
        (b'{"model": "gpt-4o-mini", "messages": [], "max_tokens": 5}', "messages"),
        (
            (
                b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],'
                b' "max_tokens": -1}'
            ),
            "max_tokens",
        ),
        (
            b'{"model": 7, "messages": [{"role": "user", "content": "x"}], "max_tokens": 5}',
            "model",
        ),
    ],
)
def test_bad_bodies_are_400_naming_the_problem(
    stack, tenant_factory, upstream, dialect, content, named
) -> None:
    tenant = tenant_factory({})
    before = upstream_calls(upstream)

    message = _assert_error(_post(stack, dialect, tenant.api_key, content=content), dialect, 400)

    assert named in message
    assert upstream_calls(upstream) == before


def test_messages_without_max_tokens_is_400(stack, tenant_factory) -> None:
    tenant = tenant_factory({})
    body = {"model": "claude-3-5-haiku", "messages": [{"role": "user", "content": "hi"}]}

    message = _assert_error(_post(stack, "anthropic", tenant.api_key, json=body), "anthropic", 400)

    assert "max_tokens" in message


@DIALECTS
@pytest.mark.parametrize("key", [None, "tw-unknown"])
def test_missing_or_unknown_key_is_401(stack, dialect, key) -> None:
    _assert_error(_post(stack, dialect, key, json=_body(dialect)), dialect, 401)


@DIALECTS
def test_empty_bucket_is_402_naming_the_bucket(stack, tenant_factory, dialect) -> None:
    tenant = tenant_factory({})
    message = _assert_error(
        _post(stack, dialect, tenant.api_key, json=_body(dialect)), dialect, 402
    )
    assert "credit" in message


@DIALECTS
def test_model_outside_the_allow_list_is_403(stack, tenant_factory, dialect) -> None:
    tenant = tenant_factory({"credit": "1"}, allowed_models=["claude-3-5-haiku"])
    _assert_error(_post(stack, dialect, tenant.api_key, json=_body(dialect)), dialect, 403)


@DIALECTS
def test_unknown_model_is_404(stack, tenant_factory, dialect) -> None:
    tenant = tenant_factory({"credit": "1"})
    body = _body(dialect, model="no-such-model")
    _assert_error(_post(stack, dialect, tenant.api_key, json=body), dialect, 404)


@DIALECTS
def test_oversized_body_is_413(stack, tenant_factory, dialect) -> None:
    tenant = tenant_factory({})
    huge = _body(dialect, messages=[{"role": "user", "content": "x" * (5 * 1024 * 1024)}])
    _assert_error(_post(stack, dialect, tenant.api_key, json=huge), dialect, 413)


@DIALECTS
@pytest.mark.parametrize("stream", [False, True])
def test_every_route_failing_is_502_listing_the_attempts(
    stack, tenant_factory, upstream, dialect, stream
) -> None:
    tenant = tenant_factory({"credit": "1"})
    with admin_client(stack) as admin:  # fresh channels: their circuits start closed
        primary = new_channel(admin, stack, "openai-direct")
        backup = new_channel(admin, stack, "openai-backup")
        model = new_model(
            admin,
            [
                {"channel_id": primary, "upstream_model": "u", "tier": 0},
                {"channel_id": backup, "upstream_model": "u", "tier": 1},
            ],
        )
    for channel in ("openai-direct", "openai-backup"):
        fault = {"channel": channel, "kind": "status", "status": 500, "count": 2}
        upstream.post("/_control/faults", json=fault).raise_for_status()

    response = _post(stack, dialect, tenant.api_key, json=_body(dialect, model, stream=stream))

    message = _assert_error(response, dialect, 502)
    assert message.count(primary) == 2
    assert message.count(backup) == 2
    assert "upstream request up-" in message


def test_sdks_raise_their_own_status_errors(stack, tenant_factory) -> None:
    tenant = tenant_factory({})
    oa = openai.OpenAI(base_url=f"{stack.edge_url}/v1", api_key=tenant.api_key, max_retries=0)
    an = anthropic.Anthropic(base_url=stack.edge_url, api_key=tenant.api_key, max_retries=0)

    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.NotFoundError):
        an.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=stack.edge_url, api_key="tw-x", max_retries=0).messages.create(
            model="claude-3-5-haiku", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.APIStatusError) as caught:
        an.messages.create(
            model="claude-3-5-haiku", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 402


def test_deadline_passing_is_504(stack, tenant_factory, upstream) -> None:
    tenant = tenant_factory({"credit": "1"})
    upstream.post(
        "/_control/faults", json={"channel": "anthropic-direct", "kind": "hang", "count": 5}
    ).raise_for_status()

    response = _post(
        stack, "anthropic", tenant.api_key, json=_body("anthropic", "claude-3-5-haiku")
    )

    _assert_error(response, "anthropic", 504)
