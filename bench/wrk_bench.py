"""The gateways under a native load generator: wrk against direct, Tollway, LiteLLM and Portkey.

    uv run python bench/wrk_bench.py [--brokers kafka,tansu] [--levels 1,8,32,128]
                                     [--seconds 20] [--no-litellm] [--no-portkey] [--quick]

wrk (C, ~0.05 ms of CPU per request) drives POST /chat/completions (bench/wrk/chat.lua) at each
concurrency against, in the same run and one after another: the demo upstream directly, Tollway
(the whole money path), LiteLLM's proxy bare, LiteLLM with its database and a key budget, and
Portkey's gateway (``@portkey-ai/gateway``, installed once from npm, then run offline). For each
run: p50/p99 latency and the latency added over the direct path at the same concurrency,
sustained req/s, non-200 answers, machine CPU per answered request and each process's share.
Then the idle CPU of the stack, and a check that every Tollway request answered 200 was settled
in the ledger. Once per broker (Apache Kafka, Tansu). A path that cannot start is reported with
its error. Written to bench/results/wrk.md with PNG plots.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import litellm
from bench.harness import (
    RESULTS,
    embedded_stack,
    machine_cpu_seconds,
    process_cpu_seconds,
    progress,
    tenant,
)
from bench.idle import _groups, measure_idle
from bench.overhead import _settled, _wait_settled
from tollway.devstack.broker import free_port, wait_for_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tollway.devstack.stack import Stack

LUA = Path(__file__).resolve().parent / "wrk" / "chat.lua"
PORTKEY_DIR = Path(__file__).resolve().parent.parent / ".tollway" / "bench" / "portkey"
PORTKEY_SPEC = "@portkey-ai/gateway@1.15.2"
DIRECT_KEY = "sk-demo-openai-direct"


@dataclass
class Way:
    """One way to the demo upstream, as wrk sees it."""

    url: str  # scheme://host:port
    path: str
    key: str
    model: str
    headers: str = ""
    pids: list[int] = field(default_factory=list)  # its own processes (CPU meter)


@dataclass
class Result:
    """One wrk run."""

    name: str
    concurrency: int
    ok: int = 0
    non200: int = 0
    socket_errors: int = 0
    seconds: float = 0.0
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    cpu_ms: dict[str, float] = field(default_factory=dict)
    error: str = ""

    @property
    def rps(self) -> float:
        """Answered (200) requests per second."""
        return self.ok / self.seconds if self.seconds else 0.0


def wrk(target: Way, concurrency: int, seconds: float) -> dict[str, Any]:
    """Run wrk once; its summary (bench/wrk/chat.lua's JSON line)."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk not found: `apt-get install -y wrk` (make bench does)")
    env = {
        **os.environ,
        "WRK_PATH": target.path,
        "WRK_KEY": target.key,
        "WRK_MODEL": target.model,
        "WRK_HEADERS": target.headers,
    }
    threads = str(min(concurrency, 2))
    done = subprocess.run(
        [exe, "-t", threads, "-c", str(concurrency), "-d", f"{seconds:.0f}s", "--timeout", "30s",
         "-s", str(LUA), target.url],
        capture_output=True, text=True, env=env, timeout=seconds + 120, check=False,
    )  # fmt: skip
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            summary: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            return summary
    raise RuntimeError(f"wrk printed no summary: {done.stdout[-300:]} {done.stderr[-300:]}")


def _cpu(stack: Stack, paths: dict[str, Way]) -> dict[str, float]:
    used = {
        name: sum(process_cpu_seconds(pid) for pid in pids) for name, pids in _groups(stack).items()
    }
    for name, target in paths.items():
        if target.pids:
            used[name] = sum(process_cpu_seconds(pid) for pid in target.pids)
    used["machine"] = machine_cpu_seconds()
    return used


def run_level(
    stack: Stack, paths: dict[str, Way], concurrency: int, seconds: float
) -> list[Result]:
    """Every path at one concurrency, one after another."""
    results = []
    for name, target in paths.items():
        result = Result(name, concurrency)
        before = _cpu(stack, paths)
        try:
            summary = wrk(target, concurrency, seconds)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            result.error = str(exc)[:300]
            results.append(result)
            continue
        after = _cpu(stack, paths)
        result.ok, result.non200 = summary["ok"], summary["non200"]
        result.socket_errors = summary["socket_errors"]
        result.seconds = summary["duration_us"] / 1e6
        result.p50_ms, result.p90_ms = summary["p50_us"] / 1000, summary["p90_us"] / 1000
        result.p99_ms = summary["p99_us"] / 1000
        answered = max(1, result.ok)
        result.cpu_ms = {k: (after[k] - before.get(k, 0.0)) * 1000 / answered for k in after}
        progress(
            f"{name} c={concurrency}: p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms,"
            f" {result.rps:.0f} req/s, {result.non200 + result.socket_errors} errors"
        )
        results.append(result)
    return results


@contextlib.contextmanager
def portkey(port: int, workdir: Path) -> Iterator[tuple[str, int]]:
    """Portkey's gateway (Node), installed once into .tollway/bench/portkey, run offline."""
    script = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not script.exists():
        progress(f"installing {PORTKEY_SPEC} from npm into {PORTKEY_DIR} (once)")
        PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "init", "-y"], cwd=PORTKEY_DIR, check=True, capture_output=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", PORTKEY_SPEC],
            cwd=PORTKEY_DIR, check=True, capture_output=True,
        )  # fmt: skip
    log = (workdir / "portkey.log").open("wb")
    proc = subprocess.Popen(
        ["node", str(script), f"--port={port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "NODE_ENV": "production"},
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _litellm_database(stack: Stack) -> str:
    """A database of its own for LiteLLM in the stack's Postgres."""

    async def create() -> None:
        import asyncpg  # noqa: PLC0415 - only when LiteLLM's database is wanted

        conn = await asyncpg.connect(stack.dsn)
        try:
            await conn.execute("CREATE DATABASE litellm")
        finally:
            await conn.close()

    asyncio.run(create())
    return stack.dsn.rsplit("/", 1)[0] + "/litellm"


def _why(exc: Exception, workdir: Path, log_name: str) -> str:
    """The error without the run's scratch path, and the last line its log wrote."""
    text = repr(exc).replace(str(workdir), "<stack>")
    log = workdir / log_name
    lines = (
        [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        if log.exists()
        else []
    )
    last = re.sub(r"\x1b\[[0-9;]*m", "", lines[-1]).strip() if lines else ""
    return f"{text}; its log ends: {last}"[:600] if last else text[:600]


def open_paths(
    ctx: contextlib.ExitStack, stack: Stack, args: argparse.Namespace, failures: dict[str, str]
) -> dict[str, Way]:
    """Every path that starts; the others land in ``failures`` with their error."""
    up = stack.upstream_url
    paths = {
        "direct": Way(up, "/openai-direct/v1/chat/completions", DIRECT_KEY, "gpt-4o-mini"),
        "tollway": Way(stack.edge_url, "/v1/chat/completions", tenant(stack), "gpt-4o-mini"),
    }
    workdir = stack.config.root
    if not args.no_litellm:
        try:
            url = ctx.enter_context(litellm.proxy(up, free_port(), workdir))
            paths["litellm"] = Way(url, "/v1/chat/completions", litellm.MASTER_KEY,
                                     "gpt-4o-mini", pids=[litellm.PIDS["litellm"]])  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a comparison point that fails is reported
            failures["litellm"] = _why(exc, workdir, "litellm.log")
        try:
            url = ctx.enter_context(
                litellm.proxy(up, free_port(), workdir, _litellm_database(stack), 300)
            )
            key = litellm.budget_key(url)
            pids = [litellm.PIDS["litellm-db"]]
            paths["litellm-db"] = Way(url, "/v1/chat/completions", key, "gpt-4o-mini", pids=pids)
        except Exception as exc:  # noqa: BLE001
            failures["litellm-db"] = _why(exc, workdir, "litellm-db.log")
    if not args.no_portkey:
        try:
            url, pid = ctx.enter_context(portkey(free_port(), workdir))
            headers = f"x-portkey-provider: openai\nx-portkey-custom-host: {up}/openai-direct/v1"
            paths["portkey"] = Way(url, "/v1/chat/completions", DIRECT_KEY, "gpt-4o-mini",
                                     headers, pids=[pid])  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            failures["portkey"] = _why(exc, workdir, "portkey.log")
    return paths


def bench_broker(broker: str, args: argparse.Namespace) -> dict[str, Any]:
    """One stack on ``broker``: every path at every level, idle CPU, the settlement check."""
    os.environ["TOLLWAY_BROKER"] = broker
    failures: dict[str, str] = {}
    with contextlib.ExitStack() as ctx:
        stack = ctx.enter_context(embedded_stack(fast_unsafe=False))
        paths = open_paths(ctx, stack, args, failures)
        started_at = time.time()
        progress(f"{broker}: warm-up")
        warm = [r for r in run_level(stack, paths, 8, 3) if r.name == "tollway"]
        results = []
        for concurrency in args.levels:
            results += run_level(stack, paths, concurrency, args.seconds)
        answered = sum(r.ok for r in results + warm if r.name == "tollway")
        progress(f"{broker}: waiting for the ledger to settle {answered} requests")
        asyncio.run(_wait_settled(stack.dsn, started_at, answered))
        settled, receipts = asyncio.run(_settled(stack.dsn, started_at))
        progress(f"{broker}: idle CPU over {args.idle:.0f} s")
        time.sleep(5)
        idle = measure_idle(stack, args.idle)
    return {
        "broker": broker,
        "results": results,
        "failures": failures,
        "answered": answered,
        "settled": settled,
        "receipts": receipts,
        "idle": idle,
    }


def _table(run: dict[str, Any]) -> list[str]:
    direct = {r.concurrency: r for r in run["results"] if r.name == "direct"}
    lines = [
        (
            "| path | c | p50 ms | p99 ms | added p50 | added p99 | req/s | errors"
            " | machine CPU ms/req |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(run["results"], key=lambda r: (r.name, r.concurrency)):
        if r.error:
            lines.append(f"| {r.name} | {r.concurrency} | failed: {r.error} |")
            continue
        base = direct.get(r.concurrency)
        added50 = r.p50_ms - base.p50_ms if base else float("nan")
        added99 = r.p99_ms - base.p99_ms if base else float("nan")
        lines.append(
            f"| {r.name} | {r.concurrency} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {added50:.1f} |"
            f" {added99:.1f} | {r.rps:.0f} | {r.non200 + r.socket_errors} |"
            f" {r.cpu_ms.get('machine', float('nan')):.2f} |"
        )
    return lines


def _cpu_table(run: dict[str, Any]) -> list[str]:
    procs = ["edge", "router", "ledger", "limits", "broker", "postgres", "upstream"]
    lines = [
        "CPU ms per answered request of each Tollway process during Tollway's runs:",
        "",
        "| c | " + " | ".join(procs) + " |",
        "|---:|" + "---:|" * len(procs),
    ]
    for r in run["results"]:
        if r.name == "tollway" and not r.error:
            cells = " | ".join(f"{r.cpu_ms.get(p, 0.0):.2f}" for p in procs)
            lines.append(f"| {r.concurrency} | {cells} |")
    own = [
        f"- {r.name} c={r.concurrency}: {r.cpu_ms.get(r.name, float('nan')):.2f} ms/req"
        for r in run["results"]
        if r.name not in {"direct", "tollway"} and not r.error
    ]
    return [*lines, "", "The other gateways' own process, CPU ms per answered request:", "", *own]


def _share(item: tuple[str, float]) -> float:
    return -item[1]


def report(runs: list[dict[str, Any]], args: argparse.Namespace, load: tuple[float, ...]) -> str:
    """The Markdown report."""
    lines = [
        "# Gateways under wrk",
        "",
        *(
            [
                "**Smoke run (`--quick`, 3 s per run): it shows the bench works, not figures.**",
                "",
            ]
            if args.quick
            else []
        ),
        (
            f"`uv run python bench/wrk_bench.py --levels {','.join(map(str, args.levels))}"
            f" --seconds {args.seconds:.0f}`; {os.cpu_count()} cores; load average before the run:"
            f" {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}. Added latency = the path's percentile"
            " minus the direct path's at the same concurrency. Errors: non-200 answers plus"
            " socket errors."
        ),
        "",
    ]
    for run in runs:
        lines += [f"## {run['broker']}", "", *_table(run), ""]
        lines += [*_cpu_table(run), ""]
        for name, error in run["failures"].items():
            lines.append(f"- {name} did not start: `{error}`")
        idle = run["idle"]
        lines += [
            "",
            (
                f"Settlement: {run['answered']} Tollway requests answered 200 within the runs;"
                f" the ledger holds {run['receipts']} receipts of the runs, {run['settled']}"
                " settled (wrk also sent requests whose answers came after a run's end)."
                + (
                    " Every one settled."
                    if run["settled"] == run["receipts"]
                    else " NOT ALL SETTLED."
                )
            ),
            "",
            "Idle CPU (% of one core): "
            + ", ".join(f"{k} {v * 100:.2f}" for k, v in sorted(idle.items(), key=_share)),
            "",
            f"![{run['broker']}](wrk-{run['broker']}.png)",
            "",
        ]
    return "\n".join(lines)


def plot(run: dict[str, Any], path: Path) -> None:
    """p50 added latency and req/s against concurrency, one line per path."""
    import matplotlib as mpl  # noqa: PLC0415 - only for the figure

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = sorted({r.name for r in run["results"]})
    for name in names:
        rs = sorted((r for r in run["results"] if r.name == name and not r.error),
                    key=lambda r: r.concurrency)  # fmt: skip
        cs = [r.concurrency for r in rs]
        left.plot(cs, [r.p50_ms for r in rs], marker="o", label=name)
        right.plot(cs, [r.rps for r in rs], marker="o", label=name)
    for ax, title in ((left, "p50 latency (ms)"), (right, "answered req/s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency")
        ax.set_title(f"{title}, {run['broker']}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    """Measure on each broker and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="kafka,tansu")
    parser.add_argument("--levels", default="1,8,32,128")
    parser.add_argument("--seconds", type=float, default=20.0, help="per path and level")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle measured")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--no-portkey", action="store_true")
    parser.add_argument("--quick", action="store_true", help="3 s per run, c=1 and 8 (smoke)")
    args = parser.parse_args()
    args.levels = [int(c) for c in args.levels.split(",")]
    if args.quick:
        args.seconds, args.levels, args.idle = 3.0, [1, 8], 10.0
    load = os.getloadavg()
    runs = [bench_broker(b, args) for b in args.brokers.split(",")]
    RESULTS.mkdir(exist_ok=True)
    for run in runs:
        plot(run, RESULTS / f"wrk-{run['broker']}.png")
    text = report(runs, args, load)
    (RESULTS / "wrk.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
