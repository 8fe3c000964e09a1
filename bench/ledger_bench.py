"""Ledger throughput: settle (Kafka -> Postgres, batched) and replay, in events per second.

    python bench/ledger_bench.py [--requests N] [--batch B] [--durable] [--per-event]
                                 [--no-resident]

Starts an embedded Postgres and broker (no other service), publishes N top-ups-backed requests
and then their attempts and finishes, and runs the ledger's own consumer (the exactly-once
``TransactionalConsumer`` with the production handler and outbox relay) in this process:

* authorize: N ``RequestReceived`` consumed -> holds, receipts, outbox;
* settle: N ``AttemptFinished`` + N ``RequestFinished`` consumed -> settlements, receipts;
* replay: ``tollway ledger replay`` of the whole log into a fresh database.

Baselines measured in the same run on the same Postgres: a plain batched INSERT into a
one-column table (the ceiling of any Postgres writer) and one INSERT per round trip (what a
statement the ledger issues costs). A profile of the replay's apply phase says where the time
goes. Writes a Markdown report to bench/results/ledger.md (``--out`` to name another file).
Measures only; asserts nothing.

``--durable``: Postgres with fsync and synchronous commit on (the default is the throwaway
test cluster's fsync off). ``--no-resident``: folded runs over state loaded from Postgres for
each batch (nothing kept in memory across batches). ``--per-event``: the handler with every
record through its per-event use case, as the ledger applied all of them before runs were
folded (the same-run "before").
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from tollway.devstack.broker import free_port
from tollway.devstack.stack import Stack, StackConfig
from tollway.events import topics
from tollway.events.envelope import Envelope, encode, make
from tollway.events.gateway import (
    AttemptFinished,
    Candidate,
    RequestFinished,
    RequestReceived,
    TopUpRequested,
)
from tollway.events.ids import derived_id
from tollway.events.pricing import Price, Usage
from tollway.ledger import fold_inputs, replay
from tollway.ledger.handlers import LedgerHandler
from tollway.runtime.consumer import Record, TransactionalConsumer
from tollway.runtime.kafka import new_producer
from tollway.runtime.outbox import OutboxRelay

RESULTS = Path(__file__).parent / "results"
CHANNEL = Candidate(
    channel_id="bench",
    channel="bench",
    brand="bench",
    route_type="direct",
    bucket="credit",
    upstream_model="m",
    price=Price(input=150_000, output=600_000),
)


def handler_for(args: argparse.Namespace) -> LedgerHandler:
    """The handler the options name (the production one by default)."""
    if args.per_event:
        return PerEventHandler()
    return LedgerHandler(resident=not args.no_resident)


def mode(args: argparse.Namespace) -> str:
    """The handler's mode, as the report names it."""
    if args.per_event:
        return "per event (nothing folded)"
    if args.no_resident:
        return "folded runs, state loaded per batch"
    return "folded runs, partition state kept in memory across batches"


class PerEventHandler(LedgerHandler):
    """The ledger's handler with nothing folded: every record through its per-event use case.

    Top-ups (only the fold decides them) are folded one at a time over state read afresh.
    """

    async def _fold_run(self, conn: asyncpg.Connection, run: list[Record]) -> list[Any]:
        out: list[Any] = []
        for record in run:
            if isinstance(record.envelope.payload, fold_inputs.FOLDED):
                out.extend(await super()._fold_run(conn, [record]))
                self._call.forget(record.partition)
            else:
                out.extend(await self._one_by_one(conn, [record]))
        return out


def progress(message: str) -> None:
    """One line of progress on stderr (the report goes to a file)."""
    print(f"  · {message}", file=sys.stderr, flush=True)


