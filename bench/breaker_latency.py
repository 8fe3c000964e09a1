"""Benchmark: time from a velocity threshold crossing to the first refused request, under load.

    uv run python bench/breaker_latency.py [--trials 12] [--workers 4] [--load 4]

Starts its own stack (embedded Postgres and broker, the demo upstream, every service), keeps a
background tenant calling at full speed, and for each trial lets a fresh key loop until its
breaker trips. The enforcement latency of a trial is the start of its first refused request minus
the trip's ``crossed_at`` (the event time of the usage that crossed; same machine, same clock).
The baseline, measured in the same run, is the latency of a served request under the same load;
figures are reported as ratios against it. Written to bench/results/breaker_latency.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Self

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ADMIN_TOKEN, RESULTS, embedded_stack, progress
from tollway.devstack.seed import create_tenant

if TYPE_CHECKING:
    from tollway.devstack.stack import Stack

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "bench"}]}


async def _fetch(dsn: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def new_key(stack: Stack) -> tuple[str, str, str]:
    account = f"b-{uuid.uuid4().hex[:10]}"
    tenant = create_tenant(stack.edge_url, ADMIN_TOKEN, account, {"credit": "1000"})
    key_id = asyncio.run(
        _fetch(stack.dsn, "SELECT id FROM edge.api_keys WHERE account_id = $1", account)
    )
    return account, str(key_id), tenant.api_key


def limit_key(stack: Stack, admin: httpx.Client, account: str, key_id: str, tpm: int) -> None:
    admin.post(
        "/velocity-limits",
        json={"account_id": account, "scope": "key", "scope_id": key_id, "tokens_per_minute": tpm},
    ).raise_for_status()
    sql = "SELECT 1 FROM limits.velocity_limits WHERE scope = 'key' AND scope_id = $1"
    deadline = time.monotonic() + 30
    while not asyncio.run(_fetch(stack.dsn, sql, key_id)):
        if time.monotonic() > deadline:
            raise TimeoutError("the limits service did not apply the velocity limit in 30 s")
        time.sleep(0.05)


class Load:
    """Background callers on their own key; records served latencies (the baseline)."""

    def __init__(self, stack: Stack, key: str, workers: int) -> None:
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(stack.edge_url, key)) for _ in range(workers)
        ]

    def _loop(self, url: str, key: str) -> None:
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                response = client.post("/v1/chat/completions", json=BODY, timeout=30)
                if response.status_code == 200:
                    self.latencies.append(time.perf_counter() - started)

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def run_trial(stack: Stack, admin: httpx.Client, workers: int, tpm: int) -> float:
    account, key_id, key = new_key(stack)
    limit_key(stack, admin, account, key_id, tpm)
    refusals: list[float] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(
            base_url=stack.edge_url, headers={"authorization": f"Bearer {key}"}
        ) as client:
            while not stop.is_set():
                started = time.time()
                if client.post("/v1/chat/completions", json=BODY, timeout=30).status_code == 429:
                    refusals.append(started)
                    stop.set()

    threads = [threading.Thread(target=loop) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    crossed = trip_crossed_at(admin, key_id)
    return min(refusals) - crossed


def trip_crossed_at(admin: httpx.Client, key_id: str) -> float:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for row in admin.get("/breakers").json()["breakers"]:
            if row["key"] == f"key:{key_id}" and row["type"] == "breaker.tripped":
                return datetime.fromisoformat(row["crossed_at"]).timestamp()
        time.sleep(0.05)
    raise TimeoutError(f"no breaker record for key {key_id}")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(trials: list[float], baseline: list[float], args: argparse.Namespace) -> str:
    base50 = statistics.median(baseline)
    rows = [
        ("threshold crossing -> first refused request", pct(trials, 50), pct(trials, 99)),
        ("served request under the same load (baseline)", base50, pct(baseline, 99)),
    ]
    lines = [
        "# Breaker enforcement latency",
        "",
        (
            f"Run {datetime.now(UTC).isoformat(timespec='seconds')}: {args.trials} trials,"
            f" {args.workers} looping callers per trial, {args.load} background callers,"
            f" limit {args.tpm} tokens/minute per trial key."
        ),
        "",
        "| measure | p50 ms | p99 ms | p50 / baseline p50 |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {a * 1000:.0f} | {b * 1000:.0f} | {a / base50:.2f} |" for n, a, b in rows]
    lines += [
        "",
        (
            f"Every trial was refused within {max(trials) * 1000:.0f} ms of its crossing"
            f" ({len(baseline)} baseline requests served meanwhile)."
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--workers", type=int, default=4, help="looping callers per trial key")
    parser.add_argument("--load", type=int, default=4, help="background callers")
    parser.add_argument("--tpm", type=int, default=600, help="tokens per minute per trial key")
    args = parser.parse_args()
    progress("starting the stack")
    with embedded_stack(fast_unsafe=True) as stack:
        _, _, load_key = new_key(stack)
        trials: list[float] = []
        with (
            httpx.Client(
                base_url=f"{stack.edge_url}/admin/v1",
                headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=10,
            ) as admin,
            Load(stack, load_key, args.load) as load,
        ):
            for n in range(args.trials):
                trials.append(run_trial(stack, admin, args.workers, args.tpm))
                progress(f"trial {n + 1}/{args.trials}: refused {trials[-1] * 1000:.0f} ms after")
        text = report(trials, load.latencies, args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "breaker_latency.md"
    out.write_text(text, encoding="utf-8")
    print(text)
    progress(f"report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
