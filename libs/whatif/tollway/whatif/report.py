"""The what-if report: current against alternative, per catalog model, route, key and project.

Every amount is an exact integer sum of per-request amounts in micro-units: charges per bucket,
upstream costs per cost currency, margins per unit. A margin is taken only where the request's
cost is known and in its bucket's unit (the policy's ``units``); the others are counted in
``margin_unknown``, as requests without a cost price are in ``cost_unknown``: nothing is
guessed. Requests whose alternative would have failed (circuit open at the time), that the
policy cannot route, or that were not served are counted apart and left out of both sides.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tollway.events.pricing import format_micro

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tollway.whatif.engine import Outcome, Priced

DIMENSIONS = ("model", "channel", "route_type", "project", "key")


@dataclass(slots=True)
class Side:
    """Sums of one side (current or alternative) of one group."""

    requests: int = 0
    charge: dict[str, int] = field(default_factory=dict)  # bucket -> micro
    cost: dict[str, int] = field(default_factory=dict)  # currency -> micro
    cost_unknown: int = 0
    margin: dict[str, int] = field(default_factory=dict)  # unit -> micro
    margin_unknown: int = 0

    def add(self, priced: Priced, units: dict[str, str]) -> None:
        """Count one priced request."""
        route = priced.route
        self.requests += 1
        self.charge[route.bucket] = self.charge.get(route.bucket, 0) + priced.charge_micro
        if priced.cost_micro is None or route.cost is None:
            self.cost_unknown += 1
            self.margin_unknown += 1
            return
        currency = route.cost.currency
        self.cost[currency] = self.cost.get(currency, 0) + priced.cost_micro
        if units.get(route.bucket) != currency:
            self.margin_unknown += 1
            return
        margin = priced.charge_micro - priced.cost_micro
        self.margin[currency] = self.margin.get(currency, 0) + margin

    def as_json(self) -> dict[str, Any]:
        """Integer micro-units, keyed by bucket, currency and unit."""
        return {
            "requests": self.requests,
            "charge_micro": dict(sorted(self.charge.items())),
            "cost_micro": dict(sorted(self.cost.items())),
            "cost_unknown": self.cost_unknown,
            "margin_micro": dict(sorted(self.margin.items())),
            "margin_unknown": self.margin_unknown,
        }


def _minus(new: dict[str, int], old: dict[str, int]) -> dict[str, int]:
    return {k: new.get(k, 0) - old.get(k, 0) for k in sorted(new.keys() | old.keys())}


def difference(current: Side, alternative: Side) -> dict[str, Any]:
    """Alternative minus current, member by member."""
    return {
        "requests": alternative.requests - current.requests,
        "charge_micro": _minus(alternative.charge, current.charge),
        "cost_micro": _minus(alternative.cost, current.cost),
        "cost_unknown": alternative.cost_unknown - current.cost_unknown,
        "margin_micro": _minus(alternative.margin, current.margin),
        "margin_unknown": alternative.margin_unknown - current.margin_unknown,
    }


@dataclass(slots=True)
class Apart:
    """Requests left out of the comparison, with what they were charged as served."""

    requests: int = 0
    current: Side = field(default_factory=Side)
    reasons: dict[str, int] = field(default_factory=dict)


def _group_keys(priced: Priced, outcome: Outcome) -> tuple[str, ...]:
    request = outcome.request
    route = priced.route
    return (request.model, route.channel, route.route_type, request.project_id, request.key_id)


@dataclass(slots=True)
class Report:
    """The what-if over a period, built by :meth:`add` one outcome at a time."""

    start: datetime
    end: datetime
    units: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    moved: int = 0
    unreadable: int = 0  # records of the log that did not decode, skipped
    total_current: Side = field(default_factory=Side)
    total_alternative: Side = field(default_factory=Side)
    groups: dict[str, dict[str, tuple[Side, Side]]] = field(
        default_factory=lambda: {d: {} for d in DIMENSIONS}
    )
    apart: dict[str, Apart] = field(
        default_factory=lambda: {
            k: Apart() for k in ("alternative_failed", "unroutable", "not_served")
        }
    )

    def add(self, outcome: Outcome) -> None:
        """Count one request."""
        self.requests += 1
        if outcome.kind != "compared":
            apart = self.apart[outcome.kind]
            apart.requests += 1
            apart.reasons[outcome.reason] = apart.reasons.get(outcome.reason, 0) + 1
            if outcome.current is not None:
                apart.current.add(outcome.current, self.units)
            return
        current, alternative = outcome.current, outcome.alternative
        if current is None or alternative is None:
            raise ValueError("a compared outcome has both sides")
        self.moved += current.route.channel_id != alternative.route.channel_id
        self.total_current.add(current, self.units)
        self.total_alternative.add(alternative, self.units)
        for side, priced in ((0, current), (1, alternative)):
            for dim, key in zip(DIMENSIONS, _group_keys(priced, outcome), strict=True):
                pair = self.groups[dim].get(key)
                if pair is None:
                    pair = self.groups[dim][key] = (Side(), Side())
                pair[side].add(priced, self.units)

    def extend(self, outcomes: Iterable[Outcome]) -> Report:
        """Count every outcome; returns itself."""
        for outcome in outcomes:
            self.add(outcome)
        return self

    def as_json(self) -> dict[str, Any]:
        """The whole report as JSON-ready data (integer micro-units)."""
        return {
            "from": _iso(self.start),
            "to": _iso(self.end),
            "requests": self.requests,
            "compared": self.total_current.requests,
            "moved": self.moved,
            "unreadable_records": self.unreadable,
            "total": _row("all", self.total_current, self.total_alternative),
            "groups": {
                dim: [_row(key, cur, alt) for key, (cur, alt) in sorted(rows.items())]
                for dim, rows in self.groups.items()
            },
            "apart": {
                kind: {
                    "requests": a.requests,
                    "reasons": dict(sorted(a.reasons.items())),
                    "current": a.current.as_json(),
                }
                for kind, a in self.apart.items()
            },
        }

    def as_csv(self) -> str:
        """One line per group, measure and unit: current, alternative, difference."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            ["dimension", "key", "measure", "unit", "current", "alternative", "difference"]
        )
        rows = [("total", "all", self.total_current, self.total_alternative)]
        rows += [
            (dim, key, cur, alt)
            for dim, groups in self.groups.items()
            for key, (cur, alt) in sorted(groups.items())
        ]
        for dim, key, cur, alt in rows:
            for measure, unit, c, a in _measures(cur, alt):
                writer.writerow([dim, key, measure, unit, c, a, a - c])
        for kind, apart in self.apart.items():
            writer.writerow(["apart", kind, "requests", "", apart.requests, "", ""])
        return out.getvalue()


