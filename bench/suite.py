"""The benchmark suite: every benchmark in turn, one report.

    uv run python bench/suite.py [--quick] [--no-litellm]

Runs ``overhead.py`` (gateway vs direct upstream vs LiteLLM's proxy: latency percentiles,
sustained rate, streaming time to first byte, RSS, every request settled), ``ledger_bench.py``
(settle and replay events/s) and ``breaker_latency.py`` (threshold crossing to first refusal),
each on its own fresh embedded stack, one after another so they never share the two cores.
Each writes its own report; this joins them into bench/results/report.md. A benchmark that
fails is reported as failed and the others still run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import RESULTS, progress

HERE = Path(__file__).resolve().parent


def _steps(args: argparse.Namespace) -> list[tuple[str, list[str], str]]:
    overhead = ["--quick"] if args.quick else []
    overhead += ["--no-litellm"] if args.no_litellm else []
    ledger = ["--requests", "1000"] if args.quick else []
    breakers = ["--trials", "4"] if args.quick else []
    return [
        ("gateway overhead", ["overhead.py", *overhead], "overhead.md"),
        ("ledger throughput", ["ledger_bench.py", *ledger], "ledger.md"),
        ("breaker time to refuse", ["breaker_latency.py", *breakers], "breaker_latency.md"),
    ]


def main() -> int:
    """Run each benchmark, then write the joined report."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy")
    args = parser.parse_args()
    sections = [
        "# Tollway benchmark suite",
        "",
        (
            f"Load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs."
            " Figures from a loaded machine are not comparable; ratios inside one run are."
        ),
        "",
    ]
    failed = 0
    for n, (name, command, report) in enumerate(_steps(args), start=1):
        progress(f"[{n}/3] {name}: python bench/{' '.join(command)}")
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(HERE / command[0]), *command[1:]])
        took = time.monotonic() - started
        path = RESULTS / report
        if code != 0 or not path.exists():
            failed += 1
            sections += [f"## {name}", "", f"**Failed** (exit {code}) after {took:.0f} s.", ""]
            continue
        body = path.read_text(encoding="utf-8")
        sections += [
            body.replace("\n# ", "\n## ", 1) if not body.startswith("# ") else "## " + body[2:],
            "",
            f"_({took:.0f} s)_",
            "",
        ]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "report.md"
    out.write_text("\n".join(sections), encoding="utf-8")
    progress(f"report written to {out}" + (f"; {failed} benchmark(s) failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
