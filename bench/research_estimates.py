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

    uv run --frozen python bench/research_estimates.py [--runs 20] [--history 10] [--from-json]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import RESULTS, embedded_stack, progress, tenant

MODES = ("quick", "standard", "deep")
TOPICS = (
    "Is ACME a buy?",
    "How is GLOBX doing?",
    "NOVA outlook",
    "ACME vs GLOBX",
    "Compare GLOBX, NOVA and ACME",
)


def one_run(edge: httpx.Client, mode: str, topic: str) -> dict[str, Any]:
    """The estimate shown before the run, and the run's actual figures."""
    body = {"topic": topic, "mode": mode}
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
                    out[mode].append(one_run(edge, mode, TOPICS[i % len(TOPICS)]))
    return out


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1] if ordered else 0.0


def _static(est: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(expected, upper) per figure from the plan alone."""
    [bucket] = est["buckets"][:1]
    return {
        "calls": (est["calls"], est["calls"]),
        "tokens": (
            est["input_tokens"] * 3 // 4 + est["max_output_tokens"] // 4,
            est["input_tokens"] + est["max_output_tokens"],
        ),
        "cost": (bucket["low_micro"], bucket["high_micro"]),
        "seconds": (est["duration_seconds"], est["duration_seconds"]),
    }


def _calibrated(est: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(p50, p90) per figure as the estimate's expected block gives them."""
    x = est["expected"]
    [bucket] = x["buckets"][:1]
    return {
        "calls": (x["calls"]["p50"], x["calls"]["p90"]),
        "tokens": (x["tokens"]["p50"], x["tokens"]["p90"]),
        "cost": (bucket["p50_micro"], bucket["p90_micro"]),
        "seconds": (x["duration_seconds"]["p50"], x["duration_seconds"]["p90"]),
    }


def _actual(run: dict[str, Any], bucket: str) -> dict[str, float]:
    return {
        "calls": run["calls"],
        "tokens": run["tokens"],
        "cost": run["spent"].get(bucket, 0),
        "seconds": run["seconds"],
    }


def _show(figure: str, value: float) -> str:
    if figure == "cost":
        return f"{value / 1_000_000:.6f}"
    if figure == "seconds":
        return f"{value:.2f}"
    return f"{value:.0f}"


def _rows(mode: str, label: str, runs: list[dict[str, Any]], pick: Any) -> list[str]:
    """One row per figure: each run's own estimate against that run's actual."""
    if not runs:
        return [f"| {mode} | {label} | 0 | - | - | - | - | - |"]
    bucket = runs[0]["estimate"]["buckets"][0]["bucket"]
    out = []
    for figure in ("calls", "tokens", "cost", "seconds"):
        est = [pick(r["estimate"])[figure] for r in runs]
        act = [_actual(r, bucket)[figure] for r in runs]
        errors = [abs(e[0] - a) / a * 100 for e, a in zip(est, act, strict=True) if a]
        under = sum(a <= e[1] for e, a in zip(est, act, strict=True))
        first = est[-1]
        out.append(
            f"| {mode} | {label} | {len(runs)} | {figure}"
            f"{f' ({bucket})' if figure == 'cost' else ''} |"
            f" {_show(figure, first[0])} / {_show(figure, first[1])} |"
            f" {_show(figure, _p(act, 50))} / {_show(figure, _p(act, 90))} |"
            f" {statistics.median(errors) if errors else 0:.0f}% | {under}/{len(runs)} |"
        )
    return out


def report(result: dict[str, list[dict[str, Any]]], runs: int, history: int) -> str:
    """The Markdown report."""
    lines = [
        "# Research estimates against actual runs (demo upstream)",
        "",
        (
            f"{runs} runs per mode asked for, one after the other, default models, through the"
            f" edge's base URL, topics rotating over {len(TOPICS)} (one to three tickers). Before"
            " each run the estimate was asked with the same body, so each run is compared with"
            " the estimate a user saw just before it. Actual: the run's receipt (calls, tokens,"
            " cost) and its server-side duration (created to finished, report included)."
        ),
        "",
        (
            "* static: the plan's own figures (expected = a quarter of each output cap on the"
            " primary route; upper = the worst case the envelope holds; duration = calls x the"
            " configured seconds per call), for every run."
        ),
        (
            f"* calibrated: the p50 / p90 the estimate gave for runs {history + 1} onwards,"
            " calibrated from the account's completed runs of the same mode and models before"
            " each."
        ),
        (
            "* estimate column: the last run's estimate (expected / upper). Median error: of the"
            " expected figure against each run's actual. At or under: runs whose actual did not"
            " exceed the upper figure (worst case, or p90)."
        ),
        "",
        (
            "| mode | estimate | runs | figure | estimate (expected / upper) |"
            " actual p50 / p90 | median error | at or under upper |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, rs in result.items():
        lines += _rows(mode, "static", rs, _static)
        later = [r for r in rs[history:] if r["estimate"].get("basis") == "history"]
        lines += _rows(mode, "calibrated", later, _calibrated)
    statuses = {m: dict(Counter(r["status"] for r in rs)) for m, rs in result.items()}
    lines += ["", f"Final statuses per mode: {statuses}.", ""]
    return "\n".join(lines)


def main() -> int:
    """Measure, write bench/results/research_estimates.md, print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--history", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=60.0, help="stop starting runs after")
    parser.add_argument("--from-json", action="store_true", help="report the last measurement")
    args = parser.parse_args()
    raw = RESULTS / "research_estimates.json"
    if args.from_json:
        result = orjson.loads(raw.read_bytes())
    else:
        result = measure(args.runs, time.time() + args.minutes * 60)
        RESULTS.mkdir(exist_ok=True)
        raw.write_bytes(orjson.dumps(result))
    text = report(result, args.runs, args.history)
    (RESULTS / "research_estimates.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
