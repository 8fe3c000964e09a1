"""What-if routing throughput: how long ``tollway whatif`` takes over N logged requests.

    python bench/whatif_bench.py [--requests N] [--out FILE]

Starts Apache Kafka (the production broker; ``TOLLWAY_BROKER=tansu`` for the embedded Tansu, as
every benchmark here; ``make kafka-deps`` fetches Kafka's jars once) and nothing else,
creates the topics, and publishes N requests' events the way production does: envelopes made
and serialised by ``tollway.events.envelope`` and sent through the runtime's producer,
``RequestReceived`` on gw.requests (a sealed body of a realistic size, a seed-like plan of four
candidates with sell and cost prices), one ``AttemptFinished`` per attempt (a share of requests
fail over to a backup) and a ``RequestFinished`` on gw.usage (skipped candidates included), and
circuit transitions on router.health. Then it runs ``tollway whatif`` as an operator would (a
fresh process, JSON out) with a policy that moves a model's traffic to its pool route, reprices
a channel and changes a primary, checks that every request is in the report, and writes the
figure (requests/s, total seconds, machine CPU) to bench/results/whatif.md (whatif-tansu.md
on Tansu).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tollway.devstack.broker import EmbeddedBroker, free_port
from tollway.devstack.kafka import ApacheKafkaBroker
from tollway.events import topics
from tollway.events.envelope import Envelope, Trace, encode, make
from tollway.events.gateway import (
    AttemptFinished,
    Candidate,
    RequestFinished,
    RequestReceived,
    SealedBody,
    SkippedCandidate,
)
from tollway.events.pricing import CostPrice, Price, Usage
from tollway.events.routing import ChannelHealthChanged
from tollway.runtime.kafka import ensure_topics, new_producer

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parent.parent


def _cand(  # noqa: PLR0917 - a table row
    channel: str,
    brand: str,
    route: str,
    bucket: str,
    tier: int,
    sell: tuple[int, int],
    cost: CostPrice | None,
) -> Candidate:
    return Candidate(
        channel_id=channel,
        channel=channel,
        brand=brand,
        route_type=route,  # type: ignore[arg-type]
        bucket=bucket,
        upstream_model=f"{brand}-model",
        price=Price(input=sell[0], output=sell[1]),
        tier=tier,
        cost=cost,
    )


USD = "USD"
PLANS = {
    "gpt-4o-mini": [
        _cand(
            "openai-direct",
            "openai",
            "direct",
            "credit",
            0,
            (150_000, 600_000),
            CostPrice(input=120_000, output=480_000, currency=USD),
        ),
        _cand(
            "openai-backup",
            "openai",
            "direct",
            "credit",
            1,
            (150_000, 600_000),
            CostPrice(input=130_000, output=500_000, currency=USD),
        ),
        _cand(
            "openai-pool",
            "openai",
            "pool",
            "wallet",
            2,
            (1_000_000, 4_000_000),
            CostPrice(input=600_000, output=2_500_000, currency="CNY", per_request=10),
        ),
        _cand("openai-pool-backup", "openai", "pool", "wallet", 3, (1_000_000, 4_000_000), None),
    ],
    "claude-3-5-haiku": [
        _cand(
            "anthropic-direct",
            "anthropic",
            "direct",
            "credit",
            0,
            (800_000, 4_000_000),
            CostPrice(input=700_000, output=3_500_000, currency=USD),
        ),
        _cand("anthropic-backup", "anthropic", "direct", "credit", 1, (800_000, 4_000_000), None),
        _cand(
            "anthropic-pool",
            "anthropic",
            "pool",
            "wallet",
            2,
            (5_000_000, 25_000_000),
            CostPrice(input=3_000_000, output=15_000_000, currency="CNY"),
        ),
        _cand(
            "anthropic-pool-backup", "anthropic", "pool", "wallet", 3, (5_000_000, 25_000_000), None
        ),
    ],
}
POLICY = {
    "rules": [
        {"model": "gpt-4o-mini", "project": "proj-1", "route_type": "pool"},
        {"model": "claude-3-5-haiku", "key": "key-7", "channel": "anthropic-pool"},
    ],
    "primary": [{"model": "claude-3-5-haiku", "channel": "anthropic-backup"}],
    "prices": {
        "anthropic-backup": {"cost": {"currency": USD, "input": "0.6", "output": "3.2"}},
        "openai-pool": {"sell": {"input": "0.9", "output": "3.6"}},
    },
    "units": {"credit": USD, "wallet": "CNY"},
}


def progress(message: str) -> None:
    print(f"  · {message}", file=sys.stderr, flush=True)


def _envelopes(
    i: int, rng: random.Random, at: datetime, body: SealedBody
) -> tuple[Envelope[Any], list[Envelope[Any]]]:
    """One request's RequestReceived and its gw.usage events."""
    model = "gpt-4o-mini" if i % 3 else "claude-3-5-haiku"
    plan = PLANS[model]
    account = f"acct-{i % 50}"
    request_id = f"req_{uuid.UUID(int=rng.getrandbits(128)).hex}"
    trace = Trace(request_id=request_id)
    who = {"key_id": f"key-{i % 40}", "project_id": f"proj-{i % 12}", "catalog_model": model}
    received = make(
        RequestReceived(
            request_id=request_id,
            edge_id="edge-bench",
            account_id=account,
            **who,
            plan=plan,
            estimated_input_tokens=800,
            max_output_tokens=1024,
            deadline_at=at + timedelta(seconds=60),
            sealed_body=body,
        ),
        trace=trace,
        occurred_at=at,
    )
    tokens = Usage(
        input_tokens=rng.randint(50, 4000),
        output_tokens=rng.randint(10, 1200),
        cached_input_tokens=rng.choice((0, 0, 0, 256)),
    )
    roll = rng.random()
    skipped: list[SkippedCandidate] = []
    attempts: list[tuple[Candidate, bool]] = [(plan[0], True)]
    if roll < 0.05:  # primary failed, backup served
        attempts = [(plan[0], False), (plan[1], True)]
    elif roll < 0.08:  # primary's circuit open: skipped, backup served
        skipped = [
            SkippedCandidate(
                channel_id=plan[0].channel_id, channel=plan[0].channel, reason="circuit_open"
            )
        ]
        attempts = [(plan[1], True)]
    usage: list[Envelope[Any]] = []
    for n, (cand, ok) in enumerate(attempts, 1):
        usage.append(
            make(
                AttemptFinished(
                    request_id=request_id,
                    account_id=account,
                    attempt=n,
                    candidate=cand,
                    outcome="ok" if ok else "http_error",
                    status=200 if ok else 503,
                    latency_ms=rng.randint(200, 3000),
                    usage=tokens if ok else Usage(),
                    delivered=ok,
                    **who,
                ),
                trace=trace,
                occurred_at=at + timedelta(seconds=1),
            )
        )
    served = attempts[-1][0]
    usage.append(
        make(
            RequestFinished(
                request_id=request_id,
                account_id=account,
                hold_id=f"hold_{request_id}",
                served_attempt=len(attempts),
                served_channel_id=served.channel_id,
                served_bucket=served.bucket,
                usage=tokens,
                price=served.price,
                status=200,
                attempts=len(attempts),
                skipped=skipped,
                fallbacks=len(attempts) - 1 + len(skipped),
                **who,
            ),
            trace=trace,
            occurred_at=at + timedelta(seconds=1),
        )
    )
    return received, usage


