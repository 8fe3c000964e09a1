"""``tollway whatif``: price a period's logged requests under another route policy.

Reads the log of the running stack (``KAFKA_BOOTSTRAP_SERVERS`` or ``--bootstrap``) and nothing
else; writes nothing anywhere but to its output. A policy it cannot apply, or a period that is
not one, exits with status 2 and says why. Heavy modules load only once the command runs.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tollway.events.cli_env import from_env, required

if TYPE_CHECKING:
    import argparse

FORMATS = ("table", "json", "csv")
# A rate measured over less than this says nothing.
MIN_RATE_SECONDS = 0.5


def register(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("--from", dest="start", required=True, help="ISO 8601 instant (UTC)")
    parser.add_argument("--to", dest="end", required=True, help="ISO 8601 instant, exclusive")
    parser.add_argument(
        "--policy", required=True, help="the policy file: JSON, or TOML when named *.toml"
    )
    parser.add_argument(
        "--bootstrap",
        default=from_env("KAFKA_BOOTSTRAP_SERVERS"),
        help="the log's brokers (default: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("--out", help="write the report here instead of standard output")
    parser.set_defaults(run=run)


class Progress:
    """``read [####....] 12,345/100,000 records  45,678/s`` on stderr, with the true rate."""

    def __init__(self, out: TextIO) -> None:
        """Start the clock."""
        self._out, self._tty = out, out.isatty()
        self._phase, self._last = "", float("-inf")
        self._started = self._seen = time.perf_counter()

    def __call__(self, phase: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` in ``phase``."""
        now = time.perf_counter()
        if phase != self._phase:
            # A phase began when the previous one last reported, not at its own first report.
            self._phase, self._started = phase, self._seen
        self._seen = now
        final = done >= total
        if not final and now - self._last < (0.2 if self._tty else 2.0):
            return
        self._last = now
        elapsed = now - self._started
        rate = (
            f"{done / elapsed:>10,.0f}/s"
            if elapsed >= MIN_RATE_SECONDS or (final and elapsed > 0)
            else ""
        )
        filled = 30 if not total else min(30, 30 * done // total)
        line = f"  {phase:<5} [{'#' * filled}{'.' * (30 - filled)}] {done:>10,}/{total:,} {rate}"
        self._out.write(
            ("\r" if self._tty else "") + line + ("\n" if final or not self._tty else "")
        )
        self._out.flush()


def parse_instant(value: str, name: str) -> datetime:
    """An ISO 8601 instant; naive ones are UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"--{name} must be an ISO 8601 instant, like 2026-01-31T00:00:00Z"
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if not 1970 <= moment.year < 9000:
        raise ValueError(f"--{name} must be between 1970 and 9000")
    return moment


def parse_period(start: str, end: str) -> tuple[datetime, datetime]:
    """``--from`` and ``--to``, the second after the first."""
    began, ended = parse_instant(start, "from"), parse_instant(end, "to")
    if ended <= began:
        raise ValueError("--to must be after --from")
    return began, ended


def run(args: argparse.Namespace) -> int:
    """Read, price, print; 2 on a policy or period it cannot use."""
    import asyncio  # noqa: PLC0415 - loaded only when the command runs
    import json  # noqa: PLC0415

    from tollway.whatif.policy import PolicyError, load_policy  # noqa: PLC0415
    from tollway.whatif.report import table_lines  # noqa: PLC0415
    from tollway.whatif.source import whatif  # noqa: PLC0415

    bootstrap = required(args.bootstrap, "KAFKA_BOOTSTRAP_SERVERS", "--bootstrap")
    try:
        start, end = parse_period(args.start, args.end)
        path = Path(args.policy)
        policy = load_policy(path.read_text(encoding="utf-8"), path.name)
    except (ValueError, OSError) as exc:
        kind = "policy " if isinstance(exc, PolicyError) else ""
        sys.stderr.write(f"tollway whatif: {kind}{exc}\n")
        return 2
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    began = time.perf_counter()
    try:
        report = asyncio.run(whatif(bootstrap, start, end, policy, Progress(sys.stderr)))
    except KafkaError as exc:
        sys.stderr.write(f"tollway whatif: cannot read the log at {bootstrap}: {exc}\n")
        return 1
    seconds = time.perf_counter() - began
    if args.format == "csv":
        text = report.as_csv()
    elif args.format == "json":
        text = json.dumps(report.as_json(), indent=2) + "\n"
    else:
        text = "\n".join(table_lines(report.as_json())) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    rate = report.requests / seconds if seconds > 0 else 0.0
    sys.stderr.write(f"  {report.requests:,} requests in {seconds:.2f} s ({rate:,.0f}/s)\n")
    return 0
