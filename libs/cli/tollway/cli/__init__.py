"""The ``tollway`` command: one entry point, a sub-command per service.

Each service contributes a module with ``register(parser)``: it adds its own sub-commands and
sets ``run`` (``args -> exit code``) as the parser default. Only the chosen sub-command's module
is imported, and it imports its service's heavy modules (database and Kafka clients, the
service's own code) inside ``run``: ``tollway --help`` and every ``--help`` start at once. A
service that is not installed simply has no sub-command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING, Protocol

from tollway.events.cli_env import MissingSettingError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

# name -> (module, one-line help); the help is here so that listing commands imports none.
COMMANDS = {
    "ledger": ("tollway.ledger.cli", "Ledger: replay, verify, statements, balances, re-rating."),
    "alerts": ("tollway.limits.cli", "Alerts raised by the limits service (tail, follow)."),
    "research": ("tollway.researcher.cli", "Research runs: estimate, run, list, show, cancel."),
    "budgets": ("tollway.edge.cli", "Budgets: define, list and delete spend limits."),
    "recon": (
        "tollway.edge.recon_cli",
        "Reconciliation: import upstream invoices, drift of booked against reported cost.",
    ),
    "secrets": ("tollway.router.cli", "Channel secrets: re-seal every stored secret (rotate)."),
}


class CommandModule(Protocol):
    """What a service's CLI module provides."""

    def register(self, parser: argparse.ArgumentParser) -> None:
        """Add sub-commands to ``parser`` and set ``run`` as its default."""


def _chosen(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the top level has no option taking a value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; only the sub-command chosen in ``argv`` has its module loaded."""
    parser = argparse.ArgumentParser(
        prog="tollway", description="Tollway: operate the gateway and its ledger."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = _chosen(argv)
    for name, (module_name, doc) in COMMANDS.items():
        if name != chosen:
            sub.add_parser(name, help=doc, description=doc)
            continue
        try:
            module: CommandModule = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        module.register(sub.add_parser(name, help=doc, description=doc))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command; its return value is the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        sys.stderr.write(f"tollway {args.command}: its service is not installed here\n")
        return 2
    try:
        return run(args)
    except MissingSettingError as exc:
        sys.stderr.write(f"tollway {args.command}: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