def workload(requests: int, accounts: int) -> tuple[list[Envelope[Any]], ...]:
    """Top-ups, requests, then attempts and finishes (the router's share of gw.usage)."""
    rng = random.Random(1)
    names = [f"bench-{i}" for i in range(accounts)]
    topups = [
        make(
            TopUpRequested(
                account_id=a,
                bucket="credit",
                unit="credit",
                amount_micro=10**15,
                idempotency_key=f"bench-{a}",
            )
        )
        for a in names
    ]
    reqs, usage = [], []
    deadline = datetime.now(UTC) + timedelta(hours=6)
    for i in range(requests):
        account = names[i % accounts]
        env = make(
            RequestReceived(
                request_id=f"req_{uuid.uuid4().hex}",
                edge_id="bench",
                account_id=account,
                key_id="k",
                project_id="p",
                catalog_model="m",
                body={},
                plan=[CHANNEL],
                estimated_input_tokens=200,
                max_output_tokens=1000,
                deadline_at=deadline,
            )
        )
        tokens = Usage(input_tokens=rng.randint(1, 400), output_tokens=rng.randint(1, 900))
        reqs.append(env)
        usage.append(
            make(
                AttemptFinished(
                    request_id=env.payload.request_id,
                    account_id=account,
                    attempt=1,
                    candidate=CHANNEL,
                    outcome="ok",
                    status=200,
                    latency_ms=100,
                    usage=tokens,
                )
            )
        )
        usage.append(
            make(
                RequestFinished(
                    request_id=env.payload.request_id,
                    account_id=account,
                    hold_id="hold_" + derived_id(env.id, "hold"),
                    served_attempt=1,
                    served_channel_id="bench",
                    served_bucket="credit",
                    usage=tokens,
                    price=CHANNEL.price,
                    status=200,
                    attempts=1,
                )
            )
        )
    return topups, reqs, usage


async def publish(bootstrap: str, topic: str, envelopes: list[Envelope[Any]]) -> None:
    """Publish keyed by account; wait for every ack."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=encode(e), key=e.payload.account_id.encode())
            for e in envelopes
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def count_applied(pool: asyncpg.Pool) -> int:
    """Input events the ledger has applied so far."""
    return int(await pool.fetchval("SELECT count(*) FROM ledger.applied_events"))


async def timed_consume(pool: asyncpg.Pool, target: int, what: str) -> tuple[float, float]:
    """(seconds until the consumer applied its first new event, seconds from it to ``target``).

    The first figure is the broker and consumer group noticing new data (a poll cycle, a
    rebalance); the second is the throughput this benchmark is about.
    """
    requested = time.perf_counter()
    start_count = await count_applied(pool)
    first: float | None = None
    last = 0.0
    while (done := await count_applied(pool)) < target:
        now = time.perf_counter()
        if first is None and done > start_count:
            first, start_count = now, done
        if now - last > 2:
            last = now
            progress(f"{what}: {done:,}/{target:,} applied")
        await asyncio.sleep(0.02)
    end = time.perf_counter()
    if first is None:  # everything arrived between two polls
        first = end
    return first - requested, max(end - first, 1e-3)


async def baselines(dsn: str, rows: int) -> dict[str, float]:
    """Plain INSERT rates on the same Postgres: batched, and one per round trip."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TEMP TABLE bench_rows (v text)")
        values = [(f"row-{i}",) for i in range(rows)]
        started = time.perf_counter()
        for i in range(0, rows, 1000):
            async with conn.transaction():
                await conn.executemany("INSERT INTO bench_rows VALUES ($1)", values[i : i + 1000])
        batched = rows / (time.perf_counter() - started)
        single_rows = min(rows, 5000)
        started = time.perf_counter()
        async with conn.transaction():
            for i in range(single_rows):
                await conn.execute("INSERT INTO bench_rows VALUES ($1)", values[i][0])
        single = single_rows / (time.perf_counter() - started)
    finally:
        await conn.close()
    return {"batched_insert_rows_per_s": batched, "round_trips_per_s": single}


async def ledger_phase(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    """Run the consumer in-process through authorize and settle; return the figures."""
    topups, reqs, usage = workload(args.requests, args.accounts)
    pool = await asyncpg.create_pool(stack.dsn, min_size=2, max_size=4)
    producer = new_producer(stack.bootstrap, "bench-ledger")
    await producer.start()
    relay = OutboxRelay(pool, "ledger", producer)
    consumer = TransactionalConsumer(
        pool=pool,
        schema="ledger",
        bootstrap=stack.bootstrap,
        group_id="ledger",
        topics=[topics.REQUESTS, topics.USAGE],
        handler=handler_for(args),
        relay=relay,
        max_records=args.batch,
    )
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]
    try:
        progress(f"publishing {len(topups) + len(reqs):,} top-ups and requests")
        await publish(stack.bootstrap, topics.REQUESTS, [*topups, *reqs])
        auth_wait, authorize = await timed_consume(pool, len(topups) + len(reqs), "authorize")
        progress(f"publishing {len(usage):,} attempts and finishes")
        await publish(stack.bootstrap, topics.USAGE, usage)
        settle_wait, settle = await timed_consume(
            pool, len(topups) + len(reqs) + len(usage), "settle"
        )
        # The replay reads the journal from ledger.events: let the relay publish all of it.
        for _ in range(1200):
            if not await pool.fetchval("SELECT count(*) FROM ledger.outbox"):
                break
            await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
        await pool.close()
    return {
        "authorize_s": authorize,
        "authorize_n": len(reqs),
        "authorize_wait": auth_wait,
        "settle_s": settle,
        "settle_n": len(usage),
        "settle_wait": settle_wait,
    }


