"""Channel secrets at rest: new keys, rotation and a check that every stored secret opens."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import asyncpg

from tollway.router.secrets import SecretsNotConfiguredError, check_readable, reseal
from tollway.router.settings import RouterSettings
from tollway.runtime.sealing import ENV, KeyRing, SecretKeyError, new_key_entry

if TYPE_CHECKING:
    import argparse


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``new-key``, ``rotate`` and ``check``."""
    sub = parser.add_subparsers(dest="secrets_command", required=True)
    new = sub.add_parser("new-key", help=f"print a fresh key_id:base64 entry for {ENV}")
    new.add_argument("--id", required=True, help="the new key's id (letters, digits, . _ -)")
    sub.add_parser("rotate", help=f"re-seal every channel secret under the first key of {ENV}")
    sub.add_parser("check", help=f"every stored channel secret opens with {ENV}")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch; a missing or wrong key is a message and exit code 1, never a traceback."""
    if args.secrets_command == "new-key":
        print(new_key_entry(args.id))  # noqa: T201 - the command's output
        return 0
    settings = RouterSettings()
    try:
        ring = KeyRing.optional(settings.secret_keys.get_secret_value())
        return asyncio.run(_with_db(settings.database_url, ring, args.secrets_command))
    except (SecretKeyError, SecretsNotConfiguredError) as exc:
        print(f"tollway secrets: {exc}", file=sys.stderr)  # noqa: T201
        return 1


async def _with_db(dsn: str, ring: KeyRing | None, command: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        await check_readable(conn, ring)
        if command == "check" or ring is None:
            print("every channel secret opens")  # noqa: T201
            return 0
        count = await reseal(conn, ring)
        print(f"re-sealed {count} channel secret(s) under key {ring.current_id}")  # noqa: T201
        return 0
    finally:
        await conn.close()
