"""Session fixtures: one real stack (embedded Postgres and Kafka-protocol broker, or the ones in
``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS``), the demo upstream and the five services as
separate processes, the same code ``make dev`` runs.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tollway.devstack.broker import free_port
from tollway.devstack.seed import Tenant, create_tenant, seed_routes
from tollway.devstack.stack import SERVICES, Stack, StackConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ADMIN_TOKEN = "tw-admin-test"


def new_stack(root: Path, extra_env: dict[str, str] | None = None) -> Stack:
    """A whole stack on free ports under ``root``: infrastructure, demo upstream, seed, services.

    The caller stops it (``Stack.stop``), also when this raises half-way.
    """
    config = StackConfig(
        root=root,
        pg_port=free_port(),
        broker_port=free_port(),
        edge_port=free_port(),
        upstream_port=free_port(),
        researcher_port=free_port(),
        admin_token=ADMIN_TOKEN,
        edge_id=f"edge-test-{uuid.uuid4().hex[:8]}",
        fast_unsafe=True,
        extra_env={
            "TOLLWAY_EDGE_REQUEST_TIMEOUT_SECONDS": "20",
            "TOLLWAY_LOG_LEVEL": "info",
            # Body keys turn over fast and die soon after delivery (deadline 20 s + 5 s), so
            # tests can watch a prompt become unrecoverable (tests/e2e/test_secrets_at_rest.py).
            "TOLLWAY_BODY_KEY_EPOCH_SECONDS": "2",
            "TOLLWAY_BODY_RETENTION_SECONDS": "25",
            # Some tests write routes in SQL, behind the edge (which would announce them).
            "TOLLWAY_ROUTER_CHANNEL_REFRESH_SECONDS": "2",
            **(extra_env or {}),
        },
        metrics_ports={name: free_port() for name in SERVICES},
    )
    return Stack(config)


def run_stack(running: Stack) -> None:
    """Bring ``running`` up (see ``new_stack``)."""
    running.start_infra()
    # Consumers the tests run in this process need the same broker settings as the services.
    os.environ.update(running.broker_env())
    running.start_upstream()
    asyncio.run(seed_routes(running.dsn, running.upstream_url, running.secret_ring))
    running.start_services()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = new_stack(Path(tmp_path_factory.mktemp("stack")))
    try:
        run_stack(running)
        yield running
    finally:
        running.stop()


@pytest.fixture
def tenant_factory(stack: Stack) -> Callable[..., Tenant]:
    """Open a fresh account (unique id) with the given top-ups."""

    def make(topups: dict[str, str] | None = None, **kwargs: Any) -> Tenant:
        account_id = f"t-{uuid.uuid4().hex[:12]}"
        return create_tenant(stack.edge_url, ADMIN_TOKEN, account_id, topups or {}, **kwargs)

    return make


@pytest.fixture
def upstream(stack: Stack) -> Iterator[httpx.Client]:
    """The demo upstream's control API; faults are cleared after each test."""
    with httpx.Client(base_url=stack.upstream_url, timeout=5) as client:
        yield client
        client.delete("/_control/faults")


def upstream_calls(client: httpx.Client) -> int:
    """Requests the demo upstream has received so far, over every channel."""
    channels = client.get("/_control/stats").json()["channels"]
    return sum(int(c["total"]) for c in channels.values())


def wait_for(predicate: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def tenant_factory_module(stack: Stack) -> Callable[..., Tenant]:
    """Like ``tenant_factory``, for data shared by the tests of one module."""

    def make(topups: dict[str, str] | None = None, **kwargs: Any) -> Tenant:
        account_id = f"t-{uuid.uuid4().hex[:12]}"
        return create_tenant(stack.edge_url, ADMIN_TOKEN, account_id, topups or {}, **kwargs)

    return make
