"""Records of the log into typed values: only what the what-if needs, parsed with orjson.

Three event types matter (:data:`RECEIVED`, :data:`FINISHED`, :data:`HEALTH`), told apart by
their ``type`` near the start of the raw record, before any parsing; every other record is
skipped. Candidates and prices repeat across requests and are built once. A record that does
not decode (a poison record the services sent to a dead-letter topic) is counted and skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from tollway.events.pricing import CostPrice, Price, Usage
from tollway.whatif.engine import CIRCUIT_OPEN, Channels, Circuits, LoggedRequest, Route

RECEIVED = b'"type":"request.received"'
FINISHED = b'"type":"request.finished"'
HEALTH = b'"type":"router.channel_health_changed"'
SNIFF = 160  # the envelope's type comes right after its id


def us_of(moment: datetime) -> int:
    """Microseconds since the epoch (an aware instant)."""
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _us(iso: str) -> int:
    return us_of(datetime.fromisoformat(iso))


@dataclass(frozen=True, slots=True)
class LogRead:
    """What the log holds of a period: its requests, and the circuits and channels it shows."""

    requests: list[LoggedRequest]
    circuits: Circuits
    channels: Channels
    unreadable: int = 0  # records of the three types that did not decode (poison), skipped


@dataclass(slots=True)
class _Finish:
    served_channel_id: str | None
    served_bucket: str | None
    usage: Usage | None
    price: Price | None
    skipped_open: frozenset[str]


@dataclass(slots=True)
class Decoder:
    """Turns raw records into typed values, sharing what repeats (candidates, prices)."""

    start_us: int
    end_us: int
    received: dict[str, LoggedRequest] = field(default_factory=dict)
    finished: dict[str, _Finish] = field(default_factory=dict)
    circuits: Circuits = field(default_factory=Circuits)
    channels: Channels = field(default_factory=Channels)
    unreadable: int = 0
    _routes: dict[Any, Route] = field(default_factory=dict)
    _prices: dict[Any, Price] = field(default_factory=dict)

    def feed(self, raw: bytes) -> None:
        """Take one record; one that does not decode is counted in ``unreadable``, not fatal."""
        head = raw[:SNIFF]
        try:
            if RECEIVED in head:
                self._received(orjson.loads(raw))
            elif FINISHED in head:
                self._finished(orjson.loads(raw))
            elif HEALTH in head:
                self._health(orjson.loads(raw))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            # A poison record (the consumers sent it to a dead-letter topic): skip it here too.
            # pydantic's ValidationError is a ValueError.
            self.unreadable += 1

    def _health(self, data: dict[str, Any]) -> None:
        payload = data["payload"]
        is_open = payload["to_state"] == "open"
        self.circuits.observe(payload["channel_id"], _us(data["occurred_at"]), is_open=is_open)

    def _received(self, data: dict[str, Any]) -> None:
        at = _us(data["occurred_at"])
        if not self.start_us <= at < self.end_us:
            return
        p = data["payload"]
        plan = tuple(self._route(c) for c in p["plan"])
        for route in plan:
            self.channels.see(route, at)
        self.received[p["request_id"]] = LoggedRequest(
            request_id=p["request_id"],
            at_us=at,
            account_id=p["account_id"],
            key_id=p["key_id"],
            project_id=p["project_id"],
            model=p["catalog_model"],
            plan=plan,
        )

    def _finished(self, data: dict[str, Any]) -> None:
        p = data["payload"]
        served = p.get("served_attempt") is not None and p.get("price") is not None
        self.finished[p["request_id"]] = _Finish(
            served_channel_id=p.get("served_channel_id") if served else None,
            served_bucket=p.get("served_bucket"),
            usage=Usage.model_validate(p["usage"]) if served else None,
            price=self._price(p["price"]) if served else None,
            skipped_open=frozenset(
                s["channel_id"] for s in p.get("skipped") or () if s["reason"] == CIRCUIT_OPEN
            ),
        )

    def _price(self, raw: dict[str, Any]) -> Price:
        key = tuple(raw.items())
        found = self._prices.get(key)
        if found is None:
            found = self._prices[key] = Price.model_validate(raw)
        return found

    def _route(self, c: dict[str, Any]) -> Route:
        cost = c.get("cost")
        key = (
            c["channel_id"],
            c["channel"],
            c["route_type"],
            c["bucket"],
            tuple(c["price"].items()),
            tuple(cost.items()) if cost else None,
        )
        found = self._routes.get(key)
        if found is None:
            found = self._routes[key] = Route(
                channel_id=c["channel_id"],
                channel=c["channel"],
                route_type=c["route_type"],
                bucket=c["bucket"],
                price=self._price(c["price"]),
                cost=CostPrice.model_validate(cost) if cost else None,
            )
        return found

    def requests(self) -> list[LoggedRequest]:
        """The period's requests joined with their finish, in the order they were received."""
        out = []
        for request in sorted(self.received.values(), key=lambda r: r.at_us):
            finish = self.finished.get(request.request_id)
            if finish is None:
                out.append(request)
                continue
            served = _served(request, finish)
            if served is not None:
                self.circuits.observe(served.channel_id, request.at_us, is_open=False)
            for channel_id in finish.skipped_open:
                self.circuits.observe(channel_id, request.at_us, is_open=True)
            out.append(
                LoggedRequest(
                    request_id=request.request_id,
                    at_us=request.at_us,
                    account_id=request.account_id,
                    key_id=request.key_id,
                    project_id=request.project_id,
                    model=request.model,
                    plan=request.plan,
                    served=served,
                    usage=finish.usage if served is not None else None,
                    skipped_open=finish.skipped_open,
                )
            )
        self.circuits.seal()
        return out


def _served(request: LoggedRequest, finish: _Finish) -> Route | None:
    """The served candidate of the plan, at the price the router settled it at."""
    if finish.served_channel_id is None or finish.price is None:
        return None
    found = next(
        (
            c
            for c in request.plan
            if c.channel_id == finish.served_channel_id and c.bucket == finish.served_bucket
        ),
        None,
    )
    if found is None:  # not in its own plan: price it, its cost price unknown
        bucket = finish.served_bucket or ""
        channel = finish.served_channel_id
        return Route(channel, channel, "unknown", bucket, finish.price, None)
    if found.price != finish.price:
        return Route(
            found.channel_id,
            found.channel,
            found.route_type,
            found.bucket,
            finish.price,
            found.cost,
        )
    return found
