"""Reconciliation: import an upstream's invoice and read the drift, through the admin API.

``tollway recon import --channel C FILE`` posts the CSV to ``/admin/v1/recon/imports`` and
``tollway recon drift --channel C --from DAY [--to DAY] [--csv]`` reads
``/admin/v1/recon/drift``, with the admin token (``TOLLWAY_BASE_URL`` and
``TOLLWAY_ADMIN_TOKEN``, as ``make dev`` writes them to ``.tollway/dev.env``), so an import here
takes the same checks and the same path as one over HTTP.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tollway.events.cli_env import edge_origin, error_message, from_env, required

if TYPE_CHECKING:
    import argparse

    import httpx


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``import`` and ``drift``."""
    parser.add_argument(
        "--base-url",
        default=from_env("TOLLWAY_BASE_URL"),
        help="the gateway's base URL, http://host:port/v1 (default: $TOLLWAY_BASE_URL)",
    )
    parser.add_argument(
        "--admin-token",
        default=from_env("TOLLWAY_ADMIN_TOKEN"),
        help="the operators' token (default: $TOLLWAY_ADMIN_TOKEN)",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    imp = sub.add_parser("import", help="import a channel's invoice CSV (all lines or none)")
    imp.add_argument("--channel", required=True, help="the channel the invoice is for")
    imp.add_argument("file", type=Path, help="the CSV file (see README, Reconciliation)")
    drift = sub.add_parser("drift", help="booked against reported, per channel and UTC day")
    drift.add_argument("--channel", help="one channel (default: every channel)")
    drift.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD")
    drift.add_argument("--to", dest="end", help="last day, YYYY-MM-DD (default: --from)")
    drift.add_argument("--csv", action="store_true", help="CSV instead of JSON")
    parser.set_defaults(run=run)


def _call(client: httpx.Client, args: argparse.Namespace) -> httpx.Response:
    if args.action == "import":
        return client.post(
            "/admin/v1/recon/imports",
            params={"channel": args.channel},
            content=args.file.read_bytes(),
            headers={"content-type": "text/csv"},
        )
    params = {"from": args.start, "to": args.end or args.start}
    if args.channel:
        params["channel"] = args.channel
    if args.csv:
        params["format"] = "csv"
    return client.get("/admin/v1/recon/drift", params=params)


def run(args: argparse.Namespace) -> int:
    """Call the admin API; print its answer, or the server's error message."""
    import httpx  # noqa: PLC0415 - heavy: not on --help

    origin = edge_origin(required(args.base_url, "TOLLWAY_BASE_URL", "--base-url"))
    token = required(args.admin_token, "TOLLWAY_ADMIN_TOKEN", "--admin-token")
    headers = {"authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=origin, headers=headers, timeout=30) as client:
            response = _call(client, args)
    except OSError as exc:
        sys.stderr.write(f"Cannot read {args.file}: {exc.strerror}\n")
        return 1
    except httpx.HTTPError as exc:
        sys.stderr.write(f"Cannot reach {origin} ({exc}): is the edge running?\n")
        return 1
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", "")
        sys.stderr.write(error_message(response.status_code, response.content, content_type))
        sys.stderr.write("\n")
        return 1
    if "csv" in response.headers.get("content-type", ""):
        sys.stdout.write(response.text)
    else:
        sys.stdout.write(json.dumps(response.json(), indent=2) + "\n")
    return 0