async def replay_phase(stack: Stack, handler: LedgerHandler) -> tuple[replay.ReplayResult, str]:
    """Replay the log; profile the apply phase on a second run."""

    def show(phase: str, done: int, total: int) -> None:
        if done >= total:
            progress(f"replay {phase}: {done:,} events")

    result = await replay.replay(
        stack.dsn, stack.bootstrap, "bench_replay", progress=show, handler=handler
    )
    profiler = cProfile.Profile()
    profiler.enable()
    await replay.replay(stack.dsn, stack.bootstrap, "bench_replay_profiled", handler=handler)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(12)
    return result, out.getvalue()


def report(
    args: argparse.Namespace,
    base: dict[str, float],
    led: dict[str, Any],
    rep: replay.ReplayResult,
    profile: str,
) -> str:
    """The Markdown report."""
    authorize = led["authorize_n"] / led["authorize_s"]
    settle = led["settle_n"] / led["settle_s"]
    ratio = base["batched_insert_rows_per_s"]
    lines = [
        "# Ledger throughput",
        "",
        (
            f"Run {datetime.now(UTC).isoformat(timespec='seconds')}:"
            f" {args.requests:,} requests over"
            f" {args.accounts} accounts, consumer batch {args.batch}, embedded Postgres"
            f" ({'fsync on' if args.durable else 'fsync off'}) and broker, everything in one"
            " process on this machine; handler: "
            f"{mode(args)}."
        ),
        "",
        "| measure | events/s | vs. batched INSERT baseline |",
        "|---|---:|---:|",
        f"| baseline: batched INSERT of one text column | {ratio:,.0f} | 1.00 |",
        (
            f"| baseline: one INSERT per round trip | {base['round_trips_per_s']:,.0f} |"
            f" {base['round_trips_per_s'] / ratio:.3f} |"
        ),
        (
            f"| authorize (RequestReceived -> hold, receipt, outbox) | {authorize:,.0f} |"
            f" {authorize / ratio:.3f} |"
        ),
        (
            f"| settle (AttemptFinished + RequestFinished -> postings, receipt) | {settle:,.0f} |"
            f" {settle / ratio:.3f} |"
        ),
        (
            f"| replay apply ({rep.events:,} input events into a fresh database) |"
            f" {rep.events_per_second:,.0f} | {rep.events_per_second / ratio:.3f} |"
        ),
        "",
        f"Replay digest `{rep.digest}`, diverged steps {rep.diverged}, poison {rep.poison}.",
        "",
        "## Where the time goes (replay apply, top functions by own time)",
        "",
        "```",
        profile.strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> str:
    """Start the stack, measure, stop."""
    with tempfile.TemporaryDirectory(prefix="tollway-ledger-bench-") as root:
        stack = Stack(
            StackConfig(
                root=Path(root),
                pg_port=free_port(),
                broker_port=free_port(),
                edge_port=free_port(),
                upstream_port=free_port(),
                researcher_port=free_port(),
                fast_unsafe=not args.durable,
            )
        )
        try:
            await asyncio.to_thread(stack.start_infra)
            progress("baselines")
            base = await baselines(stack.dsn, 50_000)
            led = await ledger_phase(stack, args)
            handler = handler_for(args)
            rep, profile = await replay_phase(stack, handler)
        finally:
            stack.stop()
    return report(args, base, led, rep, profile)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--accounts", type=int, default=32)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--durable", action="store_true", help="fsync and synchronous commit on")
    parser.add_argument("--per-event", action="store_true", help="nothing folded (the before)")
    parser.add_argument(
        "--no-resident", action="store_true", help="folded, but state loaded for each batch"
    )
    parser.add_argument("--out", default="ledger.md", help="report file under bench/results")
    args = parser.parse_args()
    text = asyncio.run(main_async(args))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
