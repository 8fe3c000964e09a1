"""``tollway ledger rerate``: the flags become the admin API's request, the operator's decision
about negative balances included.
"""

from __future__ import annotations

import argparse

import pytest

from tollway.ledger import cli, rerate_cli

COMMON = [
    "rerate", "--correction-id", "fix-1", "--channel", "openai-direct", "--bucket", "credit",
    "--from", "2026-11-02T00:00Z", "--to", "2026-11-03T00:00Z", "--input", "0.12",
    "--output", "0.48", "--reason", "price typo",
]  # fmt: skip


def _args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser)
    return parser.parse_args([*COMMON, *extra])


def test_a_dry_run_sends_the_prices_given_and_allows_no_negative_balance() -> None:
    body = rerate_cli.body(_args("--dry-run", "--cached-input", "0.06"))

    assert body["dry_run"] is True
    assert body["prices"] == {"input": "0.12", "output": "0.48", "cached_input": "0.06"}
    assert body["allow_negative"] is False
    assert (body["from"], body["to"]) == ("2026-11-02T00:00Z", "2026-11-03T00:00Z")
    assert "accounts" not in body


@pytest.mark.parametrize(
    ("flags", "allowed"),
    [
        (("--allow-negative",), True),
        (("--allow-negative", "t-1", "t-2"), ["t-1", "t-2"]),
    ],
)
def test_allow_negative_is_for_all_accounts_or_the_named_ones(
    flags: tuple[str, ...], allowed: object
) -> None:
    body = rerate_cli.body(_args("--apply", *flags, "--account", "t-1"))

    assert body["dry_run"] is False
    assert body["allow_negative"] == allowed
    assert body["accounts"] == ["t-1"]


def test_dry_run_and_apply_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        _args("--dry-run", "--apply")


def test_the_cost_side_sends_a_cost_price_and_no_bucket() -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser)
    args = parser.parse_args(
        [
            "rerate", "--side", "cost", "--correction-id", "cost-1", "--channel", "openai-pool",
            "--from", "2026-11-02T00:00Z", "--to", "2026-11-03T00:00Z", "--currency", "CNY",
            "--input", "0.7", "--output", "2.8", "--per-request", "0.00001",
            "--reason", "the upstream's new price list", "--dry-run",
        ]
    )  # fmt: skip

    body = rerate_cli.body(args)

    assert body["side"] == "cost"
    assert body["cost"] == {
        "currency": "CNY",
        "input": "0.7",
        "output": "2.8",
        "per_request": "0.00001",
    }
    assert "bucket" not in body
    assert "prices" not in body
    assert "allow_negative" not in body
