"""How the dashboard presents receipts and ledger entries (pure functions)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from tollway.edge.ui import present


def _attempt(n: int, channel: str, outcome: str, out_tokens: int = 0) -> dict[str, Any]:
    return {
        "attempt": n,
        "channel_id": channel,
        "channel": channel,
        "outcome": outcome,
        "usage": {"input_tokens": 7, "output_tokens": out_tokens},
        "cost_micro": out_tokens,
    }


def test_attempt_chain_names_primary_retry_and_backup_with_its_tier() -> None:
    receipt = {
        "plan": [{"channel": "direct", "tier": 0}, {"channel": "backup", "tier": 1}],
        "attempts": [
            _attempt(1, "direct", "http_error"),
            _attempt(2, "direct", "timeout"),
            _attempt(3, "backup", "ok", 36),
        ],
        "served_by": "backup",
        "upstream_losses": {"2": 5},
    }

    chain = present.attempt_chain(receipt)

    assert [a["role"] for a in chain] == ["primary", "retry", "backup (tier 1)"]
    assert [a["served"] for a in chain] == [False, False, True]
    assert [a["output_tokens"] for a in chain] == [0, 0, 36]
    assert [a["loss_micro"] for a in chain] == [None, 5, None]


def test_a_receipt_without_attempts_has_an_empty_chain() -> None:
    assert present.attempt_chain({"attempts": [], "plan": []}) == []


def test_movements_are_the_tenants_own_accounts_netted_per_entry() -> None:
    payload = {
        "postings": [
            {"account": "acme/credit/held", "unit": "credit", "amount": -618},
            {"account": "system/revenue/openai-direct", "unit": "credit", "amount": 23},
            {"account": "acme/credit", "unit": "credit", "amount": 595},
            {"account": "acme-other/credit", "unit": "credit", "amount": 1},
        ]
    }

    assert present.movements(payload, "acme") == [
        {"account": "credit/held", "unit": "credit", "amount": -618},
        {"account": "credit", "unit": "credit", "amount": 595},
    ]


def test_money_formats_micro_units_exactly() -> None:
    assert present.money(1_234_567, "credit") == "1.234567 credit"
    assert present.money(-23) == "-0.000023"
    assert present.money(None) == "—"


def test_days_end_with_the_given_day() -> None:
    assert present.days(date(2026, 3, 1), 3) == ["2026-02-27", "2026-02-28", "2026-03-01"]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ui/requests?model=x", "/ui/requests?model=x"),
        ("/ui", "/ui"),
        ("/uix/", "/ui/"),
        ("https://evil.example/ui/", "/ui/"),
        ("//evil.example/ui/", "/ui/"),
        ("/ui/\\evil", "/ui/"),
        ("/admin/v1/keys", "/ui/"),
        (None, "/ui/"),
    ],
)
def test_login_only_returns_to_pages_of_the_dashboard(target: str | None, expected: str) -> None:
    assert present.safe_next(target, "/ui/") == expected


def _usage_row(day: str, model: str, unit: str, **values: int) -> dict[str, Any]:
    base = {"requests": 1, "input_tokens": 0, "output_tokens": 0, "charged_micro": 0}
    return {"day": day, "model": model, "unit": unit, **base, **values}


def test_usage_series_keeps_money_apart_per_unit_and_adds_tokens_across_units() -> None:
    labels = ["2026-01-01", "2026-01-02"]
    rows = [
        _usage_row("2026-01-01", "gpt", "credit", charged_micro=5, input_tokens=1, output_tokens=2),
        _usage_row("2026-01-02", "gpt", "CNY", charged_micro=7, input_tokens=10, output_tokens=20),
        _usage_row("2026-01-02", "claude", "credit", charged_micro=3, output_tokens=4),
        _usage_row("2025-12-31", "gpt", "credit", charged_micro=100),  # before the period
    ]

    money = present.usage_series(rows, "model", labels, "charged")
    tokens = present.usage_series(rows, "model", labels, "tokens")
    requests = present.usage_series(rows, "model", labels, "requests")

    assert money == {
        ("charged", "CNY"): {"gpt": [0, 7]},
        ("charged", "credit"): {"gpt": [5, 0], "claude": [0, 3]},
    }
    assert tokens == {("tokens", ""): {"gpt": [3, 30], "claude": [0, 4]}}
    assert requests == {("requests", ""): {"gpt": [1, 1], "claude": [0, 1]}}


def test_each_amount_is_in_its_own_buckets_unit_not_the_served_one() -> None:
    receipt = {
        "bucket": "wallet",
        "unit": "CNY",
        "plan": [{"channel": "d", "bucket": "credit", "tier": 0}, {"channel": "p", "tier": 1}],
        "attempts": [
            {"attempt": 1, "channel_id": "d", "channel": "d", "bucket": "credit", "outcome": "x"},
            {"attempt": 2, "channel_id": "p", "channel": "p", "bucket": "wallet", "outcome": "ok"},
        ],
        "served_by": "p",
    }
    balances = [{"bucket": "credit", "unit": "credit"}, {"bucket": "wallet", "unit": "CNY"}]

    units = present.bucket_units(receipt, balances)
    chain = present.attempt_chain(receipt, units)

    assert [a["unit"] for a in chain] == ["credit", "CNY"]
    assert present.hold_unit(receipt, units) == "credit"