def _health(channel: str, at: datetime, to_state: str, from_state: str) -> Envelope[Any]:
    return make(
        ChannelHealthChanged(
            channel_id=channel,
            channel=channel,
            router_id="router-bench",
            from_state=from_state,  # type: ignore[arg-type]
            to_state=to_state,  # type: ignore[arg-type]
            reason="bench",
            error_rate=0.6,
            samples=20,
            p50_latency_ms=900,
            cool_down_seconds=5,
        ),
        occurred_at=at,
    )


async def publish(bootstrap: str, requests: int, start: datetime, span: timedelta) -> int:
    """Publish the workload; returns the number of records sent."""
    rng = random.Random(7)
    body = SealedBody(key_id="bench-epoch", data=base64.b64encode(rng.randbytes(1500)).decode())
    producer = new_producer(
        bootstrap, "whatif-bench", linger_ms=5, max_batch_size=1 << 20, request_timeout_ms=120_000
    )
    await producer.start()
    sent = 0
    try:
        step = span / requests
        pending = []
        for i in range(requests):
            at = start + step * i
            received, usage = _envelopes(i, rng, at, body)
            key = received.payload.account_id.encode()
            pending.append(await producer.send(topics.REQUESTS, encode(received), key=key))
            pending.extend([await producer.send(topics.USAGE, encode(e), key=key) for e in usage])
            sent += 1 + len(usage)
            if len(pending) > 20_000:
                await asyncio.gather(*pending)
                pending = []
                progress(f"published {i + 1:,}/{requests:,} requests")
        # Both pool routes of gpt-4o-mini are open for a while in the middle of the period.
        mid = start + span / 2
        for channel in ("openai-pool", "openai-pool-backup"):
            for env in (
                _health(channel, mid, "open", "closed"),
                _health(channel, mid + span / 20, "half_open", "open"),
                _health(channel, mid + span / 20 + timedelta(seconds=1), "closed", "half_open"),
            ):
                pending.append(
                    await producer.send(topics.CHANNEL_HEALTH, encode(env), key=channel.encode())
                )
                sent += 1
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def cpu_seconds() -> float:
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def run_whatif(
    bootstrap: str, start: datetime, end: datetime, workdir: Path
) -> tuple[float, float, dict[str, Any]]:
    """``tollway whatif`` in a fresh process: (wall seconds, machine CPU seconds, report)."""
    policy = workdir / "policy.json"
    policy.write_text(json.dumps(POLICY), encoding="utf-8")
    out = workdir / "report.json"
    cmd = [
        str(Path(sys.executable).parent / "tollway"),
        "whatif",
        "--from",
        start.isoformat(),
        "--to",
        end.isoformat(),
        "--policy",
        str(policy),
        "--bootstrap",
        bootstrap,
        "--format",
        "json",
        "--out",
        str(out),
    ]
    load = os.getloadavg()[0]
    progress(f"load average before the run: {load:.2f}")
    cpu, began = cpu_seconds(), time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds, used = time.perf_counter() - began, cpu_seconds() - cpu
    return seconds, used, {**json.loads(out.read_text(encoding="utf-8")), "load": load}


