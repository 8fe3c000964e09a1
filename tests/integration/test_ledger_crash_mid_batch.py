"""kill -9 of the real ledger process inside a batch's open transaction, under a steady load.

The ledger is started with its test-only pause armed (``crash_pause.py``): the first batch of at
least ``MIN_RECORDS`` records that settles something writes its journal, postings, balances,
holds and receipts, reports the journal rows it wrote (uncommitted) to a file and waits. The
test reads that report, checks none of those rows is visible to anyone else, SIGKILLs the
process and starts a plain ledger. A load of top-ups, requests, attempts and finishes keeps
arriving throughout. Afterwards nothing is lost and nothing is doubled: every request holds and
settles exactly once, every top-up is booked once, balances equal their postings and the sums
the test computes from what it published, and ``tollway ledger verify`` finds live = replay.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from tests.conftest import wait_for
from tests.integration import ledger_io as io
from tollway.events import topics
from tollway.events.envelope import Envelope, make
from tollway.events.gateway import AttemptFinished, TopUpRequested
from tollway.events.ids import derived_id
from tollway.events.pricing import Usage, cost_micro

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

CHANNEL = io.CHANNEL.model_copy(update={"channel_id": "crash-mid-batch-channel"})
ACCOUNTS = 8
PER_CHUNK = 8  # requests per account and chunk
CHUNKS = 6
FUNDING = 50_000_000
# Smaller than a chunk's usage (2 x 64 records), so a batch that qualifies forms in practice.
MIN_RECORDS = 48


@dataclass
class Load:
    """A steady stream, chunk by chunk: top-ups and requests, then (holds placed) their usage."""

    dsn: str
    bootstrap: str
    prefix: str
    accounts: list[str]
    expected: dict[str, int] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)
    topups: int = 0

    def run(self) -> None:
        rng = random.Random(16)
        for chunk in range(CHUNKS):
            requests, usage = self._chunk(rng, chunk)
            io.publish(self.bootstrap, requests, topics.REQUESTS)
            placed = len(self.request_ids)
            # A router reports usage only for authorized requests: this chunk's holds first.
            # While the ledger is paused and killed this waits for its successor.
            wait_for(
                lambda n=placed: _count(self.dsn, self.prefix, "ledger.hold_placed") >= n,
                timeout=240,
                what=f"chunk {chunk}'s holds",
            )
            io.publish(self.bootstrap, usage, topics.USAGE)

    def _chunk(
        self, rng: random.Random, chunk: int
    ) -> tuple[list[Envelope[Any]], list[Envelope[Any]]]:
        requests: list[Envelope[Any]] = []
        usage: list[Envelope[Any]] = []
        for account in self.accounts:
            amount = rng.randint(1, 100_000)
            requests.append(_topup(account, amount, f"{account}-{chunk}"))
            self.expected[account] += amount
            self.topups += 1
            for _ in range(PER_CHUNK):
                env, spent = _served_request(rng, account, usage)
                requests.append(env)
                self.expected[account] -= spent
                self.request_ids.append(env.payload.request_id)
        return requests, usage


def _topup(account: str, micro: int, key: str) -> Envelope[TopUpRequested]:
    return make(
        TopUpRequested(
            account_id=account, bucket="credit", unit="credit", amount_micro=micro,
            idempotency_key=key,
        )
    )  # fmt: skip


def _served_request(
    rng: random.Random, account: str, usage: list[Envelope[Any]]
) -> tuple[Envelope[Any], int]:
    """A request, its attempt and finish appended to ``usage``; returns it and what it costs."""
    env = io.request(account, "edge-crash", timedelta(hours=2), max_output_tokens=2000)
    env = env.model_copy(update={"payload": env.payload.model_copy(update={"plan": [CHANNEL]})})
    # Within the hold (100 input, 2000 output tokens), so the charge is the cost itself.
    tokens = Usage(input_tokens=rng.randint(1, 100), output_tokens=rng.randint(0, 2000))
    attempt = AttemptFinished(
        request_id=env.payload.request_id,
        account_id=account,
        attempt=1,
        candidate=CHANNEL,
        outcome="ok",
        status=200,
        latency_ms=rng.randint(10, 900),
        usage=tokens,
    )
    finished = io.served(env.payload, "hold_" + derived_id(env.id, "hold"), tokens)
    finished = finished.model_copy(
        update={
            "payload": finished.payload.model_copy(
                update={"served_channel_id": CHANNEL.channel_id, "price": CHANNEL.price}
            )
        }
    )
    usage.extend([make(attempt, trace=env.trace), finished])
    return env, cost_micro(tokens, CHANNEL.price)


def _count(dsn: str, prefix: str, event_type: str) -> int:
    return int(
        io.fetchval(
            dsn,
            "SELECT count(*) FROM ledger.journal WHERE account_id LIKE $1 AND type = $2",
            f"{prefix}%",
            event_type,
        )
    )


def _verify_cli(stack: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": stack.dsn, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "tollway.cli", "ledger", "verify", "--database", "crash_mid_batch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _kill_while_paused(stack: Any, report_path: Path, load_done: Any) -> dict[str, Any]:
    """Wait for the paused batch's report, check its rows are unseen, SIGKILL the ledger."""
    wait_for(
        lambda: report_path.exists() or load_done(),
        timeout=240,
        what="a batch to pause inside its transaction",
    )
    assert report_path.exists(), f"no batch of >= {MIN_RECORDS} records with a finish formed"
    report: dict[str, Any] = orjson.loads(report_path.read_bytes())
    assert report["pid"] == stack.processes["ledger"].pid
    written = [j["event_id"] for j in report["journal"]]
    visible = io.fetchval(
        stack.dsn, "SELECT count(*) FROM ledger.journal WHERE event_id = ANY($1::text[])", written
    )
    assert visible == 0, "the paused batch's journal rows are uncommitted"
    stack.kill("ledger", signal.SIGKILL)
    return report


