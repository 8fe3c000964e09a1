"""Bad input, table by table: every money endpoint refuses an amount that is not an exact ASCII
decimal in range with a 400 naming the field, and no input of any endpoint gets a 5xx or leaves
anything half-written (nothing journaled, nothing published).
"""

from __future__ import annotations

import socket
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, upstream_calls
from tests.integration import ledger_io as io

if TYPE_CHECKING:
    from collections.abc import Callable

    from tollway.devstack.seed import Tenant

pytestmark = pytest.mark.e2e

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
HUGE = "9" * 30
# Not an amount anywhere: each must be a 400 naming the field.
BAD_AMOUNTS = [
    "+-5",
    "\u0665",  # Arabic-Indic five
    "\uff15",  # full-width five
    "1e5",
    "0x10",
    "1,5",
    "1.0000001",
    " 5",
    "",
    ".5",
    HUGE,
    "1000000000.000001",
]


def _channel(prices: dict[str, str]) -> dict[str, Any]:
    return {
        "id": f"fuzz-{uuid.uuid4().hex[:8]}",
        "name": "fuzz",
        "route_type": "pool",
        "brand": "openai",
        "bucket": "wallet",
        "base_url": "http://127.0.0.1:9/v1",
        "adapter": "openai",
        "secret": "sk-test",
        "prices": prices,
    }


# (method, path, body for an amount, the field a refusal names, the token: admin or tenant key)
MONEY: dict[str, tuple[str, str, Callable[[str, str], dict[str, Any]], str, str]] = {
    "topup": (
        "POST",
        "/admin/v1/topups",
        lambda acct, amount: {
            "account_id": acct,
            "bucket": "credit",
            "unit": "credit",
            "amount": amount,
            "idempotency_key": uuid.uuid4().hex,
        },
        "amount",
        "admin",
    ),
    "budget": (
        "POST",
        "/admin/v1/budgets",
        lambda acct, amount: {
            "account_id": acct,
            "name": "b",
            "scope": "account",
            "unit": "credit",
            "amount": amount,
        },
        "amount",
        "admin",
    ),
    "token_budget": (
        "POST",
        "/admin/v1/budgets",
        lambda acct, amount: {
            "account_id": acct,
            "name": "t",
            "scope": "account",
            "unit": "tokens",
            "amount": amount,
        },
        "amount",
        "admin",
    ),
    "adjustment": (
        "POST",
        "/admin/v1/ledger/adjustments",
        lambda acct, amount: {
            "account_id": acct,
            "bucket": "credit",
            "unit": "credit",
            "amount": amount,
            "reason": "r",
            "idempotency_key": uuid.uuid4().hex,
        },
        "amount",
        "admin",
    ),
    "reversal": (
        "POST",
        "/admin/v1/ledger/reversals",
        lambda acct, amount: {
            "account_id": acct,
            "original_event_id": "01J0000000000000000000000",
            "amount": amount,
            "reason": "r",
            "idempotency_key": uuid.uuid4().hex,
        },
        "amount",
        "admin",
    ),
    "channel_price": (
        "POST",
        "/admin/v1/channels",
        lambda _acct, amount: _channel({"input": amount, "output": "1"}),
        "prices.input",
        "admin",
    ),
    "channel_price_patch": (
        "PATCH",
        "/admin/v1/channels/openai-direct",
        lambda _acct, amount: {"prices": {"input": "1", "output": amount}},
        "prices.output",
        "admin",
    ),
    "channel_cost_patch": (
        "PATCH",
        "/admin/v1/channels/openai-direct",
        lambda _acct, amount: {"cost": {"currency": "USD", "input": amount, "output": "1"}},
        "cost.input",
        "admin",
    ),
    "task_budget": (
        "POST",
        "/v1/tasks",
        lambda _acct, amount: {"name": "t", "budgets": [{"bucket": "credit", "amount": amount}]},
        "budgets.0.amount",
        "key",
    ),
}


@pytest.fixture(scope="module")
def funded(tenant_factory_module: Callable[..., Tenant]) -> Tenant:
    """One tenant with money, whose journal must not move under any refused input."""
    return tenant_factory_module({"credit": "5"})


def _send(stack: Any, tenant: Tenant, endpoint: str, amount: str) -> httpx.Response:
    method, path, body, _, who = MONEY[endpoint]
    token = ADMIN_TOKEN if who == "admin" else tenant.api_key
    return httpx.request(
        method,
        f"{stack.edge_url}{path}",
        headers={"authorization": f"Bearer {token}"},
        json=body(tenant.account_id, amount),
        timeout=15,
    )


def _journal_size(stack: Any, account_id: str) -> int:
    return int(
        io.fetchval(
            stack.dsn, "SELECT count(*) FROM ledger.journal WHERE account_id = $1", account_id
        )
    )


