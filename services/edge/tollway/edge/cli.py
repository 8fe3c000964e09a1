"""Budgets: define, list and delete spend limits through the admin API.

``tollway budgets set|list|rm`` talks to the edge's ``/admin/v1/budgets`` with the admin token
(``TOLLWAY_BASE_URL`` and ``TOLLWAY_ADMIN_TOKEN``, as ``make dev`` writes them to
``.tollway/dev.env``), so a budget set here takes the same path as one set over HTTP.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import httpx
import orjson

if TYPE_CHECKING:
    import argparse

SCOPES = ("account", "key", "project", "route_type", "channel", "model", "task")
WINDOWS = ("minute", "hour", "day", "month", "lifetime")


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``set``, ``list`` and ``rm``."""
    parser.add_argument("--base-url", default=os.environ.get("TOLLWAY_BASE_URL", ""))
    parser.add_argument("--admin-token", default=os.environ.get("TOLLWAY_ADMIN_TOKEN", ""))
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
    """Call the admin API; print its JSON answer, or its error and what to do next."""
    if not args.base_url or not args.admin_token:
        sys.stderr.write(
            "Set TOLLWAY_BASE_URL and TOLLWAY_ADMIN_TOKEN (or --base-url/--admin-token);"
            " `make dev` writes them to .tollway/dev.env.\n"
        )
        return 2
    headers = {"authorization": f"Bearer {args.admin_token}"}
    try:
        with httpx.Client(base_url=args.base_url, headers=headers, timeout=15) as client:
            response = _call(client, args)
    except httpx.HTTPError as exc:
        sys.stderr.write(f"Cannot reach {args.base_url} ({exc}): is the edge running?\n")
        return 1
    if response.status_code >= 400:
        error = response.json().get("error", {}) if response.content else {}
        param = f" (parameter: {error['param']})" if error.get("param") else ""
        sys.stderr.write(f"{response.status_code}: {error.get('message', response.text)}{param}\n")
        return 1
    sys.stdout.write(orjson.dumps(response.json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
