"""One request through the whole money path, driven by the official OpenAI SDK."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import upstream_calls, wait_for
from tollway.events.pricing import Price, Usage, cost_micro

pytestmark = pytest.mark.e2e


def _client(stack: Any, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.edge_url}/v1", api_key=key, max_retries=0)


def _receipt(stack: Any, key: str, request_id: str, status: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{stack.edge_url}/v1/receipts/{request_id}", headers={"authorization": f"Bearer {key}"}
    )
    if response.status_code != 200:
        return None
    body: dict[str, Any] = response.json()
    return body if body["status"] == status else None


def _balance(stack: Any, key: str) -> dict[str, dict[str, int]]:
    response = httpx.get(f"{stack.edge_url}/v1/balance", headers={"authorization": f"Bearer {key}"})
    return {b["bucket"]: b for b in response.json()["buckets"]}


def test_chat_completion_is_served_settled_and_explained(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "10"})
    raw = _client(stack, tenant.api_key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Say hello to the ledger."}],
        user="end-user-7",
    )
    completion = raw.parse()
    request_id = raw.headers["x-request-id"]

    assert completion.choices[0].message.content
    assert completion.model == "gpt-4o-mini"
    receipt = wait_for(
        lambda: _receipt(stack, tenant.api_key, request_id, "settled"), what="the receipt to settle"
    )

    [attempt] = receipt["attempts"]
    assert attempt["channel"] == "openai-direct"
    assert attempt["upstream_model"] == "gpt-4o-mini-2024-07-18"
    assert attempt["outcome"] == "ok"
    assert attempt["usage"]["input_tokens"] == completion.usage.prompt_tokens
    assert attempt["usage"]["output_tokens"] == completion.usage.completion_tokens
    expected = cost_micro(
        Usage(
            input_tokens=completion.usage.prompt_tokens,
            output_tokens=completion.usage.completion_tokens,
        ),
        Price(input=150_000, output=600_000),
    )
    assert receipt["charged_micro"] == expected > 0
    assert receipt["user"] == "end-user-7"
    assert receipt["requested_model"] == "gpt-4o-mini"
    assert receipt["bucket"] == "credit"
    credit = _balance(stack, tenant.api_key)["credit"]
    assert credit["held_micro"] == 0
    assert credit["available_micro"] == 10_000_000 - expected
    assert receipt["balance_after_micro"] == credit["available_micro"]


def test_empty_bucket_gets_402_and_no_upstream_call(stack, tenant_factory, upstream) -> None:
    tenant = tenant_factory({})
    before = upstream_calls(upstream)

    with pytest.raises(openai.APIStatusError) as caught:
        _client(stack, tenant.api_key).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )

    assert caught.value.status_code == 402
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "insufficient_balance"
    assert "credit" in error["message"]
    request_id = caught.value.response.headers["x-request-id"]
    receipt = wait_for(
        lambda: _receipt(stack, tenant.api_key, request_id, "rejected"), what="the rejected receipt"
    )
    assert receipt["limit"] == "bucket:credit"
    assert receipt["attempts"] == []
    assert upstream_calls(upstream) == before


def test_a_bucket_too_small_for_the_hold_is_refused(stack, tenant_factory, upstream) -> None:
    tenant = tenant_factory({"credit": "0.000100"})  # 100 micro: less than one worst case
    before = upstream_calls(upstream)

    with pytest.raises(openai.APIStatusError) as caught:
        _client(stack, tenant.api_key).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], max_tokens=4000
        )

    assert caught.value.status_code == 402
    assert upstream_calls(upstream) == before
    assert _balance(stack, tenant.api_key)["credit"]["available_micro"] == 100


def test_receipts_of_another_account_are_not_found(stack, tenant_factory) -> None:
    owner = tenant_factory({"credit": "1"})
    other = tenant_factory({"credit": "1"})
    raw = _client(stack, owner.api_key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "mine"}]
    )
    request_id = raw.headers["x-request-id"]
    wait_for(lambda: _receipt(stack, owner.api_key, request_id, "settled"), what="receipt")

    response = httpx.get(
        f"{stack.edge_url}/v1/receipts/{request_id}",
        headers={"authorization": f"Bearer {other.api_key}"},
    )

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "receipt_not_found"
