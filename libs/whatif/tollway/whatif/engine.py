"""Price one logged request under a what-if policy: pure, no IO, no clock.

A request is what the log says of it (:class:`LoggedRequest`): who asked for which catalog
model, the plan the router had (each candidate with its sell and upstream cost price at the
time), the route that served it and the tokens the upstream reported. Under a policy it keeps
its tokens and moves to another route (:func:`price_request`):

1. the first move rule that selects it (model, project, key) names a channel or a route type:
   a channel whose circuit was open at the time, or a route type whose candidates in the plan
   were all open, makes the request *would have failed*, counted apart and never priced as a
   success; a route type its plan has no candidate of, or a channel whose price nothing gives,
   makes it *unroutable*;
2. else a primary rule of its model puts that channel first: open at the time, the plan behind
   it serves as it did;
3. else it stays where it was served.

A request already served by what the rule asks for stays there. The price table override then
replaces the chosen channel's sell and cost prices. Charges and costs are
:func:`~tollway.events.pricing.cost_micro` and
:func:`~tollway.events.pricing.upstream_cost_micro` of the same tokens: the one rounding, per
request, so every sum is exact. A cost is known only where the channel has a cost price.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from tollway.events.pricing import CostPrice, Price, Usage, cost_micro, upstream_cost_micro

if TYPE_CHECKING:
    from tollway.whatif.policy import Policy, PriceOverride

CIRCUIT_OPEN = "circuit_open"
OutcomeKind = Literal["compared", "alternative_failed", "unroutable", "not_served"]


@dataclass(frozen=True, slots=True)
class Route:
    """A candidate as the what-if needs it: where it settles and what it sells and costs at."""

    channel_id: str
    channel: str
    route_type: str
    bucket: str
    price: Price
    cost: CostPrice | None = None

    def named(self, ref: str) -> bool:
        """``ref`` is this channel's id or name."""
        return ref in (self.channel_id, self.channel)


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request of the period, as gw.requests and gw.usage tell it."""

    request_id: str
    at_us: int  # received (envelope ``occurred_at``), microseconds since the epoch
    account_id: str
    key_id: str
    project_id: str
    model: str
    plan: tuple[Route, ...]
    served: Route | None = None
    usage: Usage | None = None
    # Channels this request's router skipped because their circuit was open.
    skipped_open: frozenset[str] = frozenset()


@dataclass(slots=True)
class Circuits:
    """Each channel's circuit over time, from what the log observed.

    Observations: a health transition (open when it moved to ``open``), a candidate skipped as
    ``circuit_open`` (open), a request served by the channel (not open). The state at an
    instant is the latest observation at or before it; a channel never observed was closed.
    """

    _times: dict[str, list[int]] = field(default_factory=dict)
    _open: dict[str, list[bool]] = field(default_factory=dict)
    _pending: dict[str, list[tuple[int, bool]]] = field(default_factory=dict)

    def observe(self, channel_id: str, at_us: int, *, is_open: bool) -> None:
        """Record that ``channel_id``'s circuit was (not) open at ``at_us``."""
        self._pending.setdefault(channel_id, []).append((at_us, is_open))

    def seal(self) -> Circuits:
        """Sort the observations (after the last :meth:`observe`, before any lookup)."""
        for channel_id, pending in self._pending.items():
            earlier = zip(
                self._times.get(channel_id, ()), self._open.get(channel_id, ()), strict=True
            )
            seen = sorted([*earlier, *pending])
            self._times[channel_id] = [t for t, _ in seen]
            self._open[channel_id] = [o for _, o in seen]
        self._pending = {}
        return self

    def open_at(self, channel_id: str, at_us: int) -> bool:
        """Whether ``channel_id``'s circuit was open at ``at_us``."""
        times = self._times.get(channel_id)
        if not times:
            return False
        i = bisect.bisect_right(times, at_us)
        return i > 0 and self._open[channel_id][i - 1]


@dataclass(slots=True)
class Channels:
    """Every channel as the period's plans showed it, for a target outside a request's plan."""

    _seen: dict[str, list[tuple[int, Route]]] = field(default_factory=dict)
    _names: dict[str, str] = field(default_factory=dict)

    def see(self, route: Route, at_us: int) -> None:
        """Record ``route`` as its channel looked at ``at_us`` (a change of price is kept)."""
        seen = self._seen.setdefault(route.channel_id, [])
        if not seen or seen[-1][1] != route:
            seen.append((at_us, route))
        self._names[route.channel] = route.channel_id

    def at(self, ref: str, at_us: int) -> Route | None:
        """The channel (id or name) as last seen at or before ``at_us``, else as first seen."""
        seen = self._seen.get(ref) or self._seen.get(self._names.get(ref, ""))
        if not seen:
            return None
        i = bisect.bisect_right([t for t, _ in seen], at_us)
        return seen[max(i - 1, 0)][1]