def write_report(path: Path, run: dict[str, Any], report: dict[str, Any]) -> None:
    seconds = run["seconds"]
    rate = report["requests"] / seconds
    apart = report["apart"]
    failed, unroutable = apart["alternative_failed"]["requests"], apart["unroutable"]["requests"]
    header = (
        "| requests in the report | compared | moved | apart (failed / unroutable / not served)"
        " | total seconds | requests/s | machine CPU seconds |"
    )
    row = (
        f"| {report['requests']:,} | {report['compared']:,} | {report['moved']:,} |"
        f" {failed:,} / {unroutable:,} / {apart['not_served']['requests']:,} |"
        f" {seconds:.2f} | {rate:,.0f} | {run['cpu']:.2f} |"
    )
    lines = [
        "# What-if routing: `tollway whatif` over logged requests",
        "",
        (
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC,"
            f" `python bench/whatif_bench.py --requests {run['requests']}`, broker"
            f" {run['broker']}, {os.cpu_count()} CPUs ({cpu_model()}),"
            f" Python {platform.python_version()}."
        ),
        "",
        (
            f"The log held {run['records']:,} records of {run['requests']:,} requests"
            " (gw.requests, gw.usage with a share of failovers and circuit-open skips,"
            " router.health). The command ran as an operator runs it, in a fresh process"
            " (interpreter start, policy parsing, reading the three topics, pricing both ways,"
            " JSON out)."
        ),
        "",
        header,
        "|---:|---:|---:|---|---:|---:|---:|",
        row,
        "",
        (
            "Machine CPU is every core's busy time over the run (`/proc/stat`): the broker's"
            " and anything else running on the machine included (1-minute load average when"
            f" the command started: {report['load']:.2f})."
        ),
        "",
        "Policy:",
        "",
        "```json",
        json.dumps(POLICY, indent=2),
        "```",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    kind = os.environ.get("TOLLWAY_BROKER", "kafka")
    args.out = args.out or RESULTS / ("whatif.md" if kind == "kafka" else f"whatif-{kind}.md")
    with tempfile.TemporaryDirectory(prefix="whatif-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        broker: EmbeddedBroker | ApacheKafkaBroker
        if kind == "kafka":
            broker = ApacheKafkaBroker(port, workdir / "kafka", workdir / "broker.log")
        else:
            broker = EmbeddedBroker(port, workdir / "broker.log")
            os.environ.setdefault("TOLLWAY_KAFKA_FETCH_WAIT_MS", "5")
        bootstrap = broker.start()
        try:
            asyncio.run(ensure_topics(bootstrap, topics.core_topics(4)))
            end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
            start = end - timedelta(hours=24)
            began = time.perf_counter()
            records = asyncio.run(publish(bootstrap, args.requests, start, end - start))
            progress(f"published {records:,} records in {time.perf_counter() - began:.1f} s")
            seconds, cpu, report = run_whatif(bootstrap, start, end, workdir)
        finally:
            broker.stop()
    if report["requests"] != args.requests:
        progress(f"the report has {report['requests']:,} requests, not {args.requests:,}")
        return 1
    run = {"seconds": seconds, "cpu": cpu, "records": records, "requests": args.requests}
    write_report(args.out, {**run, "broker": kind}, report)
    rate = report["requests"] / seconds
    progress(f"{report['requests']:,} requests in {seconds:.2f} s ({rate:,.0f}/s); {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
