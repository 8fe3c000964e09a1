"""How the dashboard shows things: money, times, attempt chains, ledger entries (pure functions).

Money stays integer micro-units until here, the last step, where ``format_micro`` (the one
formatting rule of ``tollway.events.pricing``) turns it into a decimal string.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from tollway.edge.ui import charts
from tollway.events.pricing import format_micro

# What a usage chart can show, and the usage row field it reads (tokens add input and output).
USAGE_METRICS = {"charged": "charged_micro", "tokens": "tokens", "requests": "requests"}


def money(micro: int | None, unit: str | None = None) -> str:
    """``1234567`` -> ``1.234567 credit``; an unknown amount is a dash."""
    if micro is None:
        return "—"
    text = format_micro(int(micro))
    return f"{text} {unit}" if unit else text


def number(value: int | None) -> str:
    """Thousands separated: ``12,345``."""
    return "—" if value is None else f"{int(value):,}"


def when(value: str | datetime | None) -> str:
    """An instant in UTC to the second: ``2026-01-31 13:04:05``."""
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def days(until: date, count: int) -> list[str]:
    """The ``count`` UTC days ending with ``until``, oldest first, as ``YYYY-MM-DD``."""
    return [(until - timedelta(days=count - 1 - i)).isoformat() for i in range(count)]


def usage_series(
    rows: list[dict[str, Any]], group_by: str, labels: list[str], metric: str
) -> dict[tuple[str, str], dict[str, list[int]]]:
    """Per unit (money) or for all units together (tokens, requests): a value per group per day."""
    out: dict[tuple[str, str], dict[str, list[int]]] = {}
    index = {day: i for i, day in enumerate(labels)}
    for r in rows:
        if r["day"] not in index:
            continue
        unit = (r["unit"] or "") if metric == "charged" else ""
        value = (
            r["input_tokens"] + r["output_tokens"]
            if metric == "tokens"
            else r[USAGE_METRICS[metric]]
        )
        group = str(r[group_by] or "(none)")
        series = out.setdefault((metric, unit), {})
        series.setdefault(group, [0] * len(labels))[index[r["day"]]] += int(value)
    return out


def bucket_units(receipt: dict[str, Any], balances: list[dict[str, Any]]) -> dict[str, str]:
    """Each bucket's unit: a receipt's amounts are in their own bucket's unit, not the served one.

    A direct attempt that failed before a pool fallback cost credit, not CNY; the primary hold
    reserved credit. The account's buckets give each unit; the served bucket's comes with the
    receipt.
    """
    units = {b["bucket"]: b["unit"] for b in balances}
    units[receipt.get("bucket") or ""] = receipt.get("unit") or ""
    return units


def hold_unit(receipt: dict[str, Any], units: dict[str, str]) -> str:
    """The unit of the primary hold: the bucket of the plan's first candidate."""
    plan = receipt.get("plan") or [{}]
    return units.get(plan[0].get("bucket") or "", receipt.get("unit") or "")


def attempt_chain(
    receipt: dict[str, Any], units: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The receipt's attempts in order, each with its role in the story and its cost's unit.

    The first attempt is the ``primary``; one on the same channel as the attempt before it is a
    ``retry``; one on another channel is a ``backup`` (named with its tier in the plan). The
    attempt that produced the answer is marked ``served``.
    """
    units = units or {}
    tiers = {p["channel"]: p.get("tier") for p in receipt.get("plan") or []}
    served_by = receipt.get("served_by")
    chain: list[dict[str, Any]] = []
    previous: str | None = None
    for attempt in receipt.get("attempts") or []:
        channel = attempt.get("channel_id")
        if previous is None:
            role = "primary"
        elif channel == previous:
            role = "retry"
        else:
            tier = tiers.get(attempt.get("channel"))
            role = f"backup (tier {tier})" if tier else "backup"
        usage = attempt.get("usage") or {}
        chain.append(
            {
                **attempt,
                "role": role,
                "input_tokens": usage.get("input_tokens", 0),
                "output_tokens": usage.get("output_tokens", 0),
                "served": attempt.get("outcome") == "ok" and attempt.get("channel") == served_by,
                "loss_micro": (receipt.get("upstream_losses") or {}).get(str(attempt["attempt"])),
                "unit": units.get(attempt.get("bucket") or "", receipt.get("unit") or ""),
            }
        )
        previous = channel
    return chain


def movements(payload: dict[str, Any], account_id: str) -> list[dict[str, Any]]:
    """A journal entry's net movement on each of the tenant's own ledger accounts.

    Named relative to the tenant (``credit``, ``credit/held``...), in posting order; the system's
    side of each movement is left out.
    """
    prefix = f"{account_id}/"
    net: dict[tuple[str, str], int] = {}
    for p in payload.get("postings") or []:
        if p.get("account", "").startswith(prefix):
            key = (p["account"][len(prefix) :], p["unit"])
            net[key] = net.get(key, 0) + int(p["amount"])
    return [
        {"account": account, "unit": unit, "amount": amount}
        for (account, unit), amount in net.items()
        if amount
    ]


def margin_charts(groups: tuple[str, ...], rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """One chart per unit: the margin of each comparable group (negative bars point down).

    Groups whose two sides are not in one unit have no margin, so no bar: the table shows both
    sides and says why.
    """
    by_unit: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["comparable"]:
            by_unit.setdefault(r["unit"], []).append(r)
    drawn = []
    for unit, comparable in sorted(by_unit.items()):
        labels = [" · ".join(str(r.get(g) or "—") for g in groups) for r in comparable]
        title = f"Margin per {' · '.join(groups)} ({unit})"
        values = [int(r["margin_micro"]) for r in comparable]
        drawn.append((title, charts.signed_bars(labels, values, title=title, value_format=money)))
    return drawn


def safe_next(target: str | None, default: str) -> str:
    """Where to go after login: a path inside the dashboard, never another site."""
    inside = target == "/ui" or (target or "").startswith("/ui/")
    if not target or not inside or "\\" in target:
        return default
    return target
