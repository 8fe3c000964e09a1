"""Bad input gets a clear OpenAI-shaped error, the right status, and nothing half-written."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import upstream_calls

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"


def _post(stack, key: str | None, content: bytes) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(f"{stack.edge_url}{CHAT}", content=content, headers=headers, timeout=10)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"\xff\xfe{}", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"model": "gpt-4o-mini", "messages": []}', 400, "invalid_parameter"),
        (b'{"model": "gpt-4o-mini", "messages": "hi"}', 400, "invalid_parameter"),
        (
            (
                b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],'
                b' "max_tokens": -5}'
            ),
            400,
            "invalid_parameter",
        ),
        (
            (
                b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],'
                b' "max_tokens": 99999999999}'
            ),
            400,
            "invalid_parameter",
        ),
        (
            b'{"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "model_not_found",
        ),
    ],
)
def test_bad_requests_are_refused_before_any_event(
    stack, tenant_factory, upstream, body, status, code
) -> None:
    tenant = tenant_factory({"credit": "1"})
    before = upstream_calls(upstream)

    response = _post(stack, tenant.api_key, body)

    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert response.headers["x-request-id"].startswith("req_")
    assert upstream_calls(upstream) == before
    balance = httpx.get(
        f"{stack.edge_url}/v1/balance", headers={"authorization": f"Bearer {tenant.api_key}"}
    ).json()
    assert balance["buckets"][0]["held_micro"] == 0


@pytest.mark.parametrize("key", [None, "tw-not-a-real-key", "Basic"])
def test_missing_or_unknown_key_is_401(stack, key) -> None:
    response = _post(stack, key, b'{"model": "gpt-4o-mini", "messages": []}')

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_oversized_body_is_413(stack, tenant_factory) -> None:
    tenant = tenant_factory({})
    huge = (
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        + (b"x" * (5 * 1024 * 1024))
        + b'"}]}'
    )

    response = _post(stack, tenant.api_key, huge)

    assert response.status_code == 413
    assert "error" in response.json()


def test_admin_api_needs_the_admin_token(stack) -> None:
    response = httpx.post(
        f"{stack.edge_url}/admin/v1/accounts",
        json={"name": "x"},
        headers={"authorization": "Bearer wrong"},
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_admin_token"
