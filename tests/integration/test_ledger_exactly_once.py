"""The ledger applies every event exactly once over at-least-once delivery, survives kill -9,
and keeps double entry: postings sum to zero per unit and balances equal their postings.
"""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.conftest import wait_for
from tests.integration import ledger_io as io
from tollway.events import topics
from tollway.events.envelope import Envelope, make
from tollway.events.gateway import AttemptFinished, RequestFinished, TopUpRequested
from tollway.events.ids import derived_id
from tollway.events.pricing import Price, Usage, cost_micro
from tollway.ledger import replay, verify
from tollway.ledger.handlers import LedgerHandler
from tollway.runtime.consumer import Record

pytestmark = pytest.mark.integration


def _topup(account: str, micro: int, key: str | None = None) -> Envelope[TopUpRequested]:
    return make(
        TopUpRequested(
            account_id=account,
            bucket="credit",
            unit="credit",
            amount_micro=micro,
            idempotency_key=key or uuid.uuid4().hex,
        )
    )


async def _publish(
    bootstrap: str, envelopes: list[Envelope[Any]], topic: str = topics.REQUESTS
) -> None:
    await io.publish_async(bootstrap, envelopes, topic)


async def _fetchval(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def _balance(stack: Any, account: str) -> int:
    value = asyncio.run(
        _fetchval(
            stack.dsn,
            "SELECT amount FROM ledger.balances WHERE account = $1 AND unit = 'credit'",
            f"{account}/credit",
        )
    )
    return int(value or 0)


def _journal_count(stack: Any, account_prefix: str, event_type: str) -> int:
    return int(
        asyncio.run(
            _fetchval(
                stack.dsn,
                "SELECT count(*) FROM ledger.journal WHERE account_id LIKE $1 AND type = $2",
                f"{account_prefix}%",
                event_type,
            )
        )
    )


def test_redelivered_events_are_applied_once(stack) -> None:
    account = f"dup-{uuid.uuid4().hex[:8]}"
    once = _topup(account, 1_500_000)
    asyncio.run(_publish(stack.bootstrap, [once, once, once, _topup(account, 1)]))

    wait_for(lambda: _journal_count(stack, account, "ledger.topped_up") == 2, what="top-ups")
    marker = _topup(account, 2)  # applied after the duplicates on the same partition
    asyncio.run(_publish(stack.bootstrap, [once, marker]))
    wait_for(lambda: _journal_count(stack, account, "ledger.topped_up") == 3, what="marker")

    assert _balance(stack, account) == 1_500_003


def test_idempotency_key_reused_with_another_amount_is_refused(stack) -> None:
    account = f"idem-{uuid.uuid4().hex[:8]}"
    asyncio.run(
        _publish(
            stack.bootstrap,
            [_topup(account, 100, "k1"), _topup(account, 100, "k1"), _topup(account, 999, "k1")],
        )
    )

    wait_for(lambda: _journal_count(stack, account, "ledger.topup_refused") == 1, what="refusal")
    assert _journal_count(stack, account, "ledger.topped_up") == 1
    assert _balance(stack, account) == 100


def test_kill_9_mid_stream_loses_nothing_and_applies_nothing_twice(stack) -> None:
    prefix = f"crash-{uuid.uuid4().hex[:6]}-"
    accounts = [f"{prefix}{i}" for i in range(16)]
    # Enough to be mid-stream when killed on a loaded 2-core machine, small enough to catch up.
    events = [_topup(accounts[i % 16], 1000 + i) for i in range(1000)]
    expected = dict.fromkeys(accounts, 0)
    for e in events:
        expected[e.payload.account_id] += e.payload.amount_micro
    asyncio.run(_publish(stack.bootstrap, events))

    applied = wait_for(
        lambda: _journal_count(stack, prefix, "ledger.topped_up") or None,
        what="the ledger to start applying",
    )
    stack.kill("ledger", signal.SIGKILL)
    assert applied < len(events), "the ledger finished before it could be killed"
    stack.spawn("ledger", ["-m", "tollway.ledger"])

    wait_for(
        lambda: _journal_count(stack, prefix, "ledger.topped_up") == len(events),
        timeout=180,
        what="every top-up after the restart",
    )
    assert {a: _balance(stack, a) for a in accounts} == expected


def test_postings_are_append_only(stack) -> None:
    for statement in (
        "UPDATE ledger.postings SET amount = amount + 1",
        "DELETE FROM ledger.postings",
        "UPDATE ledger.journal SET type = 'x'",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            asyncio.run(_fetchval(stack.dsn, statement))


def test_postings_balance_per_unit_and_balances_equal_their_postings(stack) -> None:
    unbalanced = asyncio.run(
        _fetchval(
            stack.dsn,
            """
        SELECT count(*) FROM (SELECT event_id, unit FROM ledger.postings
                              GROUP BY event_id, unit HAVING sum(amount) <> 0) AS bad""",
        )
    )
    drift = asyncio.run(
        _fetchval(
            stack.dsn,
            """
        SELECT count(*) FROM ledger.balances b
        FULL JOIN (SELECT account, unit, sum(amount) AS total FROM ledger.postings
                   GROUP BY account, unit) p USING (account, unit)
        WHERE coalesce(b.amount, 0) <> coalesce(p.total, 0)""",
        )
    )
    total = asyncio.run(_fetchval(stack.dsn, "SELECT count(*) FROM ledger.postings"))

    assert total > 0
    assert unbalanced == 0
    assert drift == 0


async def _dead_letters(bootstrap: str, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        batch = await consumer.getmany(partition, timeout_ms=1000)
        return list(batch.get(partition, []))
    finally:
        await consumer.stop()


def test_a_poison_message_goes_to_the_dead_letter_topic_and_the_partition_moves_on(stack) -> None:
    account = f"poison-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex

    async def publish_poison() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(
                topics.REQUESTS, value=f"not json {marker}".encode(), key=account.encode()
            )
        finally:
            await producer.stop()

    asyncio.run(publish_poison())
    asyncio.run(_publish(stack.bootstrap, [_topup(account, 42)]))

    wait_for(lambda: _balance(stack, account) == 42, what="the top-up behind the poison")
    dead = wait_for(
        lambda: [
            m
            for m in asyncio.run(_dead_letters(stack.bootstrap, topics.dlq_topic(topics.REQUESTS)))
            if marker.encode() in m.value
        ],
        what="the poison message in the DLQ",
    )
    [message] = dead
    assert message.key == account.encode()
    reason = dict(message.headers)["x-dlq-reason"].decode()
    assert "JSON" in reason or "json" in reason


def test_a_second_finish_for_a_settled_hold_moves_no_money(stack, tenant_factory) -> None:
    tenant = tenant_factory({"credit": "5"})
    headers = {"authorization": f"Bearer {tenant.api_key}"}
    answer = httpx.post(
        f"{stack.edge_url}/v1/chat/completions",
        headers=headers,
        timeout=30,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
    )
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]

    def settled() -> dict[str, Any] | None:
        body = httpx.get(f"{stack.edge_url}/v1/receipts/{request_id}", headers=headers).json()
        return body if body.get("status") == "settled" else None

    receipt = wait_for(settled, what="the settlement")
    balance_after = _balance(stack, tenant.account_id)
    forged = make(
        RequestFinished(
            request_id=request_id,
            account_id=tenant.account_id,
            hold_id=receipt["hold"]["hold_id"],
            served_attempt=1,
            served_channel_id="openai-direct",
            usage=Usage(output_tokens=10**6),
            price=Price(input=0, output=10**6),
            status=200,
            attempts=1,
        )
    )
    asyncio.run(_publish(stack.bootstrap, [forged], topics.USAGE))

    wait_for(
        lambda: asyncio.run(
            _fetchval(
                stack.dsn, "SELECT 1 FROM ledger.applied_events WHERE event_id = $1", forged.id
            )
        ),
        what="the ledger to consume the forged finish",
    )
    assert _balance(stack, tenant.account_id) == balance_after
    settlements = asyncio.run(
        _fetchval(
            stack.dsn,
            "SELECT count(*) FROM ledger.journal WHERE type = 'ledger.hold_settled'"
            " AND body -> 'payload' ->> 'request_id' = $1",
            request_id,
        )
    )
    assert settlements == 1


def _count(stack: Any, prefix: str, event_type: str) -> int:
    return _journal_count(stack, prefix, event_type)


def _usage_stream(accounts: list[str], edge_id: str, per_account: int) -> tuple[list, list, dict]:
    """Requests, then their attempts and finishes, and the balance each account must end at."""
    rng = random.Random(7)
    requests, usage, charged = [], [], dict.fromkeys(accounts, 0)
    for i in range(per_account * len(accounts)):
        account = accounts[i % len(accounts)]
        env = io.request(account, edge_id, deadline_in=timedelta(hours=2), max_output_tokens=2000)
        env = env.model_copy(
            update={"payload": env.payload.model_copy(update={"plan": [CRASH_CHANNEL]})}
        )
        tokens = Usage(input_tokens=rng.randint(1, 500), output_tokens=rng.randint(0, 3000))
        hold = cost_micro(Usage(input_tokens=100, output_tokens=2000), CRASH_CHANNEL.price)
        charged[account] += min(cost_micro(tokens, CRASH_CHANNEL.price), hold)
        requests.append(env)
        attempt = AttemptFinished(
            request_id=env.payload.request_id,
            account_id=account,
            attempt=1,
            candidate=CRASH_CHANNEL,
            outcome="ok",
            status=200,
            latency_ms=rng.randint(10, 900),
            usage=tokens,
        )
        usage.append(make(attempt))
        hold_id = "hold_" + derived_id(env.id, "hold")
        finished = io.served(env.payload, hold_id, tokens)
        usage.append(
            finished.model_copy(
                update={
                    "payload": finished.payload.model_copy(
                        update={
                            "served_channel_id": CRASH_CHANNEL.channel_id,
                            "price": CRASH_CHANNEL.price,
                        }
                    )
                }
            )
        )
    return requests, usage, charged


CRASH_CHANNEL = io.CHANNEL.model_copy(update={"channel_id": "crash-test-channel"})


def test_kill_9_many_times_on_the_usage_path_applies_every_event_exactly_once(stack) -> None:
    prefix = f"usage-crash-{uuid.uuid4().hex[:6]}-"
    accounts = [f"{prefix}{i}" for i in range(8)]
    funding = [_topup(a, 50_000_000) for a in accounts]
    asyncio.run(_publish(stack.bootstrap, funding))
    wait_for(lambda: _count(stack, prefix, "ledger.topped_up") == len(accounts), what="funding")
    requests, usage, charged = _usage_stream(accounts, stack.config.edge_id, per_account=25)
    total = len(requests)
    stack.kill("router")  # nothing but the stream below may finish these requests
    chunks = 5
    size = -(-total // chunks)
    try:
        for c in range(chunks):
            part = slice(c * size, (c + 1) * size)
            placed = min(part.stop, total)
            # A router only reports usage for requests the ledger authorized: the chunk's holds
            # first (gw.requests and gw.usage are separate logs with no order between them).
            asyncio.run(_publish(stack.bootstrap, requests[part]))
            wait_for(
                lambda n=placed: _count(stack, prefix, "ledger.hold_placed") >= n,
                timeout=120,
                what="the chunk's holds",
            )
            before = _count(stack, prefix, "ledger.hold_settled")
            asyncio.run(
                _publish(stack.bootstrap, usage[2 * part.start : 2 * part.stop], topics.USAGE)
            )
            # Kill at a moment that depends on scheduling: after the first settlement of this
            # chunk, anywhere inside or after its batches, before or after the outbox published.
            wait_for(
                lambda b=before: _count(stack, prefix, "ledger.hold_settled") > b,
                timeout=120,
                what="the ledger to start settling the chunk",
            )
            stack.kill("ledger", signal.SIGKILL)
            stack.spawn("ledger", ["-m", "tollway.ledger"])
        wait_for(
            lambda: _count(stack, prefix, "ledger.hold_settled") >= total,
            timeout=240,
            what="every settlement after the restarts",
        )
    finally:
        stack.spawn("router", ["-m", "tollway.router"])

    assert _count(stack, prefix, "ledger.hold_placed") == total
    assert _count(stack, prefix, "ledger.hold_settled") == total
    assert {a: _balance(stack, a) for a in accounts} == {
        a: 50_000_000 - charged[a] for a in accounts
    }
    receipts = io.fetch(
        stack.dsn,
        "SELECT status, jsonb_array_length(body -> 'attempts') AS attempts FROM ledger.receipts"
        " WHERE account_id LIKE $1",
        f"{prefix}%",
    )
    assert len(receipts) == total
    assert {(r["status"], r["attempts"]) for r in receipts} == {("settled", 1)}
    live = asyncio.run(_snapshot(stack.dsn))
    replayed = asyncio.run(
        replay.replay(stack.dsn, stack.bootstrap, "crash_replay", ends=live.offsets)
    )
    assert replayed.diverged == 0
    differing = [t for t in live.tables if live.tables[t] != replayed.tables.get(t)]
    if differing:
        rows = asyncio.run(verify.examples(stack.dsn, "crash_replay", differing))
        pytest.fail("the replay differs from live:\n" + "\n".join(rows))


async def _snapshot(dsn: str) -> verify.Snapshot:
    conn = await asyncpg.connect(dsn)
    try:
        live = await verify.snapshot(conn, "ledger")
        assert await verify.wait_journal_published(conn, live.outbox_seq, 30)
        return live
    finally:
        await conn.close()


async def _apply_one_batch(
    dsn: str, envelopes: list[Envelope[Any]], account: str, request_id: str
) -> tuple[int, list[str], dict[str, Any]]:
    """Hand ``envelopes`` to the ledger's handler as one batch; read what it did; roll back.

    Rolled back because these events are not on the log: left in the shared stack's ledger, they
    would make its live state differ from a replay (test_ledger_replay checks exactly that).
    Returns the account's credit balance, the request's journal types and its receipt.
    """
    records = [
        Record(topics.REQUESTS, 0, offset, env.payload.account_id, env)  # type: ignore[attr-defined]
        for offset, env in enumerate(envelopes)
    ]
    conn = await asyncpg.connect(dsn)
    scratch = conn.transaction()
    await scratch.start()
    try:
        await LedgerHandler()(conn, records)
        balance = await conn.fetchval(
            "SELECT amount FROM ledger.balances WHERE account = $1 AND unit = 'credit'",
            f"{account}/credit",
        )
        types = await conn.fetch(
            "SELECT type FROM ledger.journal WHERE body -> 'payload' ->> 'request_id' = $1",
            request_id,
        )
        receipt = await conn.fetchval(
            "SELECT body FROM ledger.receipts WHERE request_id = $1", request_id
        )
    finally:
        await scratch.rollback()
        await conn.close()
    return int(balance), sorted(r["type"] for r in types), orjson.loads(receipt)


def test_duplicates_within_one_batch_are_applied_once_and_the_receipt_keeps_every_step(
    stack,
) -> None:
    # A request, its attempt and its finish, each delivered twice in the same batch. Without
    # the dedupe the second RequestReceived would place its hold again (and fail the batch),
    # the second attempt would be added to the receipt twice.
    account = f"batchdup-{uuid.uuid4().hex[:8]}"
    top = _topup(account, 5_000_000)
    req = io.request(account, "edge-test", timedelta(minutes=1))
    hold_id = "hold_" + derived_id(req.id, "hold")
    usage = Usage(input_tokens=100, output_tokens=50)
    attempt = make(
        AttemptFinished(
            request_id=req.payload.request_id,
            account_id=account,
            attempt=1,
            candidate=io.CHANNEL,
            outcome="ok",
            status=200,
            usage=usage,
            latency_ms=12,
        ),
        trace=req.trace,
    )
    fin = io.served(req.payload, hold_id, usage)
    batch = [top, top, req, req, attempt, attempt, fin, fin]

    balance, types, receipt = asyncio.run(
        _apply_one_batch(stack.dsn, batch, account, req.payload.request_id)
    )

    charged = cost_micro(usage, io.CHANNEL.price)
    assert balance == 5_000_000 - charged
    assert types == ["ledger.hold_placed", "ledger.hold_settled"]
    assert len(receipt["attempts"]) == 1, "the attempt is on the receipt once"
    assert receipt["status"] == "settled"
    assert receipt["charged_micro"] == charged
