"""What the router tells everyone about channel health (``router.health``, key: channel id).

The topic is compacted: the last transition per channel is its current circuit state, so a
reader that starts late (the edge, an operator's dashboard) still sees every open circuit.
"""

from __future__ import annotations

from typing import Literal

from tollway.events.envelope import Payload, register
from tollway.events.pricing import CostPrice, Price

CircuitState = Literal["closed", "open", "half_open"]


@register
class ChannelHealthChanged(Payload):
    """A channel's circuit moved (closed → open → half-open → closed), and why."""

    TYPE = "router.channel_health_changed"

    channel_id: str
    channel: str
    router_id: str
    from_state: CircuitState
    to_state: CircuitState
    reason: str
    error_rate: float
    samples: int
    p50_latency_ms: int
    cool_down_seconds: float


@register
class RouteTreeChanged(Payload):
    """An operator changed channels, catalog models or routes (``router.config``).

    Routers reload their channel cache and edges their plan cache when they see it; the audit
    trail of who changed what is the ``edge.audit`` table this event points at.
    """

    TYPE = "router.route_tree_changed"

    action: str
    subject: str
    audit_id: int


@register
class PriceTableChangeRequested(Payload):
    """An operator set a channel's prices (gw.requests, key: ``system:prices``).

    Published by the edge inside the route tree's transaction, so a change the log did not
    confirm is rolled back. ``previous`` is what the channel charged before, read in that same
    transaction (None for a new channel); prices are micro-units per 1M tokens of the bucket's
    unit. ``audit_id`` points at the ``edge.audit`` row of the change.
    """

    TYPE = "price_table.change_requested"

    channel_id: str
    bucket: str
    previous: Price | None = None
    prices: Price
    actor: str
    action: str
    audit_id: int
    # The channel's upstream cost price before and after (None: none set).
    previous_cost: CostPrice | None = None
    cost: CostPrice | None = None
