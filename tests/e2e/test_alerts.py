"""Operational alerts on the real stack: a failing channel and a fallback storm reach ops
through the topic (``tollway alerts tail``) and a signed webhook."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, wait_for
from tests.e2e.route_kit import admin_client, circuit_state
from tollway.devstack.broker import free_port
from tollway.events.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, verify

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.e2e

CHANNEL = "anthropic-direct"
ROUTE = "claude-3-5-haiku"


class Receiver:
    """A webhook receiver that answers 500 to the first delivery, then 200 (to prove retries)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.failures_left = 1
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                status = 500 if receiver.failures_left > 0 else 200
                receiver.failures_left -= 1
                if status == 200:
                    receiver.received.append(
                        ({k.lower(): v for k, v in self.headers.items()}, body)
                    )
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = HTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def alerts(self, metric: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in self.received if orjson.loads(b)["payload"]["metric"] == metric]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()


def chat(stack, key: str) -> int:
    response = httpx.post(
        f"{stack.edge_url}/v1/chat/completions",
        json={"model": ROUTE, "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    return response.status_code


def _close_circuit(stack, upstream, key: str) -> None:
    """Clear the faults, then call until a probe after the cool-down has closed the circuit."""
    upstream.delete("/_control/faults")
    with admin_client(stack) as admin:
        wait_for(
            lambda: chat(stack, key) == 200 and circuit_state(admin, CHANNEL) == "closed",
            timeout=120,
            what=f"the circuit of {CHANNEL} to close again",
        )


def tail(stack, *args: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tollway.cli",
            "alerts",
            "tail",
            "--bootstrap",
            stack.bootstrap,
            *args,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return done.stdout.decode()


def test_failing_channel_and_fallback_storm_alert_ops_by_topic_cli_and_signed_webhook(
    stack, tenant_factory, upstream, receiver, request
) -> None:
    with httpx.Client(
        base_url=f"{stack.edge_url}/admin/v1", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as admin:
        created = admin.post(
            "/webhooks", json={"url": f"http://127.0.0.1:{receiver.port}/hook"}
        ).json()
    admin_headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    request.addfinalizer(  # later tests' alerts must not queue for a receiver that is gone
        lambda: httpx.delete(
            f"{stack.edge_url}/admin/v1/webhooks/{created['id']}", headers=admin_headers
        ).raise_for_status()
    )
    tenant = tenant_factory({"credit": "20"})
    upstream.post("/_control/faults", json={"channel": CHANNEL, "kind": "status", "count": 1000})
    # The seeded channel is shared with later tests: leave its circuit closed again.
    request.addfinalizer(lambda: _close_circuit(stack, upstream, tenant.api_key))

    statuses = [chat(stack, tenant.api_key) for _ in range(12)]

    assert set(statuses) == {200}  # every request fell back to the backup channel
    lines = wait_for(
        lambda: (
            (out := tail(stack, "--scope", f"channel:{CHANNEL}")) and "error_rate" in out and out
        ),
        what="an error-rate alert on the topic",
    )
    assert f"channel:{CHANNEL} error_rate" in lines
    assert "critical" in lines
    routes = wait_for(
        lambda: (out := tail(stack, "--scope", "route")) and "fallback_rate" in out and out,
        what="a fallback alert on the topic",
    )
    assert f"route:{ROUTE} fallback_rate" in routes
    assert "error_rate" not in tail(stack, "--scope", "route")

    [(headers, body)] = wait_for(
        lambda: receiver.alerts("error_rate"), what="the error-rate alert at the webhook"
    )
    assert verify(created["secret"], headers[SIGNATURE_HEADER], body, int(time.time()))
    assert not verify(created["secret"], headers[SIGNATURE_HEADER], body + b" ", int(time.time()))
    alert = orjson.loads(body)
    assert alert["type"] == "limits.alert"
    assert alert["payload"]["scope_id"] == CHANNEL
    assert alert["payload"]["value"] >= alert["payload"]["threshold"] == 0.5
    assert alert["payload"]["example_request_ids"]
    assert headers[DELIVERY_HEADER]
    wait_for(lambda: receiver.alerts("fallback_rate"), what="the fallback alert at the webhook")
