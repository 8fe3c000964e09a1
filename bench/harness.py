"""Shared pieces of the benchmarks: an embedded stack, a closed-loop load generator, summaries.

Benchmarks measure; they never assert a time. Every figure is reported next to a baseline
measured in the same run on the same machine, so the ratios mean something on any hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from tollway.devstack.broker import free_port
from tollway.devstack.seed import create_tenant, seed_routes
from tollway.devstack.stack import Stack, StackConfig

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

ADMIN_TOKEN = "tw-admin-bench"
RESULTS = Path(__file__).parent / "results"


def progress(message: str) -> None:
    """One line of progress on stderr (the report goes to a file)."""
    print(f"  · {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def embedded_stack(
    *, fast_unsafe: bool, extra_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """The whole system on free ports, as ``make dev`` runs it; torn down on exit."""
    with tempfile.TemporaryDirectory(prefix="tollway-bench-") as root:
        config = StackConfig(
            root=Path(root),
            pg_port=free_port(),
            broker_port=free_port(),
            edge_port=free_port(),
            upstream_port=free_port(),
            researcher_port=free_port(),
            admin_token=ADMIN_TOKEN,
            edge_id="edge-bench",
            fast_unsafe=fast_unsafe,
            extra_env={"TOLLWAY_LOG_LEVEL": "warning", **(extra_env or {})},
        )
        stack = Stack(config)
        try:
            stack.start_infra()
            stack.start_upstream()
            asyncio.run(seed_routes(stack.dsn, stack.upstream_url, stack.secret_ring))
            stack.start_services()
            yield stack
        finally:
            stack.stop()


def tenant(stack: Stack, credit: str = "1000000") -> str:
    """A fresh account with a large Credit balance; returns its API key."""
    account = f"bench-{int(time.time() * 1000) % 10**9}"
    return create_tenant(stack.edge_url, ADMIN_TOKEN, account, {"credit": credit}).api_key


@dataclass
class Run:
    """Latencies (ms) of one closed-loop run, its wall time and failures."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    first_error: str = ""
    # CPU time per answered request (ms), per stack process and for the whole "machine".
    cpu_ms: dict[str, float] = field(default_factory=dict)

    def pct(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the latencies."""
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    @property
    def mean_ms(self) -> float:
        """Mean latency."""
        return statistics.fmean(self.latencies_ms) if self.latencies_ms else float("nan")


async def closed_loop(
    call: Callable[[], Awaitable[Any]], *, requests: int, concurrency: int
) -> Run:
    """``concurrency`` workers issue ``requests`` calls back to back; each call is timed."""
    run = Run()
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            try:
                await call()
            except Exception as exc:  # noqa: BLE001 - a benchmark counts failures, it does not stop
                run.errors += 1
                run.first_error = run.first_error or repr(exc)[:200]
                continue
            run.latencies_ms.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.seconds = time.perf_counter() - started
    return run


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return 0.0
    return 0.0


_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_cpu_seconds() -> float:
    """CPU time every process on the machine has used, all cores (``/proc/stat``)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICKS


class CpuMeter:
    """CPU time spent while a run goes: by each process of the stack and by the whole machine.

    The machine's figure includes the load generator, the broker and Postgres; compared between
    two gateways in the same run it says which one needs less hardware per request.
    """

    def __init__(self, stack: Stack) -> None:
        """Meter ``stack``'s processes."""
        self._stack = stack

    def snapshot(self) -> dict[str, float]:
        """CPU seconds used so far, per process name and ``machine``."""
        used = {name: process_cpu_seconds(p.pid) for name, p in self._stack.processes.items()}
        used["machine"] = machine_cpu_seconds()
        return used

    async def run(
        self, call: Callable[[], Awaitable[Any]], *, requests: int, concurrency: int
    ) -> Run:
        """:func:`closed_loop`, with the CPU it took per answered request in ``Run.cpu_ms``."""
        before = self.snapshot()
        run = await closed_loop(call, requests=requests, concurrency=concurrency)
        after = self.snapshot()
        answered = max(1, len(run.latencies_ms))
        run.cpu_ms = {k: (v - before.get(k, 0.0)) * 1000 / answered for k, v in after.items()}
        return run


class RssSampler:
    """Samples every service's RSS in the background; keeps the peak per service."""

    def __init__(self, stack: Stack, every_seconds: float = 0.5) -> None:
        """Watch ``stack``'s processes."""
        self._stack = stack
        self._every = every_seconds
        self.peak: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Take one sample now."""
        for name, proc in self._stack.processes.items():
            self.peak[name] = max(self.peak.get(name, 0.0), rss_mb(proc.pid))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self._every)

    async def __aenter__(self) -> Self:
        """Start sampling."""
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()
