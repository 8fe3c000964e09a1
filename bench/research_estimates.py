"""Research estimates against what runs actually took, per mode, before and after calibration.

Starts the embedded stack (demo upstream), then for each mode runs N research runs one after the
other through the edge's base URL. Before each run it asks ``POST /v1/research/estimate`` with
the same body, so every run has the estimate a user would have seen: the first ones come from
the static plan (no history yet), the later ones are calibrated from the runs before them. The
actual figures are the run's receipt (calls, tokens, cost per bucket) and its server-side
duration (created to finished, report included).

The report compares, per mode:
  * static: the plan's range (likely .. worst case) against every run's actual;
  * calibrated: the p50/p90 the estimate gave once at least ``--history`` runs were completed,
    against the actuals of those later runs.
Nothing is asserted.

    uv run --frozen python bench/research_estimates.py [--runs 20] [--history 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import RESULTS, embedded_stack, progress, tenant

MODES = ("quick", "standard", "deep")
BODY = {"topic": "Is ACME a buy?"}


def one_run(edge: httpx.Client, mode: str) -> dict[str, Any]:
    """The estimate shown before the run, and the run's actual figures."""
    body = {**BODY, "mode": mode}
    estimate = edge.post("/v1/research/estimate", json=body)
    estimate.raise_for_status()
    run = edge.post("/v1/research", json=body)
    run.raise_for_status()
    run_id = run.json()["id"]
    with edge.stream("GET", f"/v1/research/{run_id}/events", timeout=None) as s:
        for _ in s.iter_lines():
            pass
    final = edge.get(f"/v1/research/{run_id}").json()
    receipt = edge.get(f"/v1/research/{run_id}/receipt").json()
    calls = receipt["calls"]
    spent: dict[str, int] = {}
    for c in calls:
        if c["charged_micro"]:
            spent[c["bucket"]] = spent.get(c["bucket"], 0) + c["charged_micro"]
    started = datetime.fromisoformat(final["created_at"])
    finished = datetime.fromisoformat(final["finished_at"])
    return {
        "status": final["status"],
        "estimate": estimate.json()["estimate"],
        "calls": len(calls),
        "tokens": sum(c["input_tokens"] + c["output_tokens"] for c in calls),
        "spent": spent,
        "seconds": (finished - started).total_seconds(),
    }


