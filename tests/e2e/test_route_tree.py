"""The route tree managed through the admin API, and the channel circuit breaker on the real stack.

Each test builds its own channels (fresh ids pointing at demo-upstream channels), so circuit
state, which routers keep per channel id, never leaks between tests.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import wait_for
from tests.e2e.route_kit import (
    admin_client,
    chat,
    circuit_state,
    demo_calls,
    new_channel,
    new_model,
    settled_receipt,
)

pytestmark = pytest.mark.e2e


def test_a_model_built_through_the_admin_api_is_served_and_audited(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "5"})
    with admin_client(stack) as admin:
        primary = new_channel(admin, stack, "openai-backup")
        model = new_model(admin, [{"channel_id": primary, "upstream_model": "gpt-x-upstream"}])
        tree = admin.get("/route-tree")
        audit = admin.get("/audit", params={"subject": primary}).json()["data"]

    client = openai.OpenAI(base_url=f"{stack.edge_url}/v1", api_key=tenant.api_key, max_retries=0)
    raw = wait_for(  # the edge's plan cache lives a second at most
        lambda: _served(client, model), what="the new model to be served"
    )
    receipt = wait_for(lambda: settled_receipt(stack, tenant.api_key, raw), what="the receipt")
    assert receipt["attempts"][0]["channel_id"] == primary
    assert receipt["attempts"][0]["upstream_model"] == "gpt-x-upstream"
    assert f"sk-secret-{primary}" not in tree.text  # secrets are write-only
    [entry] = audit
    assert (entry["actor"], entry["action"], entry["before"]) == (
        "test-suite",
        "channel.create",
        None,
    )
    assert entry["after"]["prices_per_1m"] == {
        "input": "0.150000",
        "output": "0.600000",
        "cached_input": None,
        "cache_write": None,
        "cache_write_1h": None,
        "reasoning": None,
    }
    assert "secret" not in str(entry)


def _served(client: openai.OpenAI, model: str) -> str | None:
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )
    except openai.NotFoundError:
        return None
    return str(raw.headers["x-request-id"])


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/channels", {"id": "Bad Id", "route_type": "direct"}, "id"),
        (
            "/channels",
            {
                "id": "neg-price",
                "route_type": "pool",
                "brand": "openai",
                "base_url": "http://x",
                "secret": "s",
                "prices": {"input": "-1", "output": "1"},
            },
            "prices",
        ),
        ("/models", {"name": "m", "max_output_tokens": 0}, "name"),
    ],
)
def test_invalid_route_tree_changes_are_refused_with_a_400(
    stack, path: str, body: dict[str, Any], param: str
) -> None:
    with admin_client(stack) as admin:
        response = admin.post(path, json=body)
    assert response.status_code == 400, response.text
    assert "error" in response.json()
    assert param in response.text


def test_routes_naming_an_unknown_channel_change_nothing(stack) -> None:
    with admin_client(stack) as admin:
        good = new_channel(admin, stack, "openai-direct")
        model = new_model(admin, [{"channel_id": good, "upstream_model": "u"}])
        response = admin.put(
            f"/models/{model}/routes",
            json={"routes": [{"channel_id": "nope", "upstream_model": "u"}]},
        )
        plan = next(m for m in admin.get("/route-tree").json()["catalog"] if m["name"] == model)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "routes[0].channel_id"
    assert [p["channel_id"] for p in plan["plan"]] == [good]


def test_admin_route_tree_needs_the_admin_token(stack) -> None:
    response = httpx.get(f"{stack.edge_url}/admin/v1/route-tree")
    assert response.status_code == 401


def test_a_failing_channel_is_taken_out_of_plans_and_brought_back(
    stack, tenant_factory, upstream
) -> None:
    tenant = tenant_factory({"credit": "20"})
    with admin_client(stack) as admin:
        primary = new_channel(admin, stack, "openai-backup")
        backup = new_channel(admin, stack, "openai-direct")
        model = new_model(
            admin,
            [
                {"channel_id": primary, "upstream_model": "u", "tier": 0},
                {"channel_id": backup, "upstream_model": "u", "tier": 1},
            ],
        )
        upstream.post(
            "/_control/faults",
            json={"channel": "openai-backup", "kind": "status", "status": 503, "count": 10_000},
        )
        # Every request still succeeds on the backup while the primary keeps failing...
        wait_for(
            lambda: (
                chat(stack, tenant.api_key, model)[0] == 200
                and circuit_state(admin, primary) == "open"
            ),
            what="the primary's circuit to open",
        )
        calls_when_open = demo_calls(upstream, "openai-backup")
        results = [chat(stack, tenant.api_key, model) for _ in range(5)]
        # ... and once the circuit is open, the primary is not called at all.
        assert [status for status, _, _ in results] == [200] * 5
        assert demo_calls(upstream, "openai-backup") == calls_when_open
        receipt = wait_for(
            lambda: settled_receipt(stack, tenant.api_key, results[-1][2]), what="the receipt"
        )
        assert receipt["skipped"] == [
            {"channel_id": primary, "channel": primary, "reason": "circuit_open"}
        ]
        assert [a["channel_id"] for a in receipt["attempts"]] == [backup]
        assert receipt["fallback"] is True  # served by the backup because the primary was skipped

        upstream.delete("/_control/faults")
        wait_for(  # after the cool-down one probe goes to the primary, succeeds, and closes it
            lambda: (
                chat(stack, tenant.api_key, model)[0] == 200
                and circuit_state(admin, primary) == "closed"
            ),
            timeout=60,
            what="the primary's circuit to close again",
        )
        history = admin.get(f"/channels/{primary}/health").json()["transitions"]
    moves = [(t["from_state"], t["to_state"]) for t in reversed(history)]
    assert moves[:3] == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_every_circuit_open_answers_503_and_releases_the_hold(
    stack, tenant_factory, upstream
) -> None:
    tenant = tenant_factory({"credit": "20"})
    with admin_client(stack) as admin:
        only = new_channel(admin, stack, "openai-backup")
        model = new_model(admin, [{"channel_id": only, "upstream_model": "u"}])
        upstream.post(
            "/_control/faults",
            json={"channel": "openai-backup", "kind": "status", "status": 500, "count": 10_000},
        )
        wait_for(
            lambda: (
                chat(stack, tenant.api_key, model)[0] != 200
                and circuit_state(admin, only) == "open"
            ),
            what="the circuit to open",
        )
    before = demo_calls(upstream, "openai-backup")
    status, body, request_id = chat(stack, tenant.api_key, model)
    assert status == 503
    assert body["error"]["code"] == "channels_unavailable"
    assert demo_calls(upstream, "openai-backup") == before
    receipt = wait_for(lambda: settled_receipt(stack, tenant.api_key, request_id), what="receipt")
    assert receipt["status"] == "released"
    assert receipt["charged_micro"] == 0