@pytest.mark.parametrize("endpoint", sorted(MONEY))
def test_every_money_endpoint_refuses_every_bad_amount_naming_the_field(
    stack, funded, endpoint: str
) -> None:
    before = _journal_size(stack, funded.account_id)
    for amount in [*BAD_AMOUNTS, "-5" if endpoint != "adjustment" else "0"]:
        response = _send(stack, funded, endpoint, amount)
        assert response.status_code == 400, (endpoint, amount, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert MONEY[endpoint][3] in (error["param"] or "") + error["message"], (amount, error)
    assert _journal_size(stack, funded.account_id) == before


def _deep(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


# (method, path, JSON body or raw text, token): inputs that answered 5xx before, or could.
NEVER_5XX: list[tuple[str, str, Any, str]] = [
    ("GET", "/admin/v1/ledger/accounts/%00", None, "admin"),
    ("GET", "/admin/v1/ledger/accounts/%00/entries", None, "admin"),
    (
        "GET",
        "/admin/v1/ledger/accounts/{acct}/balance?at=0001-01-01T00:00:00%2B14:00",
        None,
        "admin",
    ),
    ("GET", "/admin/v1/ledger/accounts/{acct}/entries?before=" + HUGE, None, "admin"),
    ("GET", "/admin/v1/ledger/accounts/{acct}/entries?before=-" + HUGE, None, "admin"),
    ("GET", "/admin/v1/audit?before=" + HUGE, None, "admin"),
    ("GET", "/admin/v1/budgets?account_id=%00", None, "admin"),
    ("DELETE", "/admin/v1/budgets/%00", None, "admin"),
    ("DELETE", "/admin/v1/webhooks/%00", None, "admin"),
    ("GET", "/admin/v1/channels/%00/health", None, "admin"),
    ("PATCH", "/admin/v1/channels/%00", {"enabled": True}, "admin"),
    ("PATCH", "/admin/v1/models/%00", {"description": "x"}, "admin"),
    ("PUT", "/admin/v1/models/%00/routes", {"routes": []}, "admin"),
    ("GET", "/admin/v1/topups/%00", None, "admin"),
    ("GET", "/v1/receipts/%00", None, "key"),
    ("GET", "/v1/receipts?since=0001-01-01T00:00:00%2B14:00", None, "key"),
    ("GET", "/v1/usage?since=9999-12-31T23:59:59-14:00", None, "key"),
    (
        "POST",
        "/admin/v1/budgets",
        {"account_id": "{acct}", "name": "b", "scope": "account", "unit": "cr\x00", "amount": "1"},
        "admin",
    ),
    (
        "POST",
        "/admin/v1/budgets",
        {
            "account_id": "{acct}",
            "name": "b",
            "scope": "model",
            "scope_id": "m\x00",
            "unit": "credit",
            "amount": "1",
        },
        "admin",
    ),
    (
        "POST",
        "/admin/v1/velocity-limits",
        {"account_id": "{acct}", "scope": "key", "scope_id": "k", "tokens_per_minute": 2**70},
        "admin",
    ),
    (
        "POST",
        "/admin/v1/velocity-limits",
        {
            "account_id": "{acct}",
            "scope": "key",
            "scope_id": "k",
            "spend_micro_per_minute": {"credit": 2**64 - 1},
        },
        "admin",
    ),
    (
        "POST",
        "/admin/v1/velocity-limits",
        {"account_id": "{acct}", "scope": "key", "scope_id": "k", "cooldown_seconds": 2**63},
        "admin",
    ),
    (
        "POST",
        "/admin/v1/velocity-limits",
        {"account_id": "{acct}", "scope": "key", "scope_id": "k\x00", "tokens_per_minute": 5},
        "admin",
    ),
    ("POST", "/admin/v1/webhooks", {"url": "http://x", "description": "d\x00"}, "admin"),
    (
        "POST",
        "/admin/v1/ledger/adjustments",
        {
            "account_id": "{acct}",
            "bucket": "credit",
            "unit": "credit",
            "amount": "1",
            "reason": "r\x00",
            "idempotency_key": "x",
        },
        "admin",
    ),
    (
        "POST",
        "/admin/v1/ledger/reversals",
        {
            "account_id": "{acct}",
            "original_event_id": "e\x00",
            "amount": "1",
            "reason": "r",
            "idempotency_key": "x",
        },
        "admin",
    ),
    ("POST", "/admin/v1/channels", _channel({"input": HUGE, "output": "1"}), "admin"),
    ("POST", "/admin/v1/budgets", _deep(255), "admin"),
    ("POST", "/admin/v1/budgets", _deep(250), "admin"),
    ("POST", "/admin/v1/topups", _deep(1000), "admin"),
    (
        "POST",
        "/v1/chat/completions",
        '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"metadata":'
        + _deep(250)
        + "}",
        "key",
    ),
    (
        "POST",
        "/v1/messages",
        '{"model":"claude-3-5-haiku","max_tokens":5,"messages":[{"role":"user","content":"x"}],"metadata":'
        + _deep(255)
        + "}",
        "key",
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "seed": 2**64 - 1},
        "key",
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "gpt\x00", "messages": [{"role": "user", "content": "x"}]},
        "key",
    ),
]


