"""Ledger finance: replay the log, verify the invariants, statements and past balances."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from tollway.events.pricing import format_micro
from tollway.ledger import replay, statements, verify
from tollway.ledger.settings import LedgerSettings

if TYPE_CHECKING:
    import argparse


class Progress:
    """A one-line progress bar on stderr with the rate; plain lines when not on a terminal."""

    def __init__(self) -> None:
        """Start the clock."""
        self._started = time.perf_counter()
        self._phase = ""
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def __call__(self, phase: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` in ``phase``."""
        now = time.perf_counter()
        if phase != self._phase:
            self._phase, self._started = phase, now
        final = total > 0 and done >= total
        if not final and now - self._last < (0.1 if self._tty else 2.0):
            return
        self._last = now
        rate = done / max(now - self._started, 1e-9)
        filled = int(30 * done / total) if total else 0
        bar = "#" * filled + "." * (30 - filled) if total else "?" * 30
        of = f"/{total:,}" if total else ""
        line = f"  {phase:<6} [{bar}] {done:>10,}{of} events  {rate:>10,.0f} ev/s"
        end = "\n" if final or not self._tty else ""
        sys.stderr.write(("\r" if self._tty else "") + line + end)
        sys.stderr.flush()


def _when(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``replay``, ``verify``, ``statement`` and ``balance``."""
    sub = parser.add_subparsers(dest="ledger_command", required=True)
    rep = sub.add_parser("replay", help="rebuild every ledger projection from the topics")
    rep.add_argument("--database", default="tollway_ledger_replay", help="fresh database to fill")
    rep.add_argument("--batch", type=int, default=1000, help="input events per transaction")
    ver = sub.add_parser("verify", help="check the invariants and live state = a replay")
    ver.add_argument("--database", default="tollway_ledger_verify", help="scratch database")
    ver.add_argument("--grace-seconds", type=float, default=None, help="hold expiry grace")
    st = sub.add_parser("statement", help="an account's postings between two instants")
    st.add_argument("--account", required=True, help="tenant account id")
    st.add_argument("--from", dest="start", type=_when, required=True, help="ISO 8601 instant")
    st.add_argument("--to", dest="end", type=_when, required=True, help="ISO 8601 instant")
    st.add_argument("--csv", action="store_true", help="CSV instead of JSON")
    bal = sub.add_parser("balance", help="an account's balances as of an instant")
    bal.add_argument("--account", required=True, help="tenant account id")
    bal.add_argument("--at", type=_when, default=None, help="ISO 8601 instant (default: now)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen sub-command; the exit code says whether it held."""
    settings = LedgerSettings()
    commands = {
        "replay": _replay,
        "verify": _verify,
        "statement": _statement,
        "balance": _balance,
    }
    try:
        return asyncio.run(commands[args.ledger_command](settings, args))
    except (OSError, asyncpg.PostgresError) as exc:
        sys.stderr.write(
            f"error: {type(exc).__name__}: {exc}\n"
            "Check DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS point at the running stack.\n"
        )
        return 2


async def _replay(settings: LedgerSettings, args: argparse.Namespace) -> int:
    result = await replay.replay(
        settings.database_url,
        settings.kafka_bootstrap_servers,
        args.database,
        batch=args.batch,
        progress=Progress(),
    )
    _print(
        {
            "database": result.database,
            "events": result.events,
            "seconds": round(result.seconds, 3),
            "events_per_second": round(result.events_per_second),
            "diverged": result.diverged,
            "poison": result.poison,
            "digest": result.digest,
            "tables": {k: {"rows": n, "sha256": d} for k, (n, d) in result.tables.items()},
        }
    )
    return 0


async def _verify(settings: LedgerSettings, args: argparse.Namespace) -> int:
    grace = args.grace_seconds if args.grace_seconds is not None else settings.hold_grace_seconds
    result = await verify.verify(
        settings.database_url,
        settings.kafka_bootstrap_servers,
        database=args.database,
        group=settings.group_id,
        grace=timedelta(seconds=grace),
        progress=Progress(),
    )
    for check in result.checks:
        mark = "ok  " if check.ok else "FAIL"
        sys.stdout.write(f"{mark} {check.name}: {check.detail}\n")
    replayed = result.replay_result
    sys.stdout.write(f"live digest   {result.live_digest}\n")
    sys.stdout.write(f"replay digest {replayed.digest if replayed else '-'}\n")
    if not result.ok:
        sys.stdout.write("Verification failed: see the FAIL lines above for what to inspect.\n")
    return 0 if result.ok else 1


async def _statement(settings: LedgerSettings, args: argparse.Namespace) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        found = await statements.statement(conn, args.account, args.start, args.end)
    finally:
        await conn.close()
    if args.csv:
        sys.stdout.write(found.as_csv())
    else:
        _print(found.as_json())
    return 0


async def _balance(settings: LedgerSettings, args: argparse.Namespace) -> int:
    at = args.at or datetime.now(UTC)
    conn = await asyncpg.connect(settings.database_url)
    try:
        balances = await statements.balance_at(conn, args.account, at)
    finally:
        await conn.close()
    rows = [
        {"account": a, "unit": u, "amount_micro": v, "amount": format_micro(v)}
        for (a, u), v in sorted(balances.items())
    ]
    _print({"account_id": args.account, "at": at.isoformat(), "balances": rows})
    return 0


def _print(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