def _measures(cur: Side, alt: Side) -> list[tuple[str, str, int, int]]:
    out = [("requests", "", cur.requests, alt.requests)]
    for measure, c_map, a_map in (
        ("charge_micro", cur.charge, alt.charge),
        ("cost_micro", cur.cost, alt.cost),
        ("margin_micro", cur.margin, alt.margin),
    ):
        out += [(measure, u, c_map.get(u, 0), a_map.get(u, 0)) for u in sorted(c_map | a_map)]
    out.append(("cost_unknown", "", cur.cost_unknown, alt.cost_unknown))
    out.append(("margin_unknown", "", cur.margin_unknown, alt.margin_unknown))
    return out


def _row(key: str, current: Side, alternative: Side) -> dict[str, Any]:
    return {
        "key": key,
        "current": current.as_json(),
        "alternative": alternative.as_json(),
        "difference": difference(current, alternative),
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def table_lines(report: dict[str, Any]) -> list[str]:
    """A terminal table of the report's JSON: per dimension, charge/cost/margin per unit."""
    lines = [
        (
            f"What-if {report['from']} .. {report['to']}: {report['requests']:,} requests, "
            f"{report['compared']:,} compared, {report['moved']:,} moved"
        ),
    ]
    if report["unreadable_records"]:
        lines.append(f"  {report['unreadable_records']:,} records did not decode and were skipped")
    for kind, apart in report["apart"].items():
        if apart["requests"]:
            why = ", ".join(f"{r} ({n})" for r, n in apart["reasons"].items())
            lines.append(f"  apart: {kind}: {apart['requests']:,} [{why}]")
    head = (
        f"{'key':<28} {'measure':<8} {'unit':<8} {'current':>16} {'alternative':>16} {'diff':>16}"
    )
    for dim, rows in (("total", [report["total"]]), *report["groups"].items()):
        lines += ["", f"by {dim}", head]
        for row in rows:
            lines += _table_row(row)
    return lines


def _table_row(row: dict[str, Any]) -> list[str]:
    out = []
    cur, alt, diff = row["current"], row["alternative"], row["difference"]
    for measure, name in (
        ("charge_micro", "charge"),
        ("cost_micro", "cost"),
        ("margin_micro", "margin"),
    ):
        for unit in sorted(diff[measure]):
            c, a = cur[measure].get(unit, 0), alt[measure].get(unit, 0)
            out.append(
                f"{row['key'][:28]:<28} {name:<8} {unit[:8]:<8} {format_micro(c):>16} "
                f"{format_micro(a):>16} {format_micro(a - c):>16}"
            )
    unknown = f"cost unknown {cur['cost_unknown']} -> {alt['cost_unknown']}"
    out.append(f"{row['key'][:28]:<28} requests {cur['requests']} -> {alt['requests']}; {unknown}")
    return out
