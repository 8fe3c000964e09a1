"""Reconciliation use cases: an imported invoice line, and the drift alert it may raise.

Invoice lines arrive on gw.requests under ``system:recon`` (one partition orders every import),
so a line's revisions are numbered the same way live and in a replay. A line whose value is its
current one changes nothing (importing the same file twice is harmless); another value is the
next revision, journaled as ``ledger.recon_invoice_line_revised`` and kept beside the earlier
ones.

When an import's last line is applied (it names the days the file covers), each day's drift is
computed from the projection; when a basis
(``response``, ``invoice``) differs from what Tollway booked by more than the threshold
(:class:`ReconPolicy`, setting ``TOLLWAY_LEDGER_RECON_DRIFT_THRESHOLD``), one ``limits.alert`` is
published through the outbox, its id derived from (channel, day, basis, threshold): once per
crossing, however often the day is re-imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING

import structlog

from tollway.events import topics
from tollway.events.envelope import Envelope, make
from tollway.events.ids import derived_id
from tollway.events.limits import Alert, breaker_key
from tollway.events.pricing import format_micro
from tollway.ledger import recon, recon_store
from tollway.ledger.journal import emit, journal
from tollway.runtime.outbox import Outgoing

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import date

    import asyncpg

    from tollway.events.recon import InvoiceLineImported

log = structlog.get_logger(__name__)
DAY_SECONDS = 86_400
MAX_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class ReconPolicy:
    """When a channel-day's drift raises an alert: a relative difference above this (ppm)."""

    threshold_ppm: int = 10_000  # 1 %


async def import_line(
    conn: asyncpg.Connection, env: Envelope[InvoiceLineImported], policy: ReconPolicy
) -> list[Outgoing]:
    """Journal the line's next revision (none when unchanged); then check the day's drift."""
    p = env.payload
    out: list[Outgoing] = []
    latest = await recon_store.latest_line(conn, p.channel_id, p.invoice.day, p.invoice.key)
    revised = recon.decide_line(latest, p, env.id)
    if revised is None:
        log.info("invoice_line_unchanged", channel_id=p.channel_id, line=p.line)
    else:
        journal_env = emit(env, revised, "recon_invoice_line_revised")
        out.append(await journal(conn, journal_env))
        await recon_store.record_line(conn, journal_env.id, revised, env.occurred_at)
        log.info(
            "invoice_line_revised",
            channel_id=p.channel_id,
            day=p.invoice.day.isoformat(),
            revision=revised.revision,
        )
    for day in p.import_days:  # the import's last line: the whole invoice is in
        out.extend(await drift_alerts(conn, env, p.channel_id, day, policy))
    return out


async def drift_alerts(
    conn: asyncpg.Connection,
    cause: Envelope[InvoiceLineImported],
    channel_id: str,
    day: date,
    policy: ReconPolicy,
) -> list[Outgoing]:
    """An alert for each basis of the channel-day whose drift passes the threshold, once."""
    days = recon.drift(
        await recon_store.attempts(conn, channel_id, day, day),
        await recon_store.latest_lines(conn, channel_id, day, day),
    )
    out: list[Outgoing] = []
    for d in days:
        for basis in recon.BASES:
            c = d.comparison(basis)
            if basis == "invoice" and d.invoice_lines == 0:
                continue
            if not recon.exceeds(c.difference_micro, c.booked.cost_micro, policy.threshold_ppm):
                continue
            salt = f"recon_drift:{channel_id}:{day.isoformat()}:{basis}:{policy.threshold_ppm}"
            event_id = derived_id(channel_id, salt)
            if not await recon_store.claim_alert(
                conn, channel_id, day, basis, policy.threshold_ppm, event_id, cause.occurred_at
            ):
                continue
            out.append(_alert(d, basis, policy, event_id, cause))
    return out


async def response_alerts(
    conn: asyncpg.Connection, rows: Sequence[recon.ReconAttempt], policy: ReconPolicy
) -> list[Outgoing]:
    """After a folded batch: alert on a channel-day whose answers' costs drift past the threshold.

    Only a batch with an attempt whose reported cost differs from its booked one reads anything
    (one aggregate per such channel-day, none once the day has alerted).
    """
    differing: dict[tuple[str, date], list[recon.ReconAttempt]] = {}
    for r in rows:
        if r.reported_micro is not None and r.reported_micro != r.booked_micro:
            differing.setdefault((r.channel_id, r.day), []).append(r)
    out: list[Outgoing] = []
    for (channel_id, day), mine in sorted(differing.items()):
        ppm = policy.threshold_ppm
        if await recon_store.alerted(conn, channel_id, day, "response", ppm):
            continue
        requests, booked, reported, currency = await recon_store.response_totals(
            conn, channel_id, day
        )
        if not recon.exceeds(reported - booked, booked, ppm):
            continue
        d = recon.DayDrift(channel_id, day, currency)
        d.response.booked = recon.Side(requests=requests, cost_micro=booked)
        d.response.upstream = recon.Side(requests=requests, cost_micro=reported)
        d.differing = [{"request_id": r.request_id} for r in mine]
        salt = f"recon_drift:{channel_id}:{day.isoformat()}:response:{ppm}"
        event_id = derived_id(channel_id, salt)
        cause = max(mine, key=lambda r: (r.occurred_at, r.event_id))
        if await recon_store.claim_alert(
            conn, channel_id, day, "response", ppm, event_id, cause.occurred_at
        ):
            out.append(_alert(d, "response", policy, event_id, cause.occurred_at))
    return out


def _alert(
    d: recon.DayDrift,
    basis: str,
    policy: ReconPolicy,
    event_id: str,
    cause: Envelope[InvoiceLineImported] | datetime,
) -> Outgoing:
    c = d.comparison(basis)
    rel = recon.relative(c.difference_micro, c.booked.cost_micro)
    currency = d.currency or ""
    message = (
        f"Channel {d.channel_id} on {d.day.isoformat()}: the upstream's {basis} says"
        f" {format_micro(c.upstream.cost_micro)} {currency}, Tollway booked"
        f" {format_micro(c.booked.cost_micro)} {currency} (difference"
        f" {format_micro(c.difference_micro)}, relative {rel if rel is not None else 'n/a'});"
        f" threshold {recon.unit_ppm(policy.threshold_ppm)}."
    )
    examples = [r["request_id"] or r["upstream_request_id"] for r in d.differing if r["request_id"]]
    alert = Alert(
        scope="channel",
        scope_id=d.channel_id,
        metric=f"recon_drift_{basis}",
        value=float(rel) if rel is not None else float(c.difference_micro),
        threshold=policy.threshold_ppm / recon.PPM,
        window_seconds=DAY_SECONDS,
        window_end=datetime.combine(d.day, time(), tzinfo=UTC) + timedelta(days=1),
        severity="warning",
        message=message,
        example_request_ids=examples[:MAX_EXAMPLES],
    )
    if isinstance(cause, datetime):
        env = make(alert, occurred_at=cause, event_id=event_id)
    else:
        env = make(alert, trace=cause.trace, occurred_at=cause.occurred_at, event_id=event_id)
    log.info("recon_drift_alert", channel_id=d.channel_id, day=d.day.isoformat(), basis=basis)
    return Outgoing.of(topics.ALERTS, breaker_key(alert.scope, alert.scope_id), env)
