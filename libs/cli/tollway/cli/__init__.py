"""The ``tollway`` command: one entry point, a sub-command per service.

Each service contributes a module with ``register(parser)``: it adds its own sub-commands and
sets ``run`` (``args -> exit code``) as the parser default. Modules load lazily, so a service
that is not installed simply has no sub-command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

COMMANDS = {
    "ledger": "tollway.ledger.cli",
    "alerts": "tollway.limits.cli",
    "research": "tollway.researcher.cli",
    "budgets": "tollway.edge.cli",
    "secrets": "tollway.router.cli",
}


class CommandModule(Protocol):
    """What a service's CLI module provides."""

    def register(self, parser: argparse.ArgumentParser) -> None:
        """Add sub-commands to ``parser`` and set ``run`` as its default."""


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every installed service's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="tollway", description="Tollway: operate the gateway and its ledger."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module: CommandModule = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        doc = (module.__doc__ or name).strip().splitlines()[0]
        module.register(sub.add_parser(name, help=doc, description=doc))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command; its return value is the exit code."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
