"""Reconciliation use cases: an imported invoice line, and the drift alert it may raise.

Invoice lines arrive on gw.requests under ``system:recon`` (one partition orders every import),
so a line's revisions are numbered the same way live and in a replay. A line whose value is its
current one changes nothing (importing the same file twice is harmless); another value is the
next revision, journaled as ``ledger.recon_invoice_line_revised`` and kept beside the earlier
ones.

After each new revision the channel-day's drift is computed from the projection; when a basis
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
    latest = await recon_store.latest_line(conn, p.channel_id, p.invoice.day, p.invoice.key)
    revised = recon.decide_line(latest, p, env.id)
    if revised is None:
        log.info("invoice_line_unchanged", channel_id=p.channel_id, line=p.line)
        return []
    journal_env = emit(env, revised, "recon_invoice_line_revised")
    message = await journal(conn, journal_env)
    await recon_store.record_line(conn, journal_env.id, revised, env.occurred_at)
    log.info(
        "invoice_line_revised",
        channel_id=p.channel_id,
        day=p.invoice.day.isoformat(),
        revision=revised.revision,
    )
    return [message, *await drift_alerts(conn, env, p.channel_id, policy)]


async def drift_alerts(
    conn: asyncpg.Connection,
    cause: Envelope[InvoiceLineImported],
    channel_id: str,
    policy: ReconPolicy,
) -> list[Outgoing]:
    """An alert for each basis of the channel-day whose drift passes the threshold, once."""
    day = cause.payload.invoice.day
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
            out.append(_alert(cause, d, basis, policy, event_id))
    return out


def _alert(
    cause: Envelope[InvoiceLineImported],
    d: recon.DayDrift,
    basis: str,
    policy: ReconPolicy,
    event_id: str,
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
    env = make(alert, trace=cause.trace, occurred_at=cause.occurred_at, event_id=event_id)
    log.info("recon_drift_alert", channel_id=d.channel_id, day=d.day.isoformat(), basis=basis)
    return Outgoing.of(topics.ALERTS, breaker_key(alert.scope, alert.scope_id), env)
