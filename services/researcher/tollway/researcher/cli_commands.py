"""What ``tollway research`` runs (imported only when a research command runs)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from tollway.events.cli_env import edge_origin, error_message, required
from tollway.events.pricing import format_micro

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

BAR_WIDTH = 30


def run(args: argparse.Namespace) -> int:
    """Dispatch; errors say what to do next."""
    url = edge_origin(required(args.base_url, "TOLLWAY_BASE_URL", "--base-url"))
    headers = {"authorization": f"Bearer {required(args.api_key, 'TOLLWAY_API_KEY', '--api-key')}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            if args.action == "run":
                return _run(client, args)
            if args.action == "estimate":
                return _estimate(client, args)
            return _simple(client, args)
    except httpx.HTTPError as exc:
        sys.stderr.write(f"Cannot reach the gateway at {url} ({exc}): is it running?\n")
        return 1


def _simple(client: httpx.Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        response = client.get("/v1/research")
    elif args.action == "cancel":
        response = client.post(f"/v1/research/{args.run_id}/cancel")
    elif args.action == "receipt":
        response = client.get(f"/v1/research/{args.run_id}/receipt")
    else:
        response = client.get(f"/v1/research/{args.run_id}")
    return _print(response)


def _print(response: httpx.Response) -> int:
    if response.status_code >= 400:
        return _error(response)
    sys.stdout.write(orjson.dumps(response.json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def _error(response: httpx.Response) -> int:
    content_type = response.headers.get("content-type", "")
    sys.stderr.write(error_message(response.status_code, response.content, content_type) + "\n")
    return 1


def _body(args: argparse.Namespace) -> dict[str, Any]:
    caps = dict(c.split("=", 1) for c in args.cap if "=" in c)
    models = {"fast": args.fast_model, "strong": args.strong_model}
    body = {
        "topic": args.topic,
        "ticker": args.ticker,
        "mode": args.mode,
        "cap": caps,
        "models": {k: v for k, v in models.items() if v},
    }
    return {k: v for k, v in body.items() if v is not None}


def _estimate(client: httpx.Client, args: argparse.Namespace) -> int:
    response = client.post("/v1/research/estimate", json=_body(args))
    if response.status_code >= 400:
        return _error(response)
    _describe(response.json())
    return 0


def _confirmed(client: httpx.Client, args: argparse.Namespace) -> bool | None:
    """Show the estimate and ask; None when the estimate itself was refused."""
    response = client.post("/v1/research/estimate", json=_body(args))
    if response.status_code >= 400:
        _error(response)
        return None
    _describe(response.json())
    if not sys.stdin.isatty():
        sys.stderr.write("Not started: pass --yes to start without a terminal to confirm on.\n")
        return False
    answer = input("Start this run? [y/N] ").strip().lower()
    return answer in {"y", "yes"}


def _run(client: httpx.Client, args: argparse.Namespace) -> int:
    if not args.yes:
        confirmed = _confirmed(client, args)
        if not confirmed:
            return 1 if confirmed is None else 3
    response = client.post("/v1/research", json=_body(args))
    if response.status_code >= 400:
        return _error(response)
    started = response.json()
    _describe(started)
    try:
        final = _follow(client, started)
    except KeyboardInterrupt:
        client.post(f"/v1/research/{started['id']}/cancel")
        sys.stderr.write("\ncancelling: the run closes its envelope and keeps its receipt\n")
        final = _follow(client, started)
    return _conclude(client, started["id"], final, args.out)


def _describe(run: dict[str, Any]) -> None:
    """One line: the run (or ``estimate``), its calls, tokens, cost range per bucket, duration."""
    est = run["estimate"]
    costs = ", ".join(
        f"{b['bucket']} {format_micro(b['low_micro'])}..{format_micro(b['high_micro'])}"
        for b in est["buckets"]
    )
    name = f"run {run['id']}" if "id" in run else "estimate"
    sys.stderr.write(
        f"{name} ({run['mode']}, {', '.join(run['tickers'])}): {est['calls']} calls,"
        f" up to {est['input_tokens'] + est['max_output_tokens']} tokens,"
        f" cost {costs}, about {est['duration_seconds']}s\n"
    )
    expected = est.get("expected")
    if expected:
        spent = ", ".join(
            f"{b['bucket']} {format_micro(b['p50_micro'])} (p90 {format_micro(b['p90_micro'])})"
            for b in expected["buckets"]
        )
        basis = (
            f"from your last {expected['history_runs']} completed runs like it"
            if expected["basis"] == "history"
            else "from the plan (no past runs like it yet)"
        )
        took = expected["duration_seconds"]
        sys.stderr.write(
            f"  expected {basis}: {expected['tokens']['p50']} tokens"
            f" (p90 {expected['tokens']['p90']}), cost {spent},"
            f" {took['p50']}s (p90 {took['p90']}s)\n"
        )


def _follow(client: httpx.Client, run: dict[str, Any]) -> dict[str, Any]:
    total = run["estimate"]["calls"]
    last: dict[str, Any] = {}
    for kind, data in _events(client, run["id"]):
        if kind == "call_finished":
            _bar(data, total)
        elif kind == "stage":
            sys.stderr.write(f"\n  stage: {data['stage']}\n")
        elif kind == "finished":
            last = data
    sys.stderr.write("\n")
    return last


def _events(client: httpx.Client, run_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    kind = ""
    with client.stream("GET", f"/v1/research/{run_id}/events", timeout=None) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                yield kind, orjson.loads(line.partition(":")[2])


def _bar(data: dict[str, Any], total: int) -> None:
    done = min(int(data["calls"]), total)
    filled = BAR_WIDTH * done // max(total, 1)
    spent = " ".join(f"{b} {format_micro(v)}" for b, v in data["spent_micro"].items())
    sys.stderr.write(
        f"\r  [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} calls"
        f"  {data['tokens']} tokens  {spent}  {data['section']}/{data['step']}   "
    )
    sys.stderr.flush()


def _conclude(client: httpx.Client, run_id: str, final: dict[str, Any], out: str) -> int:
    status = final.get("status", "unknown")
    sys.stderr.write(
        f"run {run_id}: {status}" + (f" ({final['error']})" if final.get("error") else "") + "\n"
    )
    for suffix in ("md", "pdf"):
        response = client.get(f"/v1/research/{run_id}/report.{suffix}")
        if response.status_code == 200:
            Path(f"{out}.{suffix}").write_bytes(response.content)
            sys.stderr.write(f"  saved {out}.{suffix}\n")
    receipt = client.get(f"/v1/research/{run_id}/receipt").json()
    for bucket, v in receipt.get("totals", {}).items():
        sys.stderr.write(
            f"  charged {format_micro(v['charged_micro'])} {v['unit']} from {bucket}"
            f" over {v['calls']} calls; equals the ledger: {receipt.get('matches_ledger')}\n"
        )
    return 0 if status == "completed" else 1