def test_kill_9_inside_a_batch_transaction_under_load_loses_and_doubles_nothing(
    stack, tmp_path
) -> None:
    prefix = f"midbatch-{uuid.uuid4().hex[:6]}-"
    accounts = [f"{prefix}{i}" for i in range(ACCOUNTS)]
    io.publish(
        stack.bootstrap, [_topup(a, FUNDING, f"{a}-funding") for a in accounts], topics.REQUESTS
    )
    wait_for(lambda: _count(stack.dsn, prefix, "ledger.topped_up") == ACCOUNTS, what="funding")
    load = Load(stack.dsn, stack.bootstrap, prefix, accounts, dict.fromkeys(accounts, FUNDING))
    report_path = tmp_path / "paused.json"

    stack.kill("router")  # nothing but the load may finish these requests
    stack.kill("ledger", signal.SIGKILL)
    armed = stack.spawn(
        "ledger",
        ["-m", "tollway.ledger"],
        {
            "TOLLWAY_LEDGER_CRASH_PAUSE_FILE": str(report_path),
            "TOLLWAY_LEDGER_CRASH_PAUSE_MIN_RECORDS": str(MIN_RECORDS),
        },
    )
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            running = pool.submit(load.run)
            try:
                report = _kill_while_paused(stack, report_path, running.done)
            finally:
                # Whatever happened, the rest of the suite gets a plain ledger, never the armed one.
                if stack.processes.get("ledger") is armed:
                    stack.kill("ledger", signal.SIGKILL)
                if "ledger" not in stack.processes:
                    stack.spawn("ledger", ["-m", "tollway.ledger"])
            running.result(timeout=600)
        total = len(load.request_ids)
        wait_for(
            lambda: _count(stack.dsn, prefix, "ledger.hold_settled") >= total,
            timeout=240,
            what="every settlement after the restart",
        )
    finally:
        if "router" not in stack.processes:
            stack.spawn("router", ["-m", "tollway.router"])

    # The kill came mid-batch: the batch had settled requests, written but not committed.
    assert report["records"] >= MIN_RECORDS
    paused_types = Counter(j["type"] for j in report["journal"])
    assert paused_types["ledger.hold_settled"] > 0, report["types"]
    # Now each of those rows exists exactly once (ids are derived from their causes).
    paused_ids = [j["event_id"] for j in report["journal"]]
    assert io.fetchval(
        stack.dsn,
        "SELECT count(*) FROM ledger.journal WHERE event_id = ANY($1::text[])",
        paused_ids,
    ) == len(set(paused_ids))

    per_request = io.fetch(
        stack.dsn,
        "SELECT body -> 'payload' ->> 'request_id' AS request_id, type, count(*) AS n"
        " FROM ledger.journal WHERE account_id LIKE $1"
        " AND type IN ('ledger.hold_placed', 'ledger.hold_settled') GROUP BY 1, 2",
        f"{prefix}%",
    )
    assert {(r["request_id"], r["type"]) for r in per_request} == {
        (rid, t) for rid in load.request_ids for t in ("ledger.hold_placed", "ledger.hold_settled")
    }, "every request held and settled (0 lost)"
    assert {r["n"] for r in per_request} == {1}, "none held or settled twice (0 doubled)"
    assert _count(stack.dsn, prefix, "ledger.topped_up") == ACCOUNTS + load.topups
    doubled_causes = io.fetch(
        stack.dsn,
        "SELECT cause_id, type FROM ledger.journal WHERE account_id LIKE $1"
        " GROUP BY 1, 2 HAVING count(*) > 1",
        f"{prefix}%",
    )
    assert doubled_causes == []

    receipts = io.fetch(
        stack.dsn,
        "SELECT status FROM ledger.receipts WHERE account_id LIKE $1",
        f"{prefix}%",
    )
    assert len(receipts) == total
    assert {r["status"] for r in receipts} == {"settled"}

    # Balances: what the test published adds up to them, and each equals its postings.
    assert {a: io.balance(stack.dsn, a) for a in accounts} == load.expected
    drift = io.fetch(
        stack.dsn,
        "SELECT b.account FROM ledger.balances b"
        " LEFT JOIN (SELECT p.account, p.unit, sum(p.amount) AS total FROM ledger.postings p"
        " JOIN ledger.journal j USING (event_id) GROUP BY 1, 2) p USING (account, unit)"
        " WHERE b.account LIKE $1 AND b.amount <> coalesce(p.total, 0)",
        f"{prefix}%",
    )
    assert drift == []

    done = _verify_cli(stack)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   live_digest_equals_replay" in done.stdout
