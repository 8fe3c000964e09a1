"""Ledger finance: replay the log, verify the invariants, statements and past balances.

Every command needs ``DATABASE_URL`` (``--database-url``); replay and verify also read the log
(``KAFKA_BOOTSTRAP_SERVERS``, ``--bootstrap``). Neither has a default: ``make dev`` writes both
to ``.tollway/dev.env``.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime

from tollway.events.cli_env import from_env, required


def _when(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``replay``, ``verify``, ``statement`` and ``balance``."""
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
    rep.add_argument("--batch", type=int, default=1000, help="input events per transaction")
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
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check the connection settings, then load and run the command."""
    os.environ["DATABASE_URL"] = required(args.database_url, "DATABASE_URL", "--database-url")
    if args.ledger_command in {"replay", "verify"}:
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = required(
            args.bootstrap, "KAFKA_BOOTSTRAP_SERVERS", "--bootstrap"
        )
    from tollway.ledger import cli_commands  # noqa: PLC0415 - heavy: not on --help

    return cli_commands.run(args)
