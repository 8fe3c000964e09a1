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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    RESULTS,
    RssSampler,
    Run,
    closed_loop,
    embedded_stack,
    progress,
    tenant,
)

BODY = {
    "messages": [{"role": "user", "content": "Summarise the ledger in one line."}],
    "max_tokens": 32,
}
DIRECT_MODEL, GATEWAY_MODEL = "gpt-4o-mini-2024-07-18", "gpt-4o-mini"


@dataclass
class Pair:
    """Direct and gateway runs at one concurrency."""

    concurrency: int
    direct: Run
    gateway: Run


def _check(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code} {response.text[:120]}")


async def _first_byte(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> None:
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"stream answered {response.status_code}")
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                return  # time to the first chunk; the rest of the stream is not timed
        raise RuntimeError("stream ended without a chunk")


class Targets:
    """The two ways to the same upstream."""

    def __init__(self, upstream_url: str, edge_url: str, key: str, limit: int) -> None:
        """Open one pooled client per path."""
        limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        self.direct = httpx.AsyncClient(
            base_url=f"{upstream_url}/openai-direct/v1",
            headers={"authorization": "Bearer sk-demo-openai-direct"},
            limits=limits,
            timeout=60,
        )
        self.gateway = httpx.AsyncClient(
            base_url=f"{edge_url}/v1",
            headers={"authorization": f"Bearer {key}"},
            limits=limits,
            timeout=60,
        )

    async def call_direct(self) -> None:
        """One non-streaming completion straight from the upstream."""
        _check(await self.direct.post("/chat/completions", json={**BODY, "model": DIRECT_MODEL}))

    async def call_gateway(self) -> None:
        """One non-streaming completion through Tollway."""
        _check(await self.gateway.post("/chat/completions", json={**BODY, "model": GATEWAY_MODEL}))

    async def ttfb_direct(self) -> None:
        """Time to the first streamed chunk, straight from the upstream."""
        body = {**BODY, "model": DIRECT_MODEL, "stream": True}
        await _first_byte(self.direct, "/chat/completions", body)

    async def ttfb_gateway(self) -> None:
        """Time to the first streamed chunk through Tollway."""
        body = {**BODY, "model": GATEWAY_MODEL, "stream": True}
        await _first_byte(self.gateway, "/chat/completions", body)

    async def close(self) -> None:
        """Close both clients."""
        await self.direct.aclose()
        await self.gateway.aclose()


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


