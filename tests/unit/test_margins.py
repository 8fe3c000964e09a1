"""Margin rows: revenue against upstream cost per group, compared only within one unit (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from tollway.edge import margins_admin
from tollway.edge.ui import present
from tollway.ledger import margins


def _rev(channel: str, unit: str, amount: int, uncosted: int = 0) -> dict[str, Any]:
    return {
        "channel_id": channel,
        "unit": unit,
        "revenue_micro": amount,
        "uncosted_micro": uncosted,
        "charges": 1,
    }


def _cost(channel: str, unit: str, amount: int, failed: int = 0) -> dict[str, Any]:
    return {
        "channel_id": channel,
        "unit": unit,
        "cost_micro": amount,
        "attempts": 2,
        "failed_attempts": 1 if failed else 0,
        "failed_cost_micro": failed,
    }


def test_margin_is_revenue_minus_cost_when_both_are_in_one_unit() -> None:
    rows = margins.combine(("channel",), [_rev("a", "CNY", 1_000)], [_cost("a", "CNY", 700)])

    [row] = rows
    assert (row.comparable, row.unit, row.margin_micro, row.note) == (True, "CNY", 300, None)


def test_a_channel_that_only_failed_has_a_negative_margin_flagged() -> None:
    [row] = margins.combine(("channel",), [], [_cost("f", "CNY", 40, failed=40)])

    view = margins_admin.row_view(row)

    assert (view["margin_micro"], view["negative"], view["comparable"]) == (-40, True, True)
    assert view["failed_cost"] == [{"currency": "CNY", "amount_micro": 40, "amount": "0.000040"}]


def test_revenue_and_cost_in_different_units_are_shown_side_by_side_never_converted() -> None:
    [row] = margins.combine(("channel",), [_rev("d", "credit", 900)], [_cost("d", "USD", 500)])

    view = margins_admin.row_view(row)

    assert view["comparable"] is False
    assert view["margin_micro"] is None
    assert view["negative"] is False
    assert view["revenue"] == [{"unit": "credit", "amount_micro": 900, "amount": "0.000900"}]
    assert view["cost"] == [{"currency": "USD", "amount_micro": 500, "amount": "0.000500"}]
    assert view["note"] == "not comparable: revenue in credit, cost in USD"


@pytest.mark.parametrize(
    ("revenue", "costs", "why"),
    [
        ([_rev("x", "CNY", 900)], [], "no upstream cost booked"),
        ([_rev("x", "CNY", 900, uncosted=100)], [_cost("x", "CNY", 5)], "part of the revenue"),
    ],
)
def test_revenue_without_a_booked_cost_has_no_margin(
    revenue: list[dict[str, Any]], costs: list[dict[str, Any]], why: str
) -> None:
    [row] = margins.combine(("channel",), revenue, costs)

    assert row.margin_micro is None
    assert why in (row.note or "")


def test_groups_are_sorted_and_totals_compare_only_when_the_whole_is_one_unit() -> None:
    rows = margins.combine(
        ("channel",),
        [_rev("b", "CNY", 100), _rev("a", "CNY", 50)],
        [_cost("a", "CNY", 20), _cost("b", "CNY", 30)],
    )

    assert [r.group["channel"] for r in rows] == ["a", "b"]
    assert margins.total(rows).margin_micro == 100
    mixed = [
        *rows,
        *margins.combine(("channel",), [_rev("d", "credit", 1)], [_cost("d", "USD", 1)]),
    ]
    assert margins.total(mixed).margin_micro is None


def test_unknown_or_repeated_groups_are_refused() -> None:
    assert margins.group_columns(("channel", "day")) == "channel_id, day"
    for bad in [("nope",), ("day", "day"), ()]:
        with pytest.raises(margins.UnknownGroupError):
            margins.group_columns(bad)


def test_the_csv_has_one_line_per_group_and_unit_with_the_margin_only_when_comparable() -> None:
    rows = margins.combine(
        ("channel",),
        [_rev("a", "CNY", 1_000), _rev("d", "credit", 900)],
        [_cost("a", "CNY", 700), _cost("d", "USD", 500)],
    )

    lines = margins_admin.as_csv(("channel",), rows).splitlines()

    assert lines[0].startswith("channel,unit,revenue_micro,cost_micro,margin_micro,comparable")
    assert lines[1].startswith("a,CNY,1000,700,300,true,false,")
    assert lines[2].startswith('d,USD,0,500,,false,false,"not comparable')
    assert lines[3].startswith('d,credit,900,0,,false,false,"not comparable')


def test_a_receipt_shows_each_attempts_cost_and_margin() -> None:
    receipt = {
        "request_id": "r1",
        "unit": "CNY",
        "charged_micro": 1_000,
        "attempts": [
            {"attempt": 1, "channel_id": "f", "outcome": "http_error"},
            {"attempt": 2, "channel_id": "s", "outcome": "ok"},
        ],
    }
    costs = [
        {"attempt": 1, "channel_id": "f", "served": False, "currency": "CNY", "cost_micro": 10},
        {"attempt": 2, "channel_id": "s", "served": True, "currency": "CNY", "cost_micro": 600},
    ]

    shown = margins_admin.costed_receipt(receipt, costs)

    failed, served = shown["attempts"]
    assert (failed["upstream_cost"]["margin_micro"], failed["upstream_cost"]["negative"]) == (
        -10,
        True,
    )
    assert served["upstream_cost"]["margin_micro"] == 400
    assert shown["economics"]["margin_micro"] == 390


def test_a_re_rated_and_refunded_receipt_earns_what_it_costs_the_tenant_now() -> None:
    receipt = {
        "request_id": "r2",
        "unit": "CNY",
        "charged_micro": 1_000,
        "rerated_charge_micro": 1_200,
        "refunded_micro": 100,
        "attempts": [{"attempt": 1, "channel_id": "s", "outcome": "ok"}],
    }
    costs = [
        {"attempt": 1, "channel_id": "s", "served": True, "currency": "CNY", "cost_micro": 600}
    ]

    shown = margins_admin.costed_receipt(receipt, costs)

    assert shown["attempts"][0]["upstream_cost"]["margin_micro"] == 1_200 - 100 - 600
    assert shown["economics"]["margin_micro"] == 500


def test_the_chart_draws_comparable_groups_only_with_negative_bars_marked() -> None:
    rows = margins.combine(
        ("channel",),
        [_rev("a", "CNY", 1_000), _rev("d", "credit", 900)],
        [_cost("a", "CNY", 700), _cost("d", "USD", 500), _cost("f", "CNY", 40)],
    )

    [(title, svg)] = present.margin_charts(("channel",), [margins_admin.row_view(r) for r in rows])

    assert title == "Margin per channel (CNY)"
    assert 'data-value="300"' in svg
    assert 'class="neg"' in svg
    assert 'data-value="-40"' in svg
    assert "d:" not in svg
