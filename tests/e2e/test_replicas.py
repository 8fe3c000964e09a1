"""Two edges and two routers: budgets hold and every request settles once across replicas.

A second edge (its own reply topic) and a second router (same consumer group) join the session's
stack. A burst from accounts on every partition goes through both edges while the second router
joins, so partitions move between routers with requests in flight; a second wave runs once the
new router serves. Each account's project budget covers fewer requests than it sends: exactly the
covered number is settled, nothing more is charged, and no request is settled twice.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest
from aiokafka.partitioner import murmur2

from tests.conftest import ADMIN_TOKEN, wait_for
from tests.flat_routes import DIRECT_MICRO, MODEL, flat_model
from tollway.devstack.broker import free_port
from tollway.devstack.seed import Tenant, create_tenant

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tollway.devstack.stack import Stack

pytestmark = pytest.mark.e2e
__all__ = ["flat_model"]

WAVE = 24  # requests per account in each wave
COVERED = 30  # of the 2 * WAVE each account sends, its budget covers this many
SLOW_MS = 1500  # the upstream's latency while the second router joins: requests are in flight


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _partition(account_id: str, partitions: int) -> int:
    return (murmur2(account_id.encode()) & 0x7FFFFFFF) % partitions


def _one_account_per_partition(stack: Stack) -> list[Tenant]:
    """A tenant on each partition of the request topics, with credit to spare."""
    wanted = stack.config.partitions
    chosen: dict[int, str] = {}
    while len(chosen) < wanted:
        account = f"rep-{uuid.uuid4().hex[:10]}"
        chosen.setdefault(_partition(account, wanted), account)
    return [
        create_tenant(stack.edge_url, ADMIN_TOKEN, account, {"credit": "10"})
        for _, account in sorted(chosen.items())
    ]


@pytest.fixture
def second_edge(stack: Stack) -> Iterator[str]:
    """Another edge process: its own port and id (so its own reply topic), the same topics."""
    port = free_port()
    stack.spawn(
        "edge-2",
        ["-m", "tollway.edge"],
        env={
            "TOLLWAY_EDGE_PORT": str(port),
            "TOLLWAY_EDGE_EDGE_ID": f"edge-test-2-{uuid.uuid4().hex[:6]}",
        },
    )
    url = f"http://127.0.0.1:{port}"
    try:
        stack.wait_healthy(f"{url}/healthz", "edge-2", timeout=180)
        yield url
    finally:
        _stop(stack, "edge-2")


@pytest.fixture
def second_router(stack: Stack) -> Iterator[Any]:
    """A callable that starts another router in the session's group; stopped after the test."""
    metrics = free_port()

    def start() -> str:
        stack.spawn(
            "router-2", ["-m", "tollway.router"], env={"TOLLWAY_METRICS_PORT": str(metrics)}
        )
        return f"http://127.0.0.1:{metrics}/metrics"

    try:
        yield start
    finally:
        _stop(stack, "router-2")


def _stop(stack: Stack, name: str) -> None:
    """SIGTERM (a clean leave hands a router's partitions back at once), SIGKILL if it hangs."""
    proc = stack.processes.get(name)
    if proc is None:
        return
    try:
        stack.kill(name, signal.SIGTERM)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def _attempts_served(metrics_url: str) -> float:
    try:
        text = httpx.get(metrics_url, timeout=2).text
    except httpx.HTTPError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tollway_upstream_attempts_total{") and 'outcome="ok"' in line
    )


def _set_budget(stack: Stack, tenant: Tenant, amount_micro: int) -> None:
    with httpx.Client(
        base_url=f"{stack.edge_url}/admin/v1", headers=_auth(ADMIN_TOKEN), timeout=10
    ) as admin:
        project = _project_of(stack, tenant)
        response = admin.post(
            "/budgets",
            json={
                "account_id": tenant.account_id,
                "name": "replica-cap",
                "scope": "project",
                "scope_id": project,
                "unit": "credit",
                "bucket": "credit",
                "amount": f"0.{amount_micro:06d}",
            },
        )
        assert response.status_code == 202, response.text
        budget_id = response.json()["id"]
        wait_for(
            lambda: any(
                b["id"] == budget_id
                for b in admin.get("/budgets", params={"account_id": tenant.account_id}).json()[
                    "budgets"
                ]
            ),
            what="the ledger to apply the budget",
        )


def _project_of(stack: Stack, tenant: Tenant) -> str:
    async def fetch() -> str:
        conn = await asyncpg.connect(stack.dsn)
        try:
            value = await conn.fetchval(
                "SELECT project_id FROM edge.api_keys WHERE account_id = $1", tenant.account_id
            )
            return str(value)
        finally:
            await conn.close()

    return asyncio.run(fetch())


