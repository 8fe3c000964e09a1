"""The run's receipt, folded from the ledger's receipts of its calls (pure).

Every call shows its model, route, upstream model, tokens, cost, retries and fallback; the
totals per bucket are sums of what the ledger charged, so they equal the ledger's charges for
the run's task (the API shows both side by side).
"""

from __future__ import annotations

from typing import Any

from tollway.events.pricing import format_micro


def call_view(call: dict[str, Any]) -> dict[str, Any]:
    """One call as the receipt shows it."""
    r = call.get("receipt") or {}
    served = _served(r)
    usage = r.get("usage") or {}
    return {
        "index": call["idx"],
        "section": call["section"],
        "step": call["step"],
        "model": call["model"],
        "request_id": call["request_id"],
        "http_status": call["http_status"],
        "status": r.get("status"),
        "channel": served.get("channel"),
        "route_type": served.get("route_type"),
        "upstream_model": served.get("upstream_model"),
        "input_tokens": int(usage.get("input_tokens", 0)),
        "output_tokens": int(usage.get("output_tokens", 0)),
        "bucket": r.get("bucket"),
        "unit": r.get("unit"),
        "charged_micro": int(r.get("charged_micro") or 0),
        "retries": int(r.get("retries") or 0),
        "fallback": bool(r.get("fallback")),
        "attempts": len(r.get("attempts") or []),
        "limit": r.get("limit"),
        "error": call["error"],
    }


def _served(r: dict[str, Any]) -> dict[str, Any]:
    ok = [a for a in r.get("attempts") or [] if a.get("outcome") == "ok"]
    return ok[-1] if ok else {}


def totals(calls: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Charged micro-units, calls and tokens per bucket."""
    out: dict[str, dict[str, Any]] = {}
    for view in (call_view(c) for c in calls):
        if not view["charged_micro"]:
            continue
        entry = out.setdefault(
            view["bucket"], {"unit": view["unit"], "charged_micro": 0, "calls": 0, "tokens": 0}
        )
        entry["charged_micro"] += view["charged_micro"]
        entry["calls"] += 1
        entry["tokens"] += view["input_tokens"] + view["output_tokens"]
    return out


def build(
    run: dict[str, Any], calls: list[dict[str, Any]], ledger_task: dict[str, Any] | None
) -> dict[str, Any]:
    """The full receipt, with the ledger's charges for the task next to the run's own sums."""
    views = [call_view(c) for c in calls]
    mine = totals(calls)
    ledger = {
        b: int(v["charged_micro"]) for b, v in ((ledger_task or {}).get("cost") or {}).items()
    }
    return {
        "run_id": run["id"],
        "object": "research.receipt",
        "task_id": run["task_id"],
        "status": run["status"],
        "calls": views,
        "totals": mine,
        "tokens": {
            "input_tokens": sum(v["input_tokens"] for v in views),
            "output_tokens": sum(v["output_tokens"] for v in views),
        },
        "retries": sum(v["retries"] for v in views),
        "fallbacks": sum(1 for v in views if v["fallback"]),
        "ledger": ledger_task,
        "matches_ledger": ledger_task is not None
        and ledger == {b: v["charged_micro"] for b, v in mine.items()},
    }


def cost_lines(sums: dict[str, dict[str, Any]]) -> list[str]:
    """The report's cost paragraph (Markdown list)."""
    return [
        f"- {bucket}: {format_micro(v['charged_micro'])} {v['unit']} over {v['calls']} calls"
        f" ({v['tokens']} tokens)"
        for bucket, v in sorted(sums.items())
    ]


def cost_rows(sums: dict[str, dict[str, Any]]) -> list[list[str]]:
    """The report's cost table (header first)."""
    rows = [["Bucket", "Charged", "Unit", "Calls", "Tokens"]]
    rows += [
        [b, format_micro(v["charged_micro"]), str(v["unit"]), str(v["calls"]), str(v["tokens"])]
        for b, v in sorted(sums.items())
    ]
    return rows if len(rows) > 1 else []
