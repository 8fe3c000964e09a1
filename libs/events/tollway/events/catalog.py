"""Which events travel on which topic, who writes them and who reads them.

The AsyncAPI document (``docs/asyncapi.json``) is generated from this table, the topic specs in
``topics.py`` and the registered payload models; a test fails when a registered event type is
on no topic here, or when the committed document is stale (``make asyncapi`` rewrites it).
"""

from __future__ import annotations

from dataclasses import dataclass

from tollway.events import topics


@dataclass(frozen=True, slots=True)
class Channel:
    """A topic as the services use it."""

    address: str
    key: str
    summary: str
    publishers: tuple[str, ...]
    subscribers: tuple[str, ...]
    events: tuple[str, ...]


REPLIES_ADDRESS = topics.replies_topic("{edge_id}")

CHANNELS: tuple[Channel, ...] = (
    Channel(
        topics.REQUESTS,
        "billing account id",
        "Commands for the ledger: requests to authorize, top-ups, budgets and task envelopes,"
        " channel price changes (key: system:prices), re-ratings of past charges; imported invoice"
        " lines (key: system:recon); operators' velocity limits for the limits service.",
        ("edge",),
        ("ledger", "limits"),
        (
            "request.received",
            "topup.requested",
            "budget.set",
            "budget.removed",
            "task.opened",
            "task.closed",
            "velocity_limit.set",
            "reversal.requested",
            "adjustment.requested",
            "price_table.change_requested",
            "rerate.requested",
            "rerate.cost_requested",
            "recon.invoice_line_imported",
        ),
    ),
    Channel(
        topics.AUTHORIZED,
        "billing account id",
        "Requests the ledger placed a hold for; the router may call upstream.",
        ("ledger",),
        ("router",),
        ("request.authorized",),
    ),
    Channel(
        REPLIES_ADDRESS,
        "request id",
        "One reply topic per edge instance: rejections, final answers and streamed chunks for"
        " its clients.",
        ("ledger", "router"),
        ("edge",),
        ("request.rejected", "reply.final", "reply.chunk", "reply.stream_end"),
    ),
    Channel(
        topics.USAGE,
        "billing account id",
        "Every upstream attempt (failed ones included), the end of each request, requests to"
        " keep a hold open longer, and the ledger's clock ticks (one per partition) that expire"
        " overdue holds at a fixed place in the log.",
        ("router", "ledger"),
        ("ledger", "limits"),
        (
            "attempt.finished",
            "request.finished",
            "hold.extension_requested",
            "ledger.clock_ticked",
        ),
    ),
    Channel(
        topics.LEDGER_EVENTS,
        "account id",
        "The ledger's journal: holds, settlements, top-ups, budget thresholds and price-table"
        " versions (key: system:prices), re-ratings, invoice line revisions (key: system:recon),"
        " costs the upstreams reported. Replayable.",
        ("ledger",),
        ("limits",),
        (
            "ledger.hold_placed",
            "ledger.hold_rejected",
            "ledger.hold_settled",
            "ledger.hold_released",
            "ledger.topped_up",
            "ledger.topup_refused",
            "ledger.budget_threshold_crossed",
            "ledger.hold_expired",
            "ledger.hold_extended",
            "ledger.late_captured",
            "ledger.reversed",
            "ledger.adjusted",
            "ledger.correction_refused",
            "ledger.upstream_loss_recorded",
            "ledger.upstream_cost_booked",
            "ledger.price_table_changed",
            "ledger.rerated",
            "ledger.rerate_applied",
            "ledger.upstream_cost_rerated",
            "ledger.upstream_cost_rerate_applied",
            "ledger.upstream_cost_rerate_refused",
            "ledger.recon_invoice_line_revised",
            "ledger.upstream_cost_reported",
        ),
    ),
    Channel(
        topics.CANCELS,
        "request id",
        "Clients that went away mid-stream; every router stops the upstream call it is making.",
        ("edge",),
        ("router",),
        ("request.cancelled",),
    ),
    Channel(
        topics.CHANNEL_HEALTH,
        "channel id",
        "Circuit transitions of upstream channels (compacted: the latest state per channel).",
        ("router",),
        (),
        ("router.channel_health_changed",),
    ),
    Channel(
        topics.ROUTE_CONFIG,
        "route tree",
        "Route tree changes made through the admin API; routers reload on each.",
        ("edge",),
        ("router",),
        ("router.route_tree_changed",),
    ),
    Channel(
        topics.BREAKERS,
        "scope:scope id",
        "Velocity breakers (compacted: the latest state per scope); operator resets come from"
        " the edge's admin API.",
        ("limits", "edge"),
        ("edge", "router", "limits"),
        ("breaker.tripped", "breaker.reset"),
    ),
    Channel(
        topics.ALERTS,
        "scope:scope id",
        "Alerts for operators: velocity, error rate, fallback spikes, model mix, spend, lag,"
        " budget thresholds (see docs/limits.md); reconciliation drift (from the ledger).",
        ("limits", "ledger"),
        ("ops",),
        ("limits.alert",),
    ),
)


def topics_of(event_type: str) -> list[str]:
    """The addresses of the channels that carry ``event_type``."""
    return [c.address for c in CHANNELS if event_type in c.events]