async def _wave(edges: list[str], tenants: list[Tenant]) -> list[tuple[Tenant, httpx.Response]]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    limits = httpx.Limits(max_connections=len(tenants) * WAVE)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        plan = [(t, edges[i % len(edges)]) for t in tenants for i in range(WAVE)]
        answers = await asyncio.gather(
            *(
                client.post(f"{edge}/v1/chat/completions", headers=_auth(t.api_key), json=body)
                for t, edge in plan
            )
        )
    return [(t, a) for (t, _), a in zip(plan, answers, strict=True)]


def _receipt(stack: Stack, tenant: Tenant, request_id: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{stack.edge_url}/v1/receipts/{request_id}", headers=_auth(tenant.api_key), timeout=10
    )
    if response.status_code != 200:
        return None
    body: dict[str, Any] = response.json()
    return body if body["status"] in {"settled", "released", "rejected"} else None


async def _settlements(dsn: str, request_ids: list[str]) -> dict[str, tuple[int, int]]:
    """request id -> (settlements journaled, micro-units charged)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT body->'payload'->>'request_id' AS request_id, count(*) AS n,"
            " sum((body->'payload'->>'charged_micro')::bigint) AS charged"
            " FROM ledger.journal WHERE type = 'ledger.hold_settled'"
            " AND body->'payload'->>'request_id' = ANY($1::text[]) GROUP BY 1",
            request_ids,
        )
        return {r["request_id"]: (int(r["n"]), int(r["charged"])) for r in rows}
    finally:
        await conn.close()


async def _until_serving(
    edge: str, metrics: str, probes: list[Tenant], timeout: float = 120
) -> None:
    """Send a request from an account on every partition until the second router serves one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    body = {"model": MODEL, "messages": [{"role": "user", "content": "probe"}], "max_tokens": 1}
    async with httpx.AsyncClient(timeout=60) as client:
        while await asyncio.to_thread(_attempts_served, metrics) == 0:
            if loop.time() > deadline:
                pytest.fail(f"the second router served nothing in {timeout}s")
            await asyncio.gather(
                *(
                    client.post(f"{edge}/v1/chat/completions", headers=_auth(p.api_key), json=body)
                    for p in probes
                )
            )


def test_two_edges_and_a_router_joining_mid_burst_never_overrun_a_budget(
    stack, flat_model, upstream, second_edge, second_router
) -> None:
    tenants = _one_account_per_partition(stack)
    for tenant in tenants:
        _set_budget(stack, tenant, COVERED * DIRECT_MICRO)
    probes = _one_account_per_partition(stack)
    edges = [stack.edge_url, second_edge]

    async def burst() -> list[tuple[Tenant, httpx.Response]]:
        first = asyncio.create_task(_wave(edges, tenants))
        # The second router joins while the first wave waits on the slowed upstream.
        metrics = second_router()
        await _until_serving(stack.edge_url, metrics, probes)
        answers = await first
        return answers + await _wave(edges, tenants)

    upstream.post("/_control/latency", json={"channel": "openai-direct", "latency_ms": SLOW_MS})
    try:
        answers = asyncio.run(burst())
    finally:
        upstream.post("/_control/latency", json={"channel": "openai-direct", "latency_ms": 0})

    receipts = {
        answer.headers["x-request-id"]: wait_for(
            lambda t=tenant, a=answer: _receipt(stack, t, a.headers["x-request-id"]),
            timeout=120,
            what="every receipt to be final",
        )
        for tenant, answer in answers
    }
    seen = {"settled": 200, "rejected": 402}
    for _, answer in answers:
        receipt = receipts[answer.headers["x-request-id"]]
        # A loaded machine may let an edge give up waiting (504): the receipt is the truth.
        assert answer.status_code in {seen.get(receipt["status"]), 504}, (receipt, answer.text)
    settled = asyncio.run(_settlements(stack.dsn, list(receipts)))
    assert all(n == 1 for n, _ in settled.values()), "a request was settled twice"
    for tenant in tenants:
        mine = [receipts[a.headers["x-request-id"]]["status"] for t, a in answers if t is tenant]
        assert mine.count("settled") == COVERED, (tenant.account_id, mine)
        assert mine.count("rejected") == 2 * WAVE - COVERED
        charged = sum(
            settled[a.headers["x-request-id"]][1]
            for t, a in answers
            if t is tenant and a.headers["x-request-id"] in settled
        )
        assert charged == COVERED * DIRECT_MICRO
