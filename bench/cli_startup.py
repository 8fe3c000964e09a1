"""How long ``tollway --help`` and each sub-command's ``--help`` take to start.

Runs each command ``--repeat`` times in a fresh interpreter (as a user's shell does) after one
warm-up, next to the bare interpreter (``python -c pass``) as the floor, and prints mean, min
and max wall seconds and the modules each one imports. Nothing is asserted here (a timed test
fails on a busy machine); tests/unit/test_cli_imports.py asserts what is imported.

    uv run --frozen python bench/cli_startup.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import RESULTS

COMMANDS = (
    [],
    ["--help"],
    ["ledger", "--help"],
    ["ledger", "verify", "--help"],
    ["ledger", "rerate", "--help"],
    ["alerts", "tail", "--help"],
    ["budgets", "--help"],
    ["research", "--help"],
    ["research", "run", "--help"],
)
COUNT_MODULES = (
    "import sys, runpy; sys.argv = ['tollway', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('tollway.cli', run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "sys.stderr.write(f'{len(sys.modules)}\\n')"
)


def timed(argv: list[str], repeat: int) -> list[float]:
    """Wall seconds of ``repeat`` runs (after one unmeasured warm-up)."""
    cmd = [sys.executable, "-c", "pass"] if not argv else [sys.executable, "-m", "tollway.cli"]
    runs: list[float] = []
    for i in range(repeat + 1):
        started = time.perf_counter()
        subprocess.run([*cmd, *argv], capture_output=True, check=False)
        if i:
            runs.append(time.perf_counter() - started)
    return runs


def modules(argv: list[str]) -> int:
    """How many modules the interpreter holds after the command (its own and Python's)."""
    script = "import sys; sys.stderr.write(f'{len(sys.modules)}\\n')" if not argv else COUNT_MODULES
    done = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, check=False
    )
    return int(done.stderr.strip().splitlines()[-1])


def main() -> int:
    """Measure and print a table (also written to bench/results/cli_startup.md)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    lines = [
        "| command | mean s | min s | max s | modules |",
        "|---|---:|---:|---:|---:|",
    ]
    for argv in COMMANDS:
        runs = timed(argv, args.repeat)
        name = "python -c pass (floor)" if not argv else "tollway " + " ".join(argv)
        lines.append(
            f"| `{name}` | {statistics.mean(runs):.3f} | {min(runs):.3f} | {max(runs):.3f}"
            f" | {modules(argv)} |"
        )
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cli_startup.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
