"""Building routes through the admin API and calling them, for end-to-end tests.

Each test makes its own channels (fresh ids pointing at demo-upstream channels), so circuit
state, which routers keep per channel id, never leaks from one test into another.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN


def admin_client(stack: Any) -> httpx.Client:
    return httpx.Client(
        base_url=f"{stack.edge_url}/admin/v1",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}", "x-tollway-actor": "test-suite"},
        timeout=10,
    )


def new_channel(admin: httpx.Client, stack: Any, demo: str, **fields: Any) -> str:
    channel_id = f"t-{demo}-{uuid.uuid4().hex[:6]}"
    body = {
        "id": channel_id,
        "route_type": "direct",
        "brand": "openai",
        "base_url": f"{stack.upstream_url}/{demo}/v1",
        "secret": f"sk-secret-{channel_id}",
        "prices": {"input": "0.15", "output": "0.60"},
        **fields,
    }
    response = admin.post("/channels", json=body)
    assert response.status_code == 201, response.text
    return channel_id


def new_model(admin: httpx.Client, routes: list[dict[str, Any]]) -> str:
    name = f"m-{uuid.uuid4().hex[:8]}"
    assert admin.post("/models", json={"name": name}).status_code == 201
    response = admin.put(f"/models/{name}/routes", json={"routes": routes})
    assert response.status_code == 200, response.text
    return name


def chat(stack: Any, key: str, model: str) -> tuple[int, dict[str, Any], str]:
    response = httpx.post(
        f"{stack.edge_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16},
        timeout=30,
    )
    return response.status_code, response.json(), response.headers["x-request-id"]


def demo_calls(upstream: httpx.Client, demo: str) -> int:
    return int(upstream.get("/_control/stats").json()["channels"][demo]["total"])


def circuit_state(admin: httpx.Client, channel_id: str) -> str:
    tree = admin.get("/route-tree").json()
    for route_type in tree["route_types"]:
        for brand in route_type["brands"]:
            for channel in brand["channels"]:
                if channel["id"] == channel_id:
                    return str(channel["health"]["state"])
    raise AssertionError(f"{channel_id} is not in the route tree")


def settled_receipt(stack: Any, key: str, request_id: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{stack.edge_url}/v1/receipts/{request_id}", headers={"authorization": f"Bearer {key}"}
    )
    body: dict[str, Any] = response.json() if response.status_code == 200 else {}
    return body if body.get("status") in {"settled", "released"} else None
