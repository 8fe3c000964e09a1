"""Idle CPU: what a whole dev stack burns while nobody calls it, per process.

    uv run python bench/idle.py [--broker kafka|tansu] [--settle 20] [--window 30] [--label after]
        [--before bench/results/idle-kafka-before.json]

Starts the stack as ``make dev`` does (free ports, a throwaway directory), sends one request
through it so every consumer has joined its group and every path is warm, waits ``--settle``
seconds, then reads each process's CPU time (``/proc/<pid>/stat``) over ``--window`` seconds:
the five services, the demo upstream, the broker, and Postgres (the postmaster and every
backend, summed). Written to ``bench/results/idle-<broker>[-<label>].md`` and printed.
The figure is a share of one core: 0.02 is 2 %.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import RESULTS, embedded_stack, process_cpu_seconds, progress, tenant

if TYPE_CHECKING:
    from tollway.devstack.stack import Stack


def _children(pid: int) -> list[int]:
    """Every live process whose parent is ``pid`` (Postgres backends and helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == pid:
            found.append(int(entry.name))
    return found


def _postmaster(stack: Stack) -> int | None:
    pg = stack._postgres  # noqa: SLF001 - the bench meters the stack's own processes
    if pg is None:
        return None
    try:
        return int((pg.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _groups(stack: Stack) -> dict[str, list[int]]:
    """Process name -> the pids whose CPU counts for it."""
    groups = {name: [p.pid] for name, p in stack.processes.items()}
    broker = stack._broker  # noqa: SLF001
    proc = getattr(broker, "_proc", None)
    if proc is not None:
        groups["broker"] = [proc.pid]
    postmaster = _postmaster(stack)
    if postmaster is not None:
        groups["postgres"] = [postmaster, *_children(postmaster)]
    return groups


def _cpu(groups: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(process_cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}


def measure_idle(stack: Stack, window: float) -> dict[str, float]:
    """Share of one core each process group used over ``window`` seconds."""
    groups = _groups(stack)
    before, started = _cpu(groups), time.monotonic()
    time.sleep(window)
    # Backends that started meanwhile count too (their whole CPU time falls in the window).
    groups["postgres"] = sorted({*groups.get("postgres", []), *_groups(stack).get("postgres", [])})
    after, elapsed = _cpu(groups), time.monotonic() - started
    shares = {name: max(0.0, after[name] - before.get(name, 0.0)) / elapsed for name in after}
    shares["total"] = sum(shares.values())
    return shares


def _warm(stack: Stack) -> None:
    key = tenant(stack)
    response = httpx.post(
        f"{stack.edge_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
    )
    if response.status_code != 200:
        raise RuntimeError(f"warm-up request answered {response.status_code}")


def report(broker: str, label: str, shares: dict[str, float], args: argparse.Namespace) -> str:
    """The markdown table."""
    load = os.getloadavg()
    lines = [
        f"# Idle CPU: {broker}{f' ({label})' if label else ''}",
        "",
        *([f"Service environment: `{' '.join(args.env)}`.", ""] if args.env else []),
        (
            f"One warm-up request, {args.settle:.0f} s to settle, then {args.window:.0f} s"
            f" measured. Load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
            " (other work on the machine; per-process CPU time is not inflated by it)."
        ),
        "",
    ]
    before = _before(args.before)
    if before is None:
        lines += ["| process | % of one core |", "|---|---:|"]
    else:
        lines += [
            f"Before: `{args.before}` (same measurement).",
            "",
            "| process | before, % of one core | after, % of one core |",
            "|---|---:|---:|",
        ]
    for name, share in sorted(shares.items(), key=lambda kv: (kv[0] == "total", -kv[1])):
        was = "" if before is None else f" {before.get(name, 0.0) * 100:.2f} |"
        lines.append(f"| {name} |{was} {share * 100:.2f} |")
    return "\n".join(lines) + "\n"


def _before(path: str | None) -> dict[str, float] | None:
    """Shares of an earlier run (its ``.json``), for a before/after table."""
    if not path:
        return None
    shares: dict[str, float] = json.loads(Path(path).read_text())
    return shares


def main() -> int:
    """Measure and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default=os.environ.get("TOLLWAY_BROKER", "kafka"))
    parser.add_argument("--settle", type=float, default=20.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--label", default="", help="suffix of the report's file name")
    parser.add_argument(
        "--before", default="", help="an earlier run's .json: report before and after side by side"
    )
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for every service (repeatable)"
    )
    args = parser.parse_args()
    os.environ["TOLLWAY_BROKER"] = args.broker
    extra = dict(item.split("=", 1) for item in args.env)
    with embedded_stack(fast_unsafe=False, extra_env=extra) as stack:
        _warm(stack)
        progress(f"settling {args.settle:.0f} s, then measuring {args.window:.0f} s")
        time.sleep(args.settle)
        shares = measure_idle(stack, args.window)
    text = report(args.broker, args.label, shares, args)
    RESULTS.mkdir(exist_ok=True)
    stem = f"idle-{args.broker}{f'-{args.label}' if args.label else ''}"
    (RESULTS / f"{stem}.md").write_text(text)
    (RESULTS / f"{stem}.json").write_text(json.dumps(shares, indent=1, sort_keys=True) + "\n")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
