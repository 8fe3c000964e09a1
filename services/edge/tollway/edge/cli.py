"""Budgets: define, list and delete spend limits through the admin API.

``tollway budgets set|list|rm`` talks to the edge's ``/admin/v1/budgets`` with the admin token
(``TOLLWAY_BASE_URL`` and ``TOLLWAY_ADMIN_TOKEN``, as ``make dev`` writes them to
``.tollway/dev.env``), so a budget set here takes the same path as one set over HTTP. The base
URL follows the rule of every ``tollway`` command (``tollway.events.cli_env``): the gateway's
``.../v1`` base, or the edge's origin.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from tollway.events.cli_env import edge_origin, error_message, from_env, required

if TYPE_CHECKING:
    import argparse

    import httpx

SCOPES = ("account", "key", "project", "route_type", "channel", "model", "task")
WINDOWS = ("minute", "hour", "day", "month", "lifetime")


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``set``, ``list`` and ``rm``."""
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
    put = sub.add_parser("set", help="create a budget (hard unless --soft)")
    put.add_argument("--account", required=True)
    put.add_argument("--name", required=True)
    put.add_argument("--scope", choices=SCOPES, default="account")
    put.add_argument("--scope-id", help="the key, project, route type, channel, model or task")
    put.add_argument("--window", choices=WINDOWS, default="lifetime")
    put.add_argument("--timezone", default="UTC", help="for day and month windows")
    put.add_argument("--unit", required=True, help="the bucket's unit, or 'tokens'")
    put.add_argument("--bucket", help="count only this bucket (money budgets)")
    put.add_argument("--amount", required=True, help="decimal units, or whole tokens")
    put.add_argument("--soft", action="store_true", help="alert at 50/80/100 %% only")
    show = sub.add_parser("list", help="an account's budgets with held and spent")
    show.add_argument("--account", required=True)
    rm = sub.add_parser("rm", help="delete a budget")
    rm.add_argument("budget_id")
    parser.set_defaults(run=run)


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body = {
        "account_id": args.account,
        "name": args.name,
        "scope": args.scope,
        "scope_id": args.scope_id,
        "window": args.window,
        "timezone": args.timezone,
        "unit": args.unit,
        "bucket": args.bucket,
        "amount": args.amount,
        "mode": "soft" if args.soft else "hard",
    }
    return {k: v for k, v in body.items() if v is not None}


def _call(client: httpx.Client, args: argparse.Namespace) -> httpx.Response:
    if args.action == "set":
        return client.post("/admin/v1/budgets", json=_body(args))
    if args.action == "list":
        return client.get("/admin/v1/budgets", params={"account_id": args.account})
    return client.delete(f"/admin/v1/budgets/{args.budget_id}")


def run(args: argparse.Namespace) -> int:
    """Call the admin API; print its JSON answer, or the server's error message."""
    import httpx  # noqa: PLC0415 - heavy: not on --help

    origin = edge_origin(required(args.base_url, "TOLLWAY_BASE_URL", "--base-url"))
    token = required(args.admin_token, "TOLLWAY_ADMIN_TOKEN", "--admin-token")
    headers = {"authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=origin, headers=headers, timeout=15) as client:
            response = _call(client, args)
    except httpx.HTTPError as exc:
        sys.stderr.write(f"Cannot reach {origin} ({exc}): is the edge running?\n")
        return 1
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", "")
        sys.stderr.write(error_message(response.status_code, response.content, content_type))
        sys.stderr.write("\n")
        return 1
    sys.stdout.write(json.dumps(response.json(), indent=2) + "\n")
    return 0
