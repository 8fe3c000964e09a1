"""A broker killed (-9) while answers are in flight, then started again.

Every request whose client got a complete answer is settled exactly once, however long the broker
was away: the router publishes an answered request's usage again until the broker takes it, and
commits its offset only then. Requests refused while the broker was down (503) are never charged,
and new requests and top-ups complete after the restart. The broker dies twice: once restarted
by the stack's supervisor (what ``make dev`` runs), once kept down longer than a producer's own
delivery timeout and then restarted by hand.

Apache Kafka only: the embedded Tansu keeps its log in memory (its build has no durable storage),
so a Tansu restart starts an empty log; ``make dev`` runs Apache Kafka for that reason. The module
runs on a stack of its own, so the outage cannot disturb the other tests.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, new_stack, run_stack, wait_for
from tollway.devstack.seed import create_tenant

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tollway.devstack.stack import Stack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("TOLLWAY_BROKER", "tansu") != "kafka",
        reason="a Tansu restart starts an empty in-memory log; run with TOLLWAY_BROKER=kafka",
    ),
]

MODEL = "gpt-4o-mini"
CLIENTS = 4
# How long the broker stays dead: longer than a producer's own delivery timeout (5 s), past which
# a send fails for good unless the service publishes it again itself. The outage's length is the
# scenario under test, not a wait for something to happen.
OUTAGE_SECONDS = 8


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = new_stack(Path(tmp_path_factory.mktemp("restart")))
    try:
        run_stack(running)
        yield running
    finally:
        running.stop()


@dataclass(frozen=True)
class Answer:
    request_id: str | None
    status: int
    complete: bool  # a JSON body, or a stream that reached [DONE]


def _call(client: httpx.Client, key: str, *, stream: bool) -> Answer:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"hi {uuid.uuid4().hex[:6]}"}],
        "max_tokens": 16,
        "stream": stream,
    }
    headers = {"authorization": f"Bearer {key}"}
    try:
        with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            text = "".join(r.iter_text())
            done = "[DONE]" in text if stream else r.status_code == 200
            return Answer(
                r.headers.get("x-request-id"), r.status_code, r.status_code == 200 and done
            )
    except httpx.HTTPError:
        return Answer(None, 0, complete=False)


class Load:
    """``CLIENTS`` threads calling one after another (half of them streamed) until stopped."""

    def __init__(self, stack: Stack, key: str) -> None:
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(stack.edge_url, key, i % 2 == 0))
            for i in range(CLIENTS)
        ]

    def _run(self, base: str, key: str, stream: bool) -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            while not self._stop.is_set():
                answer = _call(client, key, stream=stream)
                with self._lock:
                    self.answers.append(answer)

    def count(self, predicate: Any = lambda a: True) -> int:
        with self._lock:
            return sum(1 for a in self.answers if predicate(a))

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)


def _receipt(stack: Stack, key: str, request_id: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{stack.edge_url}/v1/receipts/{request_id}",
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    return response.json() if response.status_code == 200 else None


def _settlements(stack: Stack, account: str) -> dict[str, int]:
    """Journal entries that closed a hold, counted per request id."""
    counts: dict[str, int] = {}
    before = None
    with httpx.Client(
        base_url=f"{stack.edge_url}/admin/v1/ledger",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    ) as admin:
        while True:
            params = {"limit": 500, **({"before": before} if before else {})}
            page = admin.get(f"/accounts/{account}/entries", params=params).json()
            for entry in page["entries"]:
                request_id = entry["payload"].get("request_id")
                if entry["type"] in {"ledger.hold_settled", "ledger.late_captured"} and request_id:
                    counts[request_id] = counts.get(request_id, 0) + 1
            before = page["next_before"]
            if before is None:
                return counts


def test_every_answered_request_is_settled_once_across_a_broker_crash(own_stack) -> None:
    stack = own_stack
    account = f"t-{uuid.uuid4().hex[:10]}"
    tenant = create_tenant(stack.edge_url, ADMIN_TOKEN, account, {"credit": "50", "wallet": "50"})
    upstream = httpx.Client(base_url=stack.upstream_url, timeout=5)
    # Answers take a while upstream, so some are always between their upstream call and the
    # publishing of their usage when the broker dies.
    assert upstream.post("/_control/latency", json={"latency_ms": 300}).status_code < 300

    def served_more(than: int) -> bool:
        return load.count(lambda a: a.complete) >= than + 12

    with Load(stack, tenant.api_key) as load:
        wait_for(lambda: served_more(0), timeout=120, what="answers")
        # 1. As under `make dev`: the supervisor notices the dead broker and starts it again.
        stop = threading.Event()
        supervisor = threading.Thread(target=stack.supervise, args=(stop,))
        supervisor.start()
        try:
            stack.kill_broker()
            served = load.count(lambda a: a.complete)
            wait_for(lambda: served_more(served), timeout=180, what="answers after a restart")
        finally:
            stop.set()
            supervisor.join()
        # 2. Down for longer than a producer's delivery timeout, then started by hand.
        stack.kill_broker()
        time.sleep(OUTAGE_SECONDS)
        served = load.count(lambda a: a.complete)
        stack.restart_broker()
        wait_for(lambda: served_more(served), timeout=180, what="answers after a long outage")
    upstream.post("/_control/latency", json={"latency_ms": 0})

    answered = [a for a in load.answers if a.complete and a.request_id]
    refused = [a for a in load.answers if not a.complete and a.request_id]
    assert answered, "no request was answered"
    receipts = {
        a.request_id: wait_for(
            lambda a=a: (
                (r := _receipt(stack, tenant.api_key, a.request_id))
                and r["status"] in {"settled", "released"}
                and r
            ),
            timeout=120,
            what=f"the receipt of {a.request_id}",
        )
        for a in answered
    }
    unbilled = [rid for rid, r in receipts.items() if r["status"] != "settled" or not r["attempts"]]
    assert unbilled == [], f"answered but not billed: {unbilled}"
    settled = _settlements(stack, account)
    assert {rid: settled.get(rid, 0) for rid in receipts} == dict.fromkeys(receipts, 1)
    # Refused while the broker was away (503: the request never reached the log): never charged.
    # An accepted request whose answer missed the edge's deadline (504) may still have been
    # served: then it is charged once and its receipt shows the served attempt.
    for a in refused:
        receipt = _receipt(stack, tenant.api_key, a.request_id or "") or {}
        charged = receipt.get("charged_micro", 0)
        if a.status == 503:
            assert charged == 0, (a.request_id, receipt.get("status"))
        elif charged:
            assert receipt["status"] == "settled", a.request_id
            assert any(att["outcome"] == "ok" for att in receipt["attempts"]), a.request_id
            assert settled.get(a.request_id or "", 0) <= 1, a.request_id

    # The stack serves and tops up again.
    status = _call(httpx.Client(base_url=stack.edge_url, timeout=30), tenant.api_key, stream=False)
    assert status.complete
    with httpx.Client(
        base_url=f"{stack.edge_url}/admin/v1", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as admin:
        before = _credit(admin, account)
        r = admin.post(
            "/topups",
            json={
                "account_id": account,
                "bucket": "credit",
                "unit": "credit",
                "amount": "1",
                "idempotency_key": uuid.uuid4().hex,
            },
        )
        assert r.status_code == 202, r.text
        wait_for(lambda: _credit(admin, account) == before + 1_000_000, what="the top-up")


def _credit(admin: httpx.Client, account: str) -> int:
    balances = admin.get(f"/ledger/accounts/{account}").json()["balances"]
    return next(int(b["amount_micro"]) for b in balances if b["account"] == f"{account}/credit")
