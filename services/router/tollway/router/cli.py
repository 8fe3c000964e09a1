"""Channel secrets at rest: new keys, rotation and a check that every stored secret opens."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from tollway.events.cli_env import MissingSettingError, from_env, required

if TYPE_CHECKING:
    from tollway.runtime.sealing import KeyRing

# tollway.runtime.sealing.ENV, spelled here so that --help loads no cryptography.
ENV = "TOLLWAY_SECRET_KEYS"


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``new-key``, ``rotate`` and ``check``."""
    sub = parser.add_subparsers(dest="secrets_command", required=True)
    new = sub.add_parser("new-key", help=f"print a fresh key_id:base64 entry for {ENV}")
    new.add_argument("--id", required=True, help="the new key's id (letters, digits, . _ -)")
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--database-url", default=from_env("DATABASE_URL"), help="default: $DATABASE_URL"
    )
    sub.add_parser(
        "rotate", parents=[db], help=f"re-seal every channel secret under the first key of {ENV}"
    )
    sub.add_parser("check", parents=[db], help=f"every stored channel secret opens with {ENV}")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch; a missing or wrong key is a message and exit code 1, never a traceback."""
    # Loaded when the command runs, not for --help (the CLI starts at once).
    import asyncio  # noqa: PLC0415

    from tollway.router.secrets import SecretsNotConfiguredError  # noqa: PLC0415
    from tollway.runtime.sealing import KeyRing, SecretKeyError, new_key_entry  # noqa: PLC0415

    if args.secrets_command == "new-key":
        print(new_key_entry(args.id))  # noqa: T201 - the command's output
        return 0
    # Only the database and the keys: this command needs no broker.
    try:
        dsn = required(args.database_url, "DATABASE_URL", "--database-url")
        ring = KeyRing.optional(from_env(ENV) or "")
        return asyncio.run(_with_db(dsn, ring, args.secrets_command))
    except (SecretKeyError, SecretsNotConfiguredError, MissingSettingError) as exc:
        print(f"tollway secrets: {exc}", file=sys.stderr)  # noqa: T201
        return 1


async def _with_db(dsn: str, ring: KeyRing | None, command: str) -> int:
    import asyncpg  # noqa: PLC0415 - heavy: not on --help

    from tollway.router.secrets import check_readable, reseal  # noqa: PLC0415

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
