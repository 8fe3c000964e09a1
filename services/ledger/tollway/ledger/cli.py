"""Ledger finance: replay the log, verify the invariants, statements, past balances, re-rating.

Every command but ``rerate`` needs ``DATABASE_URL`` (``--database-url``); replay and verify also
read the log (``KAFKA_BOOTSTRAP_SERVERS``, ``--bootstrap``). ``rerate`` goes through the edge's
admin API like any operator change (``TOLLWAY_BASE_URL``, ``TOLLWAY_ADMIN_TOKEN``), so it is
audited. None has a default: ``make dev`` writes them all to ``.tollway/dev.env``.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime

from tollway.events.cli_env import from_env, required

# Token classes a price is given for (``--cached-input`` ...); input and output are required.
PRICE_CLASSES = ("input", "output", "cached_input", "cache_write", "cache_write_1h", "reasoning")


def _when(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``replay``, ``verify``, ``statement``, ``balance`` and ``rerate``."""
    sub = parser.add_subparsers(dest="ledger_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        default=from_env("DATABASE_URL"),
        help="the stack's Postgres (default: $DATABASE_URL)",
    )
    common.add_argument(
        "--bootstrap",
        default=from_env("KAFKA_BOOTSTRAP_SERVERS"),
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    rep = sub.add_parser(
        "replay", parents=[common], help="rebuild every ledger projection from the topics"
    )
    rep.add_argument("--database", default="tollway_ledger_replay", help="fresh database to fill")
    # A replay folds the whole log in memory and writes it once: --batch is accepted, unused.
    rep.add_argument("--batch", type=int, default=1000, help=argparse.SUPPRESS)
    ver = sub.add_parser(
        "verify", parents=[common], help="check the invariants and live state = a replay"
    )
    ver.add_argument("--database", default="tollway_ledger_verify", help="scratch database")
    ver.add_argument("--grace-seconds", type=float, default=None, help="hold expiry grace")
    st = sub.add_parser(
        "statement", parents=[common], help="an account's postings between two instants"
    )
    st.add_argument("--account", required=True, help="tenant account id")
    st.add_argument("--from", dest="start", type=_when, required=True, help="ISO 8601 instant")
    st.add_argument("--to", dest="end", type=_when, required=True, help="ISO 8601 instant")
    st.add_argument("--csv", action="store_true", help="CSV instead of JSON")
    bal = sub.add_parser("balance", parents=[common], help="an account's balances as of an instant")
    bal.add_argument("--account", required=True, help="tenant account id")
    bal.add_argument("--at", type=_when, default=None, help="ISO 8601 instant (default: now)")
    _register_rerate(sub)
    parser.set_defaults(run=run)


def _register_rerate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rr = sub.add_parser(
        "rerate",
        help="re-rate a channel's past charges (or, --side cost, its upstream costs) at corrected"
        " prices (dry run or apply)",
        description="Re-rate the charges of a channel in a bucket settled in [from, to) at"
        " corrected prices per 1M tokens. --dry-run shows per account the requests, charged,"
        " re-rated and difference and flags balances it would take below zero; --apply books"
        " it once per correction id and waits for the ledger's outcome of each account."
        " --side cost re-rates the channel's booked upstream costs of attempts in [from, to) at"
        " a corrected cost price (--currency, the per-class prices, --per-request; no --bucket):"
        " per account the attempts, booked, re-rated and difference; no tenant account moves.",
    )
    rr.add_argument("--base-url", default=from_env("TOLLWAY_BASE_URL"), help="$TOLLWAY_BASE_URL")
    rr.add_argument(
        "--admin-token", default=from_env("TOLLWAY_ADMIN_TOKEN"), help="$TOLLWAY_ADMIN_TOKEN"
    )
    mode = rr.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="show what it would book")
    mode.add_argument("--apply", action="store_true", help="book it (idempotent per id)")
    rr.add_argument("--correction-id", required=True, help="the correction's idempotency key")
    rr.add_argument("--channel", required=True, help="the channel id whose charges are re-rated")
    rr.add_argument("--bucket", help="the bucket charged (credit, wallet, ...); sell side only")
    rr.add_argument(
        "--from", dest="start", required=True, help="ISO 8601 instant (settlement; cost: attempt)"
    )
    rr.add_argument("--to", dest="end", required=True, help="ISO 8601 instant, exclusive")
    rr.add_argument(
        "--side", choices=("sell", "cost"), default="sell", help="cost: the upstream cost price"
    )
    rr.add_argument("--currency", help="the cost price's currency (cost side; as booked)")
    rr.add_argument("--per-request", help="cost per upstream call (cost side; default 0)")
    for name in PRICE_CLASSES:
        flag = "--" + name.replace("_", "-")
        required_price = name in {"input", "output"}
        rr.add_argument(flag, required=required_price, help=f"{name} price per 1M tokens")
    rr.add_argument("--reason", required=True, help="why (kept on every entry)")
    rr.add_argument(
        "--allow-negative",
        nargs="*",
        metavar="ACCOUNT",
        help="book it even below zero: for these accounts, or all when none is named",
    )
    rr.add_argument("--account", action="append", help="only this account (repeatable)")
    rr.add_argument("--wait", type=float, default=30, help="seconds to wait for the outcome")


def run(args: argparse.Namespace) -> int:
    """Check the connection settings, then load and run the command."""
    if args.ledger_command == "rerate":
        from tollway.ledger import rerate_cli  # noqa: PLC0415 - not on --help

        return rerate_cli.run(args)
    os.environ["DATABASE_URL"] = required(args.database_url, "DATABASE_URL", "--database-url")
    if args.ledger_command in {"replay", "verify"}:
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = required(
            args.bootstrap, "KAFKA_BOOTSTRAP_SERVERS", "--bootstrap"
        )
    from tollway.ledger import cli_commands  # noqa: PLC0415 - heavy: not on --help

    return cli_commands.run(args)
