"""What ``tollway ledger`` runs (imported only when a ledger command runs, never for --help)."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from tollway.events.pricing import format_micro
from tollway.ledger import replay, statements, verify
from tollway.ledger.progress import Progress
from tollway.ledger.settings import LedgerSettings

if TYPE_CHECKING:
    import argparse


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen sub-command; the exit code says whether it held."""
    commands = {
        "replay": _replay,
        "verify": _verify,
        "statement": _statement,
        "balance": _balance,
    }
    try:
        return asyncio.run(commands[args.ledger_command](args))
    except (OSError, asyncpg.PostgresError) as exc:
        sys.stderr.write(
            f"error: {type(exc).__name__}: {exc}\n"
            "Check DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS point at the running stack.\n"
        )
        return 2


async def _replay(args: argparse.Namespace) -> int:
    settings = LedgerSettings()
    result = await replay.replay(
        settings.database_url,
        settings.kafka_bootstrap_servers,
        args.database,
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


async def _verify(args: argparse.Namespace) -> int:
    settings = LedgerSettings()
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


async def _statement(args: argparse.Namespace) -> int:
    conn = await asyncpg.connect(args.database_url)
    try:
        found = await statements.statement(conn, args.account, args.start, args.end)
    finally:
        await conn.close()
    if args.csv:
        sys.stdout.write(found.as_csv())
    else:
        _print(found.as_json())
    return 0


async def _balance(args: argparse.Namespace) -> int:
    at = args.at or datetime.now(UTC)
    conn = await asyncpg.connect(args.database_url)
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
