"""Gateway overhead: the same chat requests sent to the demo upstream directly and through Tollway.

    uv run python bench/overhead.py [--quick] [--fast-unsafe]

The gateway path is the whole money path: edge -> gw.requests -> ledger hold -> gw.authorized ->
router -> upstream -> reply + usage -> ledger settlement. For concurrency 1, 16 and 64 the
report gives p50/p90/p99 of both paths and their difference (the overhead), the sustained rate
with its errors, streaming time-to-first-byte, each service's peak RSS, and checks that every
gateway request was settled in the ledger. Written to bench/results/overhead.md (+ PNG).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import litellm
from bench.harness import (
    RESULTS,
    CpuMeter,
    RssSampler,
    Run,
    closed_loop,
    embedded_stack,
    progress,
    tenant,
)
from tollway.devstack.broker import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BODY = {
    "messages": [{"role": "user", "content": "Summarise the ledger in one line."}],
    "max_tokens": 32,
}


@dataclass
class Level:
    """Every path's run at one concurrency."""

    concurrency: int
    runs: dict[str, Run]


def _check(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code} {response.text[:120]}")


async def _first_byte(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    async with client.stream("POST", "/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"stream answered {response.status_code}")
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                return  # time to the first chunk; the rest of the stream is not timed
        raise RuntimeError("stream ended without a chunk")


class Target:
    """One way to the demo upstream: its base URL, credentials and the model name it expects.

    Each request in flight holds a client of its own, with one keep-alive connection. One
    client shared by every worker costs the load generator more per request the more requests
    wait in it (httpx scans its whole pool on every checkout and release): at c=64 about 12 ms of
    CPU per request against 2 ms, CPU the gateways under test then do not get.
    """

    def __init__(self, base_url: str, token: str, model: str) -> None:
        """Clients are opened as concurrency needs them."""
        self.model = model
        self._base_url = base_url
        self._headers = {"authorization": f"Bearer {token}"}
        self._idle: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        if not self._idle:
            client = httpx.AsyncClient(
                base_url=self._base_url,
                headers=self._headers,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                timeout=60,
            )
            self._all.append(client)
            self._idle.append(client)
        client = self._idle.pop()
        try:
            yield client
        finally:
            self._idle.append(client)

    async def complete(self) -> None:
        """One non-streaming completion."""
        async with self._client() as client:
            _check(await client.post("/chat/completions", json={**BODY, "model": self.model}))

    async def first_byte(self) -> None:
        """Time to the first streamed chunk."""
        async with self._client() as client:
            await _first_byte(client, {**BODY, "model": self.model, "stream": True})

    async def aclose(self) -> None:
        """Close every client opened."""
        for client in self._all:
            await client.aclose()


async def _settled(dsn: str, started_at: float) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'settled') AS settled, count(*) AS total"
            " FROM ledger.receipts WHERE created_at >= to_timestamp($1)",
            started_at,
        )
    finally:
        await conn.close()
    return int(row["settled"]), int(row["total"])


async def _wait_settled(dsn: str, started_at: float, expected: int, within: float = 120) -> int:
    deadline = time.monotonic() + within
    settled = 0
    while time.monotonic() < deadline:
        settled, _ = await _settled(dsn, started_at)
        if settled >= expected:
            break
        await asyncio.sleep(0.5)
    return settled


async def measure(
    stack: Any, paths: dict[str, Target], plan: list[tuple[int, int]]
) -> dict[str, Any]:
    """Run every path at every concurrency, then streaming TTFB; sample RSS throughout."""
    started_at = time.time()
    levels: list[Level] = []
    streams: list[Level] = []
    try:
        progress("warm-up")
        for path in paths.values():
            await closed_loop(path.complete, requests=200, concurrency=8)
        meter = CpuMeter(stack)
        async with RssSampler(stack) as rss:
            for concurrency, requests in plan:
                progress(f"concurrency {concurrency}: {requests} requests on each of {list(paths)}")
                runs = {
                    name: await meter.run(path.complete, requests=requests, concurrency=concurrency)
                    for name, path in paths.items()
                }
                levels.append(Level(concurrency, runs))
            for concurrency, requests in plan[:2]:
                progress(f"streaming time-to-first-byte, concurrency {concurrency}")
                runs = {
                    name: await closed_loop(
                        path.first_byte, requests=requests // 2, concurrency=concurrency
                    )
                    for name, path in paths.items()
                }
                streams.append(Level(concurrency, runs))
    finally:
        for path in paths.values():
            await path.aclose()
    served = 200 + sum(len(lv.runs["tollway"].latencies_ms) for lv in levels + streams)
    progress(f"waiting for the ledger to settle {served} requests")
    settled = await _wait_settled(stack.dsn, started_at, served)
    return {
        "levels": levels,
        "streams": streams,
        "rss": rss.peak,
        "served": served,
        "settled": settled,
    }


