"""How long each research mode takes against the demo upstream.

Starts the embedded stack, then measures in the same run:
  * the baseline: one chat call through the edge until its receipt is settled (what the
    researcher waits for after every call), sequentially;
  * each mode (quick, standard, deep): wall time from ``POST /v1/research`` to the run's end.
The report gives seconds and ratios against the baseline (mode time / (calls x baseline)), so the
figures mean something on any machine. Nothing is asserted.

    uv run --frozen python bench/research.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import RESULTS, embedded_stack, progress, tenant

MODES = ("quick", "standard", "deep")


def settled_call(edge: httpx.Client) -> float:
    """Seconds for one chat call and its settled receipt."""
    started = time.perf_counter()
    response = edge.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "bench"}]},
    )
    request_id = response.headers["x-request-id"]
    while edge.get(f"/v1/receipts/{request_id}").json().get("status") != "settled":
        time.sleep(0.01)
    return time.perf_counter() - started


def one_run(researcher: httpx.Client, mode: str) -> tuple[float, dict[str, Any]]:
    """Seconds from POST to the run's end, and the finished run."""
    started = time.perf_counter()
    run = researcher.post("/v1/research", json={"topic": "ACME", "mode": mode}).json()
    with researcher.stream("GET", f"/v1/research/{run['id']}/events", timeout=None) as s:
        for _ in s.iter_lines():
            pass
    elapsed = time.perf_counter() - started
    return elapsed, researcher.get(f"/v1/research/{run['id']}").json()


def measure(repeat: int) -> dict[str, Any]:
    """Baseline and modes on one fresh stack."""
    with embedded_stack(fast_unsafe=True) as stack:
        key = tenant(stack)
        url = f"http://127.0.0.1:{stack.config.researcher_port}"
        stack.wait_healthy(f"{url}/healthz", "researcher")
        auth = {"authorization": f"Bearer {key}"}
        with (
            httpx.Client(base_url=stack.edge_url, headers=auth, timeout=60) as edge,
            httpx.Client(base_url=url, headers=auth, timeout=60) as researcher,
        ):
            progress("warming up (first report loads the PDF renderer)")
            one_run(researcher, "quick")
            progress("baseline: 20 settled calls")
            baseline = statistics.median(settled_call(edge) for _ in range(20))
            modes: dict[str, Any] = {}
            for mode in MODES:
                times, calls = [], 0
                for i in range(repeat):
                    progress(f"{mode} run {i + 1}/{repeat}")
                    elapsed, run = one_run(researcher, mode)
                    times.append(elapsed)
                    calls = run["estimate"]["calls"]
                modes[mode] = {"seconds": statistics.median(times), "calls": calls}
    return {"baseline": baseline, "modes": modes}


def report(result: dict[str, Any], repeat: int) -> str:
    """The Markdown report."""
    base = result["baseline"]
    lines = [
        "# Research modes against the demo upstream",
        "",
        (
            "Baseline (same run): one chat call until its receipt settles, median of 20:"
            f" {base * 1000:.1f} ms. Median of {repeat} runs per mode."
        ),
        "",
        "| mode | calls | seconds | x baseline | per call vs baseline |",
        "|---|---|---|---|---|",
    ]
    for mode, m in result["modes"].items():
        ratio = m["seconds"] / base
        lines.append(
            f"| {mode} | {m['calls']} | {m['seconds']:.2f} | {ratio:.1f} |"
            f" {ratio / m['calls']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    """Measure, write bench/results/research.md, print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    text = report(measure(args.repeat), args.repeat)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "research.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
