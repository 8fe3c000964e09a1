"""What the router tells everyone about channel health (``router.health``, key: channel id).

The topic is compacted: the last transition per channel is its current circuit state, so a
reader that starts late (the edge, an operator's dashboard) still sees every open circuit.
"""

from __future__ import annotations

from typing import Literal

from tollway.events.envelope import Payload, register

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
