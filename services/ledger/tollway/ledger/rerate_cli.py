"""What ``tollway ledger rerate`` runs: the edge's ``/admin/v1/rerates``, then its outcome.

Through the admin API, never the database: a re-rating from the command line is the same
command, audited the same way, as one made over HTTP. Standard library only (``urllib``).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from tollway.events.cli_env import edge_origin, error_message, required
from tollway.ledger.cli import PRICE_CLASSES

if TYPE_CHECKING:
    import argparse


class CallError(Exception):
    """The edge refused (its message) or could not be reached."""


def body(args: argparse.Namespace) -> dict[str, Any]:
    """The request the flags describe.

    The cost side sends ``cost`` (currency, prices, ``per_request``) instead of ``bucket`` and
    ``prices``; a sell-side flag given with it is sent as is, so the edge says why it is wrong.
    """
    prices = {k: getattr(args, k) for k in PRICE_CLASSES if getattr(args, k) is not None}
    allow: bool | list[str] = False
    if args.allow_negative is not None:
        allow = list(args.allow_negative) or True
    found: dict[str, Any] = {
        "correction_id": args.correction_id,
        "side": args.side,
        "channel_id": args.channel,
        "from": args.start,
        "to": args.end,
        "reason": args.reason,
        "dry_run": bool(args.dry_run),
    }
    if args.side == "cost":
        cost = {"currency": args.currency, **prices}
        if args.per_request is not None:
            cost["per_request"] = args.per_request
        found["cost"] = cost
        found |= {"bucket": args.bucket} if args.bucket is not None else {}
        found |= {"allow_negative": allow} if allow else {}
    else:
        found |= {"bucket": args.bucket, "prices": prices, "allow_negative": allow}
    if args.account:
        found["accounts"] = list(args.account)
    return found


def _call(origin: str, token: str, path: str, data: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - the operator's own edge URL
        origin + path,
        data=None if data is None else json.dumps(data).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        method="GET" if data is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        content_type = exc.headers.get("content-type", "") if exc.headers else ""
        raise CallError(error_message(exc.code, exc.read(), content_type)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise CallError(f"Cannot reach {origin} ({exc}): is the edge running?") from None


def _wait(origin: str, token: str, url: str, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    status = _call(origin, token, url)
    while status["status"] != "done" and time.monotonic() < deadline:
        time.sleep(0.5)
        status = _call(origin, token, url)
    return status


def run(args: argparse.Namespace) -> int:
    """Dry run or apply; with ``--apply``, wait up to ``--wait`` seconds for every account."""
    origin = edge_origin(required(args.base_url, "TOLLWAY_BASE_URL", "--base-url"))
    token = required(args.admin_token, "TOLLWAY_ADMIN_TOKEN", "--admin-token")
    try:
        answer = _call(origin, token, "/admin/v1/rerates", body(args))
        if args.apply and args.wait > 0:
            outcome = _wait(origin, token, answer["status_url"], args.wait)
            answer = {"accepted": answer, "outcome": outcome}
    except CallError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    sys.stdout.write(json.dumps(answer, indent=2) + "\n")
    return 0