def measure(runs: int, deadline: float) -> dict[str, list[dict[str, Any]]]:
    """N runs per mode on one fresh stack (fewer if the deadline passes)."""
    out: dict[str, list[dict[str, Any]]] = {}
    with embedded_stack(fast_unsafe=True) as stack:
        key = tenant(stack)
        stack.wait_healthy(f"http://127.0.0.1:{stack.config.researcher_port}/healthz", "researcher")
        auth = {"authorization": f"Bearer {key}"}
        with httpx.Client(base_url=stack.edge_url, headers=auth, timeout=120) as edge:
            for mode in MODES:
                out[mode] = []
                for i in range(runs):
                    if time.time() > deadline:
                        progress(f"{mode}: deadline reached after {i} runs")
                        break
                    progress(f"{mode} run {i + 1}/{runs}")
                    out[mode].append(one_run(edge, mode))
    return out


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, -(-len(ordered) * q // 100)) - 1] if ordered else 0.0


def _money(micro: float) -> str:
    return f"{micro / 1_000_000:.6f}"


def _static_lines(mode: str, runs: list[dict[str, Any]]) -> list[str]:
    est = runs[0]["estimate"]
    [bucket] = est["buckets"][:1] or [{"bucket": "-", "low_micro": 0, "high_micro": 0}]
    likely_tokens = est["input_tokens"] * 3 // 4 + est["max_output_tokens"] // 4
    worst_tokens = est["input_tokens"] + est["max_output_tokens"]
    tokens = [r["tokens"] for r in runs]
    cost = [r["spent"].get(bucket["bucket"], 0) for r in runs]
    secs = [r["seconds"] for r in runs]
    inside = sum(bucket["low_micro"] <= c <= bucket["high_micro"] for c in cost)
    return [
        f"| {mode} | static | {len(runs)} | {est['calls']} |"
        f" {likely_tokens}..{worst_tokens} | {_p(tokens, 50):.0f} / {_p(tokens, 90):.0f} |"
        f" {_money(bucket['low_micro'])}..{_money(bucket['high_micro'])} |"
        f" {_money(_p(cost, 50))} / {_money(_p(cost, 90))} ({inside}/{len(runs)} in range) |"
        f" {est['duration_seconds']} | {_p(secs, 50):.2f} / {_p(secs, 90):.2f} |"
    ]


def _calibrated_lines(mode: str, runs: list[dict[str, Any]], history: int) -> list[str]:
    later = [r for r in runs[history:] if r["estimate"].get("basis") == "history"]
    if not later:
        return [f"| {mode} | calibrated | 0 | - | - | - | - | - | - | - |"]
    exp = later[0]["estimate"]["expected"]
    bucket = exp["buckets"][0] if exp["buckets"] else {"bucket": "-", "p50_micro": 0}
    tokens = [r["tokens"] for r in later]
    cost = [r["spent"].get(bucket["bucket"], 0) for r in later]
    secs = [r["seconds"] for r in later]
    within = sum(
        r["spent"].get(bucket["bucket"], 0)
        <= next(b for b in r["estimate"]["expected"]["buckets"] if b["bucket"] == bucket["bucket"])[
            "p90_micro"
        ]
        for r in later
    )
    return [
        f"| {mode} | calibrated ({exp['history_runs']}+ runs) | {len(later)} |"
        f" {exp['calls']['p50']} | {exp['tokens']['p50']} / {exp['tokens']['p90']} |"
        f" {_p(tokens, 50):.0f} / {_p(tokens, 90):.0f} |"
        f" {_money(bucket['p50_micro'])} / {_money(bucket.get('p90_micro', 0))} |"
        f" {_money(_p(cost, 50))} / {_money(_p(cost, 90))} ({within}/{len(later)} at or under"
        f" its p90) |"
        f" {exp['duration_seconds']['p50']} / {exp['duration_seconds']['p90']} |"
        f" {_p(secs, 50):.2f} / {_p(secs, 90):.2f} |"
    ]


def report(result: dict[str, list[dict[str, Any]]], runs: int, history: int) -> str:
    """The Markdown report."""
    lines = [
        "# Research estimates against actual runs (demo upstream)",
        "",
        f"{runs} runs per mode asked for, one after the other, topic ACME, default models,"
        " through the edge's base URL. Each run's estimate was asked just before it.",
        "",
        "* static: the plan's range, likely..worst case (tokens, cost per bucket); duration is"
        " calls x the configured seconds per call. Actual: p50 / p90 over all runs of the mode.",
        f"* calibrated: the expected p50 / p90 the estimate gave for runs {history + 1}.. (from"
        " the completed runs before each; the first such estimate is shown), against those"
        " runs' actual p50 / p90.",
        "",
        "| mode | estimate | runs | calls | tokens est. | tokens actual p50 / p90 |"
        " cost est. | cost actual p50 / p90 | seconds est. | seconds actual p50 / p90 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, rs in result.items():
        if not rs:
            lines.append(f"| {mode} | - | 0 | - | - | - | - | - | - | - |")
            continue
        lines += _static_lines(mode, rs)
        lines += _calibrated_lines(mode, rs, history)
    statuses = {m: statistics.mode([r["status"] for r in rs]) for m, rs in result.items() if rs}
    lines += ["", f"Most common final status per mode: {statuses}.", ""]
    return "\n".join(lines)


def main() -> int:
    """Measure, write bench/results/research_estimates.md, print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--history", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=60.0, help="stop starting runs after")
    args = parser.parse_args()
    result = measure(args.runs, time.time() + args.minutes * 60)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "research_estimates.json").write_bytes(orjson.dumps(result))
    text = report(result, args.runs, args.history)
    (RESULTS / "research_estimates.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
