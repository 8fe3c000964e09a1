"""Each upstream failure mode on the real stack: the attempts recorded, the client's status, the
receipt, and the amount charged (or not) to the bucket.

The demo upstream's faults are armed per demo channel; the routes under test point fresh
channels at them, so circuit state never leaks between tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.route_kit import (
    admin_client,
    chat,
    demo_calls,
    new_channel,
    new_model,
    settled_receipt,
)
from tollway.events.pricing import Price, Usage, cost_micro

pytestmark = pytest.mark.e2e

PRIMARY_DEMO, BACKUP_DEMO = "openai-backup", "openai-direct"
PRIMARY_PRICE = Price(input=150_000, output=600_000)
BACKUP_PRICE = Price(input=300_000, output=1_200_000)


@pytest.fixture
def route(stack) -> dict[str, str]:
    """A fresh model: a primary with a short timeout, and a pricier backup (same bucket)."""
    with admin_client(stack) as admin:
        primary = new_channel(admin, stack, PRIMARY_DEMO, timeout_ms=400)
        backup = new_channel(admin, stack, BACKUP_DEMO, prices={"input": "0.30", "output": "1.20"})
        model = new_model(
            admin,
            [
                {"channel_id": primary, "upstream_model": "up-primary", "tier": 0},
                {"channel_id": backup, "upstream_model": "up-backup", "tier": 1},
            ],
        )
    return {"model": model, "primary": primary, "backup": backup}


def _arm(upstream: Any, demo: str, kind: str, count: int, **extra: Any) -> None:
    response = upstream.post(
        "/_control/faults", json={"channel": demo, "kind": kind, "count": count, **extra}
    )
    assert response.status_code < 300, response.text


def _call(stack: Any, key: str, model: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    status, body, request_id = chat(stack, key, model)
    receipt = wait_for(lambda: settled_receipt(stack, key, request_id), what="the receipt")
    return status, body, receipt


def _chain(receipt: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    return [(a["channel_id"], a["outcome"], a["status"]) for a in receipt["attempts"]]


def _cost(attempt: dict[str, Any], price: Price) -> int:
    usage = attempt["usage"]
    return cost_micro(
        Usage(input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"]), price
    )


def test_a_5xx_is_retried_on_the_same_channel_and_charged_once(
    stack, tenant_factory, upstream, route
) -> None:
    tenant = tenant_factory({"credit": "5"})
    _arm(upstream, PRIMARY_DEMO, "status", 1, status=503)

    status, _, receipt = _call(stack, tenant.api_key, route["model"])

    p = route["primary"]
    assert status == 200
    assert _chain(receipt) == [(p, "http_error", 503), (p, "ok", 200)]
    assert (receipt["retries"], receipt["fallback"]) == (1, False)
    assert receipt["charged_micro"] == _cost(receipt["attempts"][1], PRIMARY_PRICE)


def test_a_429_is_retried_after_its_retry_after(stack, tenant_factory, upstream, route) -> None:
    tenant = tenant_factory({"credit": "5"})
    _arm(upstream, PRIMARY_DEMO, "rate_limit", 1, retry_after=1)

    status, _, receipt = _call(stack, tenant.api_key, route["model"])

    p = route["primary"]
    assert status == 200
    assert _chain(receipt) == [(p, "http_error", 429), (p, "ok", 200)]
    assert receipt["status"] == "settled"


def test_a_hanging_primary_times_out_and_the_backup_serves_at_its_price(
    stack, tenant_factory, upstream, route
) -> None:
    tenant = tenant_factory({"credit": "5"})
    _arm(upstream, PRIMARY_DEMO, "hang", 2, hang_seconds=5)

    status, body, receipt = _call(stack, tenant.api_key, route["model"])

    p, b = route["primary"], route["backup"]
    assert status == 200
    assert body["model"] == route["model"]
    assert _chain(receipt) == [(p, "timeout", None), (p, "timeout", None), (b, "ok", 200)]
    assert receipt["fallback"] is True
    assert receipt["attempts"][2]["upstream_model"] == "up-backup"
    assert receipt["charged_micro"] == _cost(receipt["attempts"][2], BACKUP_PRICE)


def test_an_upstream_400_is_returned_and_neither_retried_nor_charged(
    stack, tenant_factory, upstream, route
) -> None:
    tenant = tenant_factory({"credit": "5"})
    _arm(upstream, PRIMARY_DEMO, "status", 1, status=400)
    backup_calls = demo_calls(upstream, BACKUP_DEMO)

    status, body, receipt = _call(stack, tenant.api_key, route["model"])

    assert status == 400
    assert "error" in body
    assert _chain(receipt) == [(route["primary"], "http_error", 400)]
    assert (receipt["status"], receipt["charged_micro"]) == ("released", 0)
    assert demo_calls(upstream, BACKUP_DEMO) == backup_calls


def test_every_route_failing_is_a_502_naming_each_attempt_and_charges_nothing(
    stack, tenant_factory, upstream, route
) -> None:
    tenant = tenant_factory({"credit": "5"})
    _arm(upstream, PRIMARY_DEMO, "status", 2, status=502)
    _arm(upstream, BACKUP_DEMO, "status", 2, status=500)

    status, body, receipt = _call(stack, tenant.api_key, route["model"])

    assert status == 502
    message = body["error"]["message"]
    assert receipt["request_id"] in message
    assert message.count(route["primary"]) == 2
    assert message.count(route["backup"]) == 2
    assert [a["outcome"] for a in receipt["attempts"]] == ["http_error"] * 4
    assert (receipt["status"], receipt["charged_micro"]) == ("released", 0)
    balance = receipt["balance_after_micro"]
    assert balance == 5_000_000


def test_an_answer_without_usage_is_charged_from_its_text_and_marked_estimated(
    stack, tenant_factory, upstream, route
) -> None:
    tenant = tenant_factory({"credit": "5"})
    _arm(upstream, PRIMARY_DEMO, "no_usage", 1)

    status, body, receipt = _call(stack, tenant.api_key, route["model"])

    assert status == 200
    assert "usage" not in body or body["usage"] is None or body["usage"] == {}
    [attempt] = receipt["attempts"]
    assert receipt["usage_estimated"] is True
    text = body["choices"][0]["message"]["content"]
    # four characters a token, capped by the request's max_tokens (16)
    assert attempt["usage"]["output_tokens"] == min(-(-len(text) // 4), 16)
    assert attempt["usage"]["input_tokens"] > 0
    assert receipt["charged_micro"] == _cost(attempt, PRIMARY_PRICE) > 0
