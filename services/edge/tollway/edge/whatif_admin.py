"""What-if routing over HTTP: ``POST /admin/v1/whatif`` (admin token).

The body names a period and a policy (:mod:`tollway.whatif.policy`, as JSON); the answer is the
report of the period's logged requests priced as served and under the policy, as JSON or, with
``?format=csv``, as CSV. It reads the log (gw.requests, gw.usage, router.health) with a raw
consumer of its own and writes nothing: no balance, receipt, route or price changes. The
operator's what-if page runs the same function.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka.errors import KafkaError
from litestar import Controller, Request, Response, post
from litestar.di import Provide
from litestar.params import Parameter
from pydantic import BaseModel, ConfigDict, Field

from tollway.edge import errors
from tollway.edge.admin_auth import require_admin
from tollway.whatif.policy import Policy, PolicyError, parse_policy
from tollway.whatif.source import price_read, read_period

if TYPE_CHECKING:
    from tollway.whatif.report import Report

log = structlog.get_logger(__name__)

MAX_PERIOD_DAYS = 366
# The log's timestamps are milliseconds since 1970; a year far ahead leaves room for the slack
# the reader adds past the end.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class WhatIfBody(BaseModel):
    """A period of the log and the policy to price it under."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    start: str = Field(alias="from", description="ISO 8601 instant (UTC when naive)")
    end: str = Field(alias="to", description="ISO 8601 instant, exclusive")
    policy: dict[str, Any] = Field(description="rules, primary, prices and units")


def instant(value: str, param: str) -> datetime:
    """An ISO 8601 instant, or a 400 naming ``param``."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise errors.InvalidRequestError(
            f"'{param}' must be an ISO 8601 instant, like 2026-01-31T00:00:00Z.", param=param
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if not EARLIEST <= moment <= LATEST:
        raise errors.InvalidRequestError(
            f"'{param}' must be between {EARLIEST.year} and {LATEST.year}.", param=param
        )
    return moment


def period(start: str, end: str) -> tuple[datetime, datetime]:
    """``[from, to)``: to after from, at most a year long."""
    began, ended = instant(start, "from"), instant(end, "to")
    if ended <= began:
        raise errors.InvalidRequestError("'to' must be after 'from'.", param="to")
    if (ended - began).days > MAX_PERIOD_DAYS:
        raise errors.InvalidRequestError(
            f"A what-if covers at most {MAX_PERIOD_DAYS} days.", param="to"
        )
    return began, ended


def policy_of(data: Any) -> Policy:
    """The parsed policy, or a 400 ``invalid_policy`` naming the field."""
    try:
        return parse_policy(data)
    except PolicyError as exc:
        param = f"policy.{exc.field}" if exc.field and exc.field != "policy" else "policy"
        raise errors.InvalidRequestError(
            f"Invalid policy: {exc}.", code="invalid_policy", param=param
        ) from None


async def run_whatif(
    request: Request[Any, Any, Any], start: datetime, end: datetime, policy: Policy
) -> Report:
    """Read the period from the log, then price it off the event loop."""
    bootstrap: str = request.app.state.settings.kafka_bootstrap_servers
    began = time.perf_counter()
    try:
        read = await read_period(bootstrap, start, end)
    except KafkaError:
        raise errors.DependencyDownError(
            "The log cannot be read right now; try again.", code="log_unavailable"
        ) from None
    report = await asyncio.to_thread(price_read, read, policy, start=start, end=end)
    log.info(
        "whatif_priced",
        requests=report.requests,
        compared=report.total_current.requests,
        moved=report.moved,
        unreadable=report.unreadable,
        seconds=round(time.perf_counter() - began, 3),
    )
    return report


class WhatIfController(Controller):
    """What-if routing; needs the admin token."""

    path = "/admin/v1/whatif"
    dependencies = {"_admin": Provide(require_admin, sync_to_thread=False)}  # noqa: RUF012

    @post("/", status_code=200)
    async def whatif(
        self,
        request: Request[Any, Any, Any],
        data: WhatIfBody,
        _admin: None,
        fmt: str = Parameter(query="format", default="json"),
    ) -> Response[Any]:
        """Price the period's logged requests as served and under the policy; changes nothing."""
        if fmt not in {"json", "csv"}:
            raise errors.InvalidRequestError("'format' must be json or csv.", param="format")
        start, end = period(data.start, data.end)
        report = await run_whatif(request, start, end, policy_of(data.policy))
        if fmt == "csv":
            name = f"whatif-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}.csv"
            return Response(
                report.as_csv(),
                media_type="text/csv",
                headers={"content-disposition": f'attachment; filename="{name}"'},
            )
        return Response(report.as_json())
