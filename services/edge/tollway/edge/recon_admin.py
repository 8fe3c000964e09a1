"""Reconciliation's HTTP API under ``/admin/v1/recon`` (bearer admin token).

- ``POST /admin/v1/recon/imports?channel=<id>``: the body is an invoice CSV
  (:mod:`tollway.edge.recon_import`). The whole file is checked first: a bad line is a 400
  naming its line number and nothing is published. Then each line becomes one
  ``InvoiceLineImported`` on gw.requests under ``system:recon``; the ledger journals a line's new
  value as its next revision and ignores a value it already has, so sending the same file again
  (after a 503, say) changes nothing. 202: the ledger applies the lines within moments.
- ``GET /admin/v1/recon/drift?channel=&from=&to=[&format=csv]``: per channel and UTC day, what
  Tollway booked against what the upstream reported (in its answers and its invoice), absolute
  and relative difference, and the requests that differ (``tollway.ledger.recon``).
"""

from __future__ import annotations

import asyncio
import re
from datetime import date
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from litestar.params import Parameter

from tollway.edge import errors
from tollway.edge.admin_auth import require_admin
from tollway.edge.audit import actor_of
from tollway.edge.recon_import import InvoiceFormatError, parse_invoice
from tollway.edge.route_tree import SLUG
from tollway.events import topics
from tollway.events.envelope import encode, make
from tollway.events.recon import InvoiceLineImported
from tollway.ledger import recon, recon_store
from tollway.runtime.tracing import headers_out

CONFIRM_SECONDS = 15
MAX_DAYS = 366
CHANNEL_EXISTS = "SELECT 1 FROM router.channels WHERE id = $1"
RETRY = "Send the same file again: lines the ledger already has are not imported twice."


def _channel(value: str | None, *, required: bool) -> str | None:
    """A channel id as the route admin accepts them (checked before any query)."""
    if not value:
        if required:
            raise errors.InvalidRequestError("'channel' is required.", param="channel")
        return None
    if not re.fullmatch(SLUG, value):
        raise errors.InvalidRequestError("'channel' is not a channel id.", param="channel")
    return value


def _day(value: str | None, param: str) -> date:
    if value is None:
        raise errors.InvalidRequestError(f"'{param}' is required (YYYY-MM-DD).", param=param)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise errors.InvalidRequestError(
            f"'{param}' must be a day, like 2026-01-31.", param=param
        ) from None


async def _publish(request: Request[Any, Any, Any], envelopes: list[Any]) -> None:
    """Send every line, then wait for the broker to confirm them all (else 503)."""
    producer = request.app.state.producer
    headers = list(headers_out())
    key = topics.RECON_KEY.encode()
    try:
        sent = [
            await producer.send(topics.REQUESTS, value=encode(e), key=key, headers=headers)
            for e in envelopes
        ]
        await asyncio.wait_for(asyncio.gather(*sent), timeout=CONFIRM_SECONDS)
    except Exception as exc:
        raise errors.DependencyDownError(
            f"The event log did not confirm the import within {CONFIRM_SECONDS}s. {RETRY}"
        ) from exc


class ReconAdminController(Controller):
    """Import upstream invoices and read the drift against what Tollway booked."""

    path = "/admin/v1/recon"
    tags = ["reconciliation"]  # noqa: RUF012
    dependencies = {"_admin": Provide(require_admin, sync_to_thread=False)}  # noqa: RUF012

    @post("/imports", status_code=202)
    async def import_invoice(
        self, request: Request[Any, Any, Any], _admin: None, channel: str | None = None
    ) -> dict[str, Any]:
        """Import a channel's invoice CSV: all lines or none."""
        channel = _channel(channel, required=True)
        async with request.app.state.pool.acquire() as conn:
            if not await conn.fetchval(CHANNEL_EXISTS, channel):
                raise errors.NotFoundError(f"No channel '{channel}'.", param="channel")
        try:
            invoice = parse_invoice(await request.body())
        except InvoiceFormatError as exc:
            raise errors.InvalidRequestError(
                f"The invoice was not imported: {exc}.",
                param="file",
                code="invalid_invoice",
                details={"line": exc.line},
            ) from None
        actor = actor_of(request)
        days = sorted({line.day for _, line in invoice.lines})
        if len(days) > MAX_DAYS:
            raise errors.InvalidRequestError(
                f"An invoice may cover at most {MAX_DAYS} days; split the file.", param="file"
            )
        last = len(invoice.lines) - 1
        envelopes = [
            make(
                InvoiceLineImported(
                    channel_id=channel,
                    invoice=line,
                    import_id=invoice.import_id,
                    line=number,
                    actor=actor,
                    # The last line closes the import: the ledger checks its days' drift then.
                    import_days=days if i == last else [],
                )
            )
            for i, (number, line) in enumerate(invoice.lines)
        ]
        await _publish(request, envelopes)
        return {
            "channel_id": channel,
            "import_id": invoice.import_id,
            "lines": len(envelopes),
            "days": [d.isoformat() for d in days],
            "event_ids": [e.id for e in envelopes],
        }

    @get("/drift")
    async def drift(
        self,
        request: Request[Any, Any, Any],
        _admin: None,
        channel: str | None = None,
        from_: str | None = Parameter(query="from", default=None),
        to: str | None = None,
        fmt: str = Parameter(query="format", default="json"),
    ) -> Response[Any]:
        """Booked against reported, per channel and UTC day from ``from`` to ``to`` (inclusive)."""
        channel = _channel(channel, required=False)
        start = _day(from_, "from")
        end = _day(to, "to") if to is not None else start
        if end < start or (end - start).days >= MAX_DAYS:
            raise errors.InvalidRequestError(
                f"'to' must be on or after 'from', at most {MAX_DAYS} days later.", param="to"
            )
        if fmt not in {"json", "csv"}:
            raise errors.InvalidRequestError("'format' must be json or csv.", param="format")
        async with request.app.state.pool.acquire() as conn:
            days = recon.drift(
                await recon_store.attempts(conn, channel, start, end),
                await recon_store.latest_lines(conn, channel, start, end),
            )
        if fmt == "csv":
            name = f"drift-{channel or 'all'}-{start}-{end}.csv"
            return Response(
                recon.as_csv(days),
                media_type="text/csv",
                headers={"content-disposition": f'attachment; filename="{name}"'},
            )
        body = {
            "channel_id": channel,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "days": [d.as_json() for d in days],
        }
        return Response(body)