def _row(label: str, run: Run) -> str:
    return (
        f"| {label} | {run.pct(0.5):.1f} | {run.pct(0.9):.1f} | {run.pct(0.99):.1f} |"
        f" {run.rps:.0f} | {run.errors} |"
    )


def _latency_table(levels: list[Level]) -> list[str]:
    lines = ["| path | p50 | p90 | p99 | req/s | errors |", "|---|---:|---:|---:|---:|---:|"]
    for level in levels:
        lines += [_row(f"{name}, c={level.concurrency}", run) for name, run in level.runs.items()]
    return lines


def _overhead_table(levels: list[Level]) -> list[str]:
    gateways = [name for name in levels[0].runs if name != "direct"]
    lines = [
        "| gateway | concurrency | p50 | p90 | p99 | req/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in gateways:
        for level in levels:
            d, g = level.runs["direct"], level.runs[name]
            lines.append(
                f"| {name} | {level.concurrency} | {g.pct(0.5) - d.pct(0.5):.1f} |"
                f" {g.pct(0.9) - d.pct(0.9):.1f} | {g.pct(0.99) - d.pct(0.99):.1f} | {g.rps:.0f} |"
            )
    return lines


def _versus_table(levels: list[Level]) -> list[str]:
    if "litellm" not in levels[0].runs:
        return ["LiteLLM was not measured in this run (`--no-litellm`)."]
    lines = [
        "| concurrency | rate: Tollway / LiteLLM | p50 overhead: Tollway / LiteLLM |",
        "|---:|---:|---:|",
    ]
    for level in levels:
        d, t, ll = (level.runs[k] for k in ("direct", "tollway", "litellm"))
        rate = t.rps / ll.rps if ll.rps else float("nan")
        over_ll = ll.pct(0.5) - d.pct(0.5)
        over = (t.pct(0.5) - d.pct(0.5)) / over_ll if over_ll > 0 else float("nan")
        lines.append(f"| {level.concurrency} | {rate:.2f} | {over:.2f} |")
    return lines


def _cpu_table(levels: list[Level]) -> list[str]:
    """CPU per answered request: the whole machine per path, and Tollway's own processes."""
    paths = list(levels[0].runs)
    services = sorted(k for k in levels[0].runs["tollway"].cpu_ms if k != "machine")
    versus = "litellm" in paths
    lines = [
        (
            "Whole machine (all cores; includes the load generator, and for Tollway the broker"
            " and Postgres), then Tollway's own processes during its run. The ledger's and"
            " limits' work on a run's last requests may land in the next path's run."
        ),
        "",
        "| concurrency | " + " | ".join(paths) + (" | Tollway / LiteLLM |" if versus else " |"),
        "|---:|" + "---:|" * (len(paths) + versus),
    ]
    for level in levels:
        machine = {k: r.cpu_ms.get("machine", float("nan")) for k, r in level.runs.items()}
        cells = [f"{machine[k]:.1f}" for k in paths]
        if versus:
            cells.append(f"{machine['tollway'] / machine['litellm']:.2f}")
        lines.append(f"| {level.concurrency} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| concurrency | " + " | ".join(services) + " |",
        "|---:|" + "---:|" * len(services),
    ]
    for level in levels:
        own = level.runs["tollway"].cpu_ms
        lines.append(
            f"| {level.concurrency} | "
            + " | ".join(f"{own.get(s, 0.0):.1f}" for s in services)
            + " |"
        )
    return lines


def _first_errors(levels: list[Level]) -> list[str]:
    """The first error of each run that had any: where to start looking."""
    lines = [
        f"- {name}, c={level.concurrency}: {run.errors} errors, first: `{run.first_error}`"
        for level in levels
        for name, run in level.runs.items()
        if run.errors
    ]
    return ["Errors:", "", *lines, ""] if lines else []


def _broker_name() -> str:
    if os.environ.get("TOLLWAY_BROKER", "tansu") == "kafka":
        return "Apache Kafka (KRaft, one node)"
    return "the embedded Tansu broker"


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    """The Markdown report."""
    flags = "".join(
        f" --{f}" for f, on in (("quick", args.quick), ("fast-unsafe", args.fast_unsafe)) if on
    )
    return "\n".join(
        [
            "# Gateway overhead",
            "",
            (
                f"`uv run python bench/overhead.py{flags}` on {time.strftime('%Y-%m-%d %H:%M')}"
                f" (load average before the run: {args.load:.1f}); embedded Postgres"
                f" ({'fsync off' if args.fast_unsafe else 'fsync on'}) and {_broker_name()};"
                " demo upstream"
                " with no added latency; one process per service; the load generator shares the"
                " machine (one keep-alive connection per request in flight, the same for every"
                " path). `direct` calls the demo upstream itself: the baseline of this run."
            ),
            "",
            "## Latency (ms) and rate per path",
            "",
            *_latency_table(result["levels"]),
            "",
            "## Overhead over direct (ms)",
            "",
            *_overhead_table(result["levels"]),
            "",
            "## Tollway against LiteLLM's proxy in the same run (rate > 1, overhead < 1 favour us)",
            "",
            *_versus_table(result["levels"]),
            "",
            "## CPU time per answered request (ms)",
            "",
            *_cpu_table(result["levels"]),
            "",
            "## Streaming time to first byte (ms)",
            "",
            *_latency_table(result["streams"]),
            "",
            *_first_errors(result["levels"] + result["streams"]),
            "## Peak resident memory per process (MiB)",
            "",
            "| process | RSS |",
            "|---|---:|",
            *(f"| {name} | {mb:.0f} |" for name, mb in sorted(result["rss"].items())),
            "",
            f"Settled in the ledger: {result['settled']} of {result['served']} answered requests.",
            "",
        ]
    )


def plot(result: dict[str, Any], path: Path) -> bool:
    """Latency percentiles per concurrency, every path (skipped without matplotlib)."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - optional

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    levels: list[Level] = result["levels"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, q in zip(axes, (0.5, 0.9, 0.99), strict=True):
        cs = [lv.concurrency for lv in levels]
        for name in levels[0].runs:
            ax.plot(cs, [lv.runs[name].pct(q) for lv in levels], "o-", label=name)
        ax.set(title=f"p{int(q * 100)} latency", xlabel="concurrency", ylabel="ms", xscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main() -> int:
    """Start a stack (and LiteLLM), measure, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--fast-unsafe", action="store_true", help="Postgres with fsync off")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy")
    args = parser.parse_args()
    args.load = os.getloadavg()[0]
    scale = 5 if args.quick else 1
    plan = [(1, 300 // scale), (16, 2000 // scale), (64, 4000 // scale)]
    progress("starting the embedded stack")
    with contextlib.ExitStack() as stack_ctx:
        stack = stack_ctx.enter_context(embedded_stack(fast_unsafe=args.fast_unsafe))
        up = stack.upstream_url
        paths = {
            "direct": Target(f"{up}/openai-direct/v1", "sk-demo", "gpt-4o-mini-2024-07-18"),
            "tollway": Target(f"{stack.edge_url}/v1", tenant(stack), "gpt-4o-mini"),
        }
        if not args.no_litellm:
            workdir = stack.config.root
            url = stack_ctx.enter_context(litellm.proxy(up, free_port(), workdir))
            paths["litellm"] = Target(url, litellm.MASTER_KEY, "gpt-4o-mini")
        result = asyncio.run(measure(stack, paths, plan))
    RESULTS.mkdir(exist_ok=True)
    text = report(result, args)
    if plot(result, RESULTS / "overhead.png"):
        text += "\n![latency percentiles](overhead.png)\n"
    (RESULTS / "overhead.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
