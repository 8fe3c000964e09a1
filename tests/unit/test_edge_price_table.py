"""Which route tree changes the edge reports to the ledger's journal as price changes."""

from __future__ import annotations

from typing import Any

from tollway.edge.price_table import price_change
from tollway.events.pricing import CostPrice, Price


def _view(input_: str, output: str, cached: str | None = None) -> dict[str, Any]:
    return {
        "id": "c1",
        "bucket": "wallet",
        "prices_per_1m": {"input": input_, "output": output, "cached_input": cached},
    }


def test_creating_a_channel_reports_its_prices_with_no_previous() -> None:
    command = price_change("ops", "channel.create", 5, None, _view("0.150000", "0.600000"))

    assert command is not None
    assert (command.channel_id, command.bucket, command.previous) == ("c1", "wallet", None)
    assert command.prices == Price(input=150_000, output=600_000)
    assert (command.actor, command.action, command.audit_id) == ("ops", "channel.create", 5)


def test_a_price_change_reports_the_previous_and_new_prices_in_micro_units() -> None:
    before = _view("0.150000", "0.600000")
    after = _view("0.150000", "0.600000", "0.075000")

    command = price_change("ops", "channel.update", 6, before, after)

    assert command is not None
    assert command.previous == Price(input=150_000, output=600_000)
    assert command.prices == Price(input=150_000, output=600_000, cached_input=75_000)


def test_a_change_that_leaves_prices_alone_reports_nothing() -> None:
    before = _view("1.000000", "2.000000")
    after = {**_view("1.000000", "2.000000"), "bucket": "credit", "timeout_ms": 100}

    assert price_change("ops", "channel.update", 7, before, after) is None


def test_changes_to_anything_but_a_channel_report_nothing() -> None:
    view = _view("1.000000", "2.000000")

    assert price_change("ops", "model.update", 8, None, view) is None
    assert price_change("ops", "routes.set", 9, None, view) is None


def test_setting_or_changing_a_cost_price_reports_both_versions_of_it() -> None:
    cost = {
        "currency": "USD",
        "input": "0.120000",
        "output": "0.480000",
        "per_request": "0.002000",
    }
    before = _view("1.000000", "2.000000")
    after = {**_view("1.000000", "2.000000"), "cost_per_1m": cost}

    command = price_change("ops", "channel.update", 10, before, after)

    assert command is not None
    assert command.previous_cost is None
    assert command.cost == CostPrice(
        currency="USD", input=120_000, output=480_000, per_request=2_000
    )
    assert price_change("ops", "channel.update", 11, after, dict(after)) is None