async def measure(stack: Any, key: str, plan: list[tuple[int, int]]) -> dict[str, Any]:
    """Run every concurrency level, then streaming TTFB; sample RSS throughout."""
    targets = Targets(stack.upstream_url, stack.edge_url, key, max(c for c, _ in plan) + 8)
    started_at = time.time()
    try:
        progress("warm-up")
        await closed_loop(targets.call_direct, requests=100, concurrency=8)
        await closed_loop(targets.call_gateway, requests=200, concurrency=8)
        pairs: list[Pair] = []
        streams: list[Pair] = []
        async with RssSampler(stack) as rss:
            for concurrency, requests in plan:
                progress(f"concurrency {concurrency}: {requests} requests per path")
                direct = await closed_loop(
                    targets.call_direct, requests=requests, concurrency=concurrency
                )
                gateway = await closed_loop(
                    targets.call_gateway, requests=requests, concurrency=concurrency
                )
                pairs.append(Pair(concurrency, direct, gateway))
            for concurrency, requests in plan[:2]:
                progress(f"streaming time-to-first-byte, concurrency {concurrency}")
                direct = await closed_loop(
                    targets.ttfb_direct, requests=requests // 2, concurrency=concurrency
                )
                gateway = await closed_loop(
                    targets.ttfb_gateway, requests=requests // 2, concurrency=concurrency
                )
                streams.append(Pair(concurrency, direct, gateway))
    finally:
        await targets.close()
    served = 200 + sum(len(p.gateway.latencies_ms) for p in pairs + streams)
    progress(f"waiting for the ledger to settle {served} requests")
    settled = await _wait_settled(stack.dsn, started_at, served)
    return {
        "pairs": pairs,
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


def _overhead_row(pair: Pair) -> str:
    d, g = pair.direct, pair.gateway
    return (
        f"| {pair.concurrency} | {g.pct(0.5) - d.pct(0.5):.1f} | {g.pct(0.9) - d.pct(0.9):.1f} |"
        f" {g.pct(0.99) - d.pct(0.99):.1f} | {g.pct(0.5) / d.pct(0.5):.1f}x |"
        f" {g.rps / d.rps if d.rps else float('nan'):.2f} |"
    )


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    """The Markdown report."""
    lines = [
        "# Gateway overhead",
        "",
        (
            f"`uv run python bench/overhead.py{' --quick' if args.quick else ''}"
            f"{' --fast-unsafe' if args.fast_unsafe else ''}` on {time.strftime('%Y-%m-%d')};"
            " embedded Postgres"
            f" ({'fsync off' if args.fast_unsafe else 'fsync on'}) and Tansu, demo upstream with"
            " no added latency, one edge/router/ledger process each, load generator on the same"
            " machine."
        ),
        "",
        "## Latency (ms) and rate, per path",
        "",
        "| path | p50 | p90 | p99 | req/s | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for pair in result["pairs"]:
        lines.append(_row(f"direct, c={pair.concurrency}", pair.direct))
        lines.append(_row(f"gateway, c={pair.concurrency}", pair.gateway))
    lines += [
        "",
        "## Overhead = gateway - direct (ms); ratios against the direct baseline of the same run",
        "",
        "| concurrency | p50 | p90 | p99 | p50 ratio | rate ratio |",
        "|---:|---:|---:|---:|---:|---:|",
        *(_overhead_row(p) for p in result["pairs"]),
        "",
        "## Streaming time to first byte (ms)",
        "",
        "| path | p50 | p90 | p99 | req/s | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for pair in result["streams"]:
        lines.append(_row(f"direct, c={pair.concurrency}", pair.direct))
        lines.append(_row(f"gateway, c={pair.concurrency}", pair.gateway))
    lines += [
        "",
        "## Peak resident memory per process (MiB)",
        "",
        "| process | RSS |",
        "|---|---:|",
        *(f"| {name} | {mb:.0f} |" for name, mb in sorted(result["rss"].items())),
        "",
        (
            f"Settled in the ledger: {result['settled']} of {result['served']} gateway requests"
            " answered 200."
        ),
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> bool:
    """Latency percentiles per concurrency, both paths (skipped without matplotlib)."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - optional

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=False)
    for ax, q in zip(axes, (0.5, 0.9, 0.99), strict=True):
        cs = [p.concurrency for p in result["pairs"]]
        ax.plot(cs, [p.direct.pct(q) for p in result["pairs"]], "o-", label="direct")
        ax.plot(cs, [p.gateway.pct(q) for p in result["pairs"]], "o-", label="gateway")
        ax.set(title=f"p{int(q * 100)} latency", xlabel="concurrency", ylabel="ms", xscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main() -> int:
    """Start a stack, measure, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--fast-unsafe", action="store_true", help="Postgres with fsync off")
    args = parser.parse_args()
    scale = 5 if args.quick else 1
    plan = [(1, 300 // scale), (16, 2000 // scale), (64, 4000 // scale)]
    progress("starting the embedded stack")
    with embedded_stack(fast_unsafe=args.fast_unsafe) as stack:
        key = tenant(stack)
        result = asyncio.run(measure(stack, key, plan))
    RESULTS.mkdir(exist_ok=True)
    text = report(result, args)
    if plot(result, RESULTS / "overhead.png"):
        text += "\n![latency percentiles](overhead.png)\n"
    (RESULTS / "overhead.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
