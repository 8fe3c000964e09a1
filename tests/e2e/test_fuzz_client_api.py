"""Property fuzzing of the client API on the real stack: whatever the body or query, the edge
answers a 4xx in the route's own error shape (or a 2xx), never a 5xx, and never calls upstream
for a tenant with no money.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import upstream_calls

pytestmark = pytest.mark.e2e

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", 7]), "content": JSON}
    ),
    max_size=3,
)
BODIES = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["gpt-4o-mini", "claude-3-5-haiku", "text-embedding-3-small", ""])
        | JSON,
        "messages": MESSAGES | JSON,
        "input": JSON,
        "max_tokens": st.integers(min_value=-(2**40), max_value=2**40) | JSON,
        "stream": st.booleans() | JSON,
        "n": st.integers(min_value=-3, max_value=40),
        "system": JSON,
        "tools": JSON,
        "instructions": JSON,
        "max_output_tokens": st.integers(min_value=-3, max_value=2**40) | JSON,
        "previous_response_id": JSON,
        "tool_choice": JSON,
    },
)
ROUTES = ["/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/responses"]
FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _check_shape(response: httpx.Response, path: str) -> None:
    assert response.status_code < 500, response.text
    if response.status_code < 400:
        return
    body = response.json()
    if path.startswith("/v1/messages"):
        assert body["type"] == "error"
        assert body["error"]["message"]
    else:
        assert body["error"]["message"]


@FUZZ
@given(path=st.sampled_from(ROUTES), body=BODIES)
def test_no_body_makes_the_edge_fail(stack, tenant_factory_module, upstream, path, body) -> None:
    tenant = _broke(tenant_factory_module)
    before = upstream_calls(upstream)

    response = httpx.post(
        f"{stack.edge_url}{path}",
        json=body,
        headers={"authorization": f"Bearer {tenant}"},
        timeout=30,
    )

    _check_shape(response, path)
    assert response.status_code != 200
    assert upstream_calls(upstream) == before


@FUZZ
@given(body=BODIES)
def test_no_body_makes_count_tokens_fail_or_call_upstream(
    stack, tenant_factory_module, upstream, body
) -> None:
    tenant = _broke(tenant_factory_module)
    before = upstream_calls(upstream)
    path = "/v1/messages/count_tokens"

    response = httpx.post(
        f"{stack.edge_url}{path}", json=body, headers={"x-api-key": tenant}, timeout=30
    )

    _check_shape(response, path)
    if response.status_code == 200:
        assert response.json()["input_tokens"] > 0
    assert upstream_calls(upstream) == before


@FUZZ
@given(
    path=st.sampled_from(
        ["/v1/receipts", "/v1/usage", "/v1/models", "/v1/balance", "/api/v1/generation"]
    ),
    params=st.dictionaries(
        st.sampled_from(
            [
                "project",
                "key",
                "task",
                "model",
                "since",
                "until",
                "cursor",
                "limit",
                "group_by",
                "id",
            ]
        ),
        st.text(max_size=30),
        max_size=4,
    ),
)
def test_no_query_makes_the_edge_fail(stack, tenant_factory_module, path, params) -> None:
    tenant = _broke(tenant_factory_module)

    response = httpx.get(
        f"{stack.edge_url}{path}",
        params=params,
        headers={"authorization": f"Bearer {tenant}"},
        timeout=30,
    )

    _check_shape(response, path)


_BROKE: dict[str, str] = {}


def _broke(factory: Any) -> str:
    """One tenant without money for every example (a fixture cannot be built per example)."""
    if "key" not in _BROKE:
        _BROKE["key"] = factory({}).api_key
    return _BROKE["key"]