@dataclass(frozen=True, slots=True)
class Priced:
    """A request on a route: what the tenant is charged and what the upstream costs."""

    route: Route
    charge_micro: int  # micro-units of the route's bucket
    cost_micro: int | None  # micro-units of the route's cost currency; None: no cost price


@dataclass(frozen=True, slots=True)
class Outcome:
    """A request under the policy, next to how it was served."""

    request: LoggedRequest
    kind: OutcomeKind
    current: Priced | None = None
    alternative: Priced | None = None
    reason: str = ""


def price(route: Route, usage: Usage) -> Priced:
    """``usage`` on ``route``, each amount rounded once."""
    cost = None if route.cost is None else upstream_cost_micro(usage, route.cost)
    return Priced(route, cost_micro(usage, route.price), cost)


def price_request(
    request: LoggedRequest, policy: Policy, circuits: Circuits, channels: Channels
) -> Outcome:
    """Price ``request`` as served and under ``policy`` (see the module docstring)."""
    if request.served is None or request.usage is None:
        return Outcome(request, "not_served", reason="not served")
    current = price(request.served, request.usage)
    target, kind, reason = _choose(request, policy, circuits, channels)
    if target is None:
        return Outcome(request, kind, current, reason=reason)
    alternative = price(overridden(target, policy), request.usage)
    return Outcome(request, "compared", current, alternative)


def overridden(route: Route, policy: Policy) -> Route:
    """``route`` with the policy's price table override for its channel applied."""
    found = _override(route, policy)
    if found is None:
        return route
    return replace(route, price=found.sell or route.price, cost=found.cost or route.cost)


def _override(route: Route, policy: Policy) -> PriceOverride | None:
    return policy.prices.get(route.channel_id) or policy.prices.get(route.channel)


def _is_open(request: LoggedRequest, route: Route, circuits: Circuits) -> bool:
    return route.channel_id in request.skipped_open or circuits.open_at(
        route.channel_id, request.at_us
    )


Choice = tuple[Route | None, OutcomeKind, str]


def _choose(
    request: LoggedRequest, policy: Policy, circuits: Circuits, channels: Channels
) -> Choice:
    served = request.served
    if served is None:
        raise ValueError("only a served request has a route to move")
    rule = policy.move_for(request.model, request.project_id, request.key_id)
    if rule is not None and rule.channel is not None:
        return _to_channel(request, served, rule.channel, (policy, circuits, channels))
    if rule is not None and rule.route_type is not None:
        return _to_route_type(request, served, rule.route_type, circuits)
    primary = policy.primary_for(request.model)
    if primary is not None and not served.named(primary.channel):
        target = _find(request, primary.channel, policy, channels)
        if target is None:
            return None, "unroutable", f"no price known for channel {primary.channel}"
        if not _is_open(request, target, circuits):
            return target, "compared", ""
    return served, "compared", ""


def _to_channel(
    request: LoggedRequest, served: Route, ref: str, known: tuple[Policy, Circuits, Channels]
) -> Choice:
    policy, circuits, channels = known
    if served.named(ref):
        return served, "compared", ""
    target = _find(request, ref, policy, channels)
    if target is None:
        return None, "unroutable", f"no price known for channel {ref}"
    if _is_open(request, target, circuits):
        return None, "alternative_failed", f"{target.channel}: {CIRCUIT_OPEN}"
    return target, "compared", ""


def _to_route_type(
    request: LoggedRequest, served: Route, route_type: str, circuits: Circuits
) -> Choice:
    if served.route_type == route_type:
        return served, "compared", ""
    options = [c for c in request.plan if c.route_type == route_type]
    if not options:
        return None, "unroutable", f"no {route_type} route in the plan"
    target = next((c for c in options if not _is_open(request, c, circuits)), None)
    if target is None:
        return None, "alternative_failed", f"every {route_type} route: {CIRCUIT_OPEN}"
    return target, "compared", ""


def _find(request: LoggedRequest, ref: str, policy: Policy, channels: Channels) -> Route | None:
    """The channel ``ref`` for this request.

    In its plan, else as the period's plans showed it, else as the override describes it (a
    sell price, a bucket and a route type).
    """
    found = next((c for c in request.plan if c.named(ref)), None) or channels.at(ref, request.at_us)
    if found is not None:
        return found
    over = policy.prices.get(ref)
    if over is None or over.sell is None or over.bucket is None or over.route_type is None:
        return None
    return Route(ref, ref, over.route_type, over.bucket, over.sell, over.cost)
