"""Research runs: start one with a live progress bar, list, show, cancel, fetch receipts.

``tollway research run --mode quick --topic "Is ACME a buy?"`` calls the research API at the
gateway's base URL with your own gateway key (``TOLLWAY_BASE_URL`` and ``TOLLWAY_API_KEY``, as
``make dev`` writes them to ``.tollway/dev.env``), follows the run's progress stream, and saves
the report.
Ctrl-C cancels the run (its task envelope is closed and its holds released).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollway.events.cli_env import from_env

if TYPE_CHECKING:
    import argparse


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``run``, ``estimate``, ``list``, ``show``, ``cancel`` and ``receipt``."""
    parser.add_argument(
        "--base-url",
        default=from_env("TOLLWAY_BASE_URL"),
        help="the gateway's base URL, http://host:port/v1 (default: $TOLLWAY_BASE_URL)",
    )
    parser.add_argument(
        "--api-key",
        default=from_env("TOLLWAY_API_KEY"),
        help="your gateway key (default: $TOLLWAY_API_KEY)",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    start = sub.add_parser("run", help="estimate, confirm, start and follow a research run")
    estimate = sub.add_parser("estimate", help="what a run would cost and take; starts nothing")
    for each in (start, estimate):
        _run_arguments(each)
    start.add_argument("--yes", action="store_true", help="start without asking to confirm")
    start.add_argument("--out", default="research", help="file name stem of the saved report")
    sub.add_parser("list", help="your research history")
    for name, text in (("show", "one run"), ("cancel", "cancel a run"), ("receipt", "a receipt")):
        sub.add_parser(name, help=text).add_argument("run_id")
    parser.set_defaults(run=run)


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", required=True, help="a question, or a ticker")
    parser.add_argument("--ticker", help="the ticker to research (else named in the topic)")
    parser.add_argument("--mode", choices=("quick", "standard", "deep"), default="quick")
    parser.add_argument("--fast-model", help="model of the fast tier")
    parser.add_argument("--strong-model", help="model of the strong tier")
    parser.add_argument(
        "--cap",
        action="append",
        default=[],
        metavar="BUCKET=AMOUNT",
        help="spend at most AMOUNT from BUCKET (the run stops there); repeatable",
    )


def run(args: argparse.Namespace) -> int:
    """Load the commands (HTTP client and all) only now, not for ``--help``."""
    from tollway.researcher import cli_commands  # noqa: PLC0415 - heavy: not on --help

    return cli_commands.run(args)