def _fill(value: Any, acct: str) -> Any:
    if isinstance(value, str):
        return value.replace("{acct}", acct)
    if isinstance(value, dict):
        return {k: _fill(v, acct) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("method", "path", "body", "who"), NEVER_5XX)
def test_no_bad_input_gets_a_5xx_or_writes_anything(
    stack, funded, method: str, path: str, body: Any, who: str
) -> None:
    before = _journal_size(stack, funded.account_id)
    audit_before = io.fetchval(stack.dsn, "SELECT count(*) FROM edge.audit")
    token = ADMIN_TOKEN if who == "admin" else funded.api_key
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    url = f"{stack.edge_url}{_fill(path, funded.account_id)}"
    if isinstance(body, str):
        response = httpx.request(method, url, headers=headers, content=body, timeout=30)
    else:
        response = httpx.request(
            method, url, headers=headers, json=_fill(body, funded.account_id), timeout=30
        )

    assert 400 <= response.status_code < 500, response.text
    shape = response.json()
    error = shape["error"]
    assert error["message"]
    assert error["type"] in {"invalid_request_error", "not_found_error"}
    assert _journal_size(stack, funded.account_id) == before
    assert io.fetchval(stack.dsn, "SELECT count(*) FROM edge.audit") == audit_before


def test_a_key_budget_must_name_a_key_of_the_account(stack, funded, tenant_factory) -> None:
    other = tenant_factory({})
    other_key = io.fetchval(
        stack.dsn, "SELECT id FROM edge.api_keys WHERE account_id = $1", other.account_id
    )
    for scope_id in ("key_does_not_exist", other_key):
        response = httpx.post(
            f"{stack.edge_url}/admin/v1/budgets",
            headers=ADMIN,
            json={
                "account_id": funded.account_id,
                "name": "k",
                "scope": "key",
                "scope_id": scope_id,
                "unit": "credit",
                "amount": "1",
            },
            timeout=15,
        )
        assert response.status_code == 404, response.text


@pytest.mark.parametrize("header", [b"X-Bad: a\rb", b"X-Bad: a\x00b", b"X-B\nad: a"])
def test_a_header_the_parser_refuses_gets_a_json_400(stack, header: bytes) -> None:
    url = httpx.URL(stack.edge_url)
    request = b"GET /v1/models HTTP/1.1\r\nHost: edge\r\n" + header + b"\r\n\r\n"
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert b"content-type: application/json" in head.lower()
    assert orjson.loads(body)["error"]["type"] == "invalid_request_error"


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {
    "model": "claude-3-5-haiku",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/v1/chat/completions",
            CHAT | {"messages": [{"role": "wizard", "content": "x"}]},
            "messages.0.role",
        ),
        ("/v1/chat/completions", CHAT | {"temperature": 5}, "temperature"),
        ("/v1/chat/completions", CHAT | {"temperature": "1"}, "temperature"),
        ("/v1/chat/completions", CHAT | {"max_tokens": "10"}, "max_tokens"),
        ("/v1/chat/completions", CHAT | {"stream": "yes"}, "stream"),
        ("/v1/chat/completions", CHAT | {"top_p": 1.5}, "top_p"),
        ("/v1/chat/completions", CHAT | {"n": "2"}, "n"),
        ("/v1/chat/completions", CHAT | {"seed": 1.5}, "seed"),
        ("/v1/messages", MESSAGES | {"messages": [{"role": "system", "content": "x"}]}, None),
        ("/v1/messages", MESSAGES | {"temperature": 1.5}, None),
        ("/v1/messages", MESSAGES | {"max_tokens": "10"}, None),
        ("/v1/messages", MESSAGES | {"stream": "yes"}, None),
        ("/v1/messages", MESSAGES | {"messages": [{"role": "user"}]}, None),
    ],
)
def test_chat_bodies_are_validated_like_the_dialects_own_api(
    stack, funded, upstream, path: str, body: dict[str, Any], param: str | None
) -> None:
    before = upstream_calls(upstream)
    response = httpx.post(
        f"{stack.edge_url}{path}",
        headers={"authorization": f"Bearer {funded.api_key}"},
        json=body,
        timeout=30,
    )
    assert response.status_code == 400, response.text
    shape = response.json()
    if path == "/v1/messages":
        assert shape["type"] == "error"
        assert shape["error"]["type"] == "invalid_request_error"
    else:
        assert shape["error"]["type"] == "invalid_request_error"
        assert shape["error"]["param"] == param
    assert upstream_calls(upstream) == before
