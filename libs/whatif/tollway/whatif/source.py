"""The requests of a period, read from the log: gw.requests, gw.usage and router.health.

A raw consumer (no group, nothing committed, nothing written) seeks each partition of
gw.requests and gw.usage to the first record stamped at or after the period's start, reads up
to the end offsets it found when it began, and decodes only what the what-if needs, with
orjson, from three event types: ``request.received`` (who, which model, the plan with every
candidate's prices), ``request.finished`` (the served channel, tokens, price, candidates skipped
as ``circuit_open``) and ``router.channel_health_changed`` (read from the topic's start: the
circuit state the period begins with). Every other record is skipped by its type, before
parsing. A request belongs to the period by its ``request.received`` time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError

from tollway.events import topics
from tollway.events.pricing import CostPrice, Price, Usage
from tollway.runtime.kafka import partitions_of
from tollway.whatif.engine import (
    CIRCUIT_OPEN,
    Channels,
    Circuits,
    LoggedRequest,
    Route,
    price_request,
)
from tollway.whatif.report import Report

if TYPE_CHECKING:
    from tollway.whatif.policy import Policy

log = structlog.get_logger(__name__)

# A request's usage is published within its deadline of its receipt; read gw.usage this far
# past the period's end (records stamped later are not read at all).
USAGE_SLACK = timedelta(hours=1)
# The edge publishes a request when it receives it; a record stamped this long after the
# period's end cannot be one of its requests.
REQUESTS_SLACK = timedelta(minutes=5)
CAUGHT_UP_SECONDS = 0.3
STALL_SECONDS = 60.0
RECEIVED = b'"type":"request.received"'
FINISHED = b'"type":"request.finished"'
HEALTH = b'"type":"router.channel_health_changed"'
SNIFF = 160  # the envelope's type comes right after its id

Progress = Callable[[str, int, int], None]


def _us(iso: str) -> int:
    return us_of(datetime.fromisoformat(iso))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def us_of(moment: datetime) -> int:
    """Microseconds since the epoch (an aware instant)."""
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


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
class _Decoder:
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


@dataclass(slots=True)
class _Cursor:
    start_offset: int
    stop_offset: int  # the end the broker reported when the read began
    stop_ms: int | None  # the first record stamped later is past the read
    next_offset: int = 0
    past_end: bool = False

    def ended(self, quiet: float) -> bool:
        """Nothing more of this partition belongs to the read.

        ``quiet``: seconds since the consumer last got any record, of any partition (one
        partition's records may wait behind another's in the consumer, so its own silence says
        nothing).
        """
        caught_up = self.next_offset >= self.stop_offset and quiet > CAUGHT_UP_SECONDS
        return self.past_end or caught_up


async def _cursors(
    consumer: AIOKafkaConsumer, start: datetime, end: datetime
) -> dict[TopicPartition, _Cursor]:
    """Seek every partition; the cursor says where its read ends."""
    timed = [
        *(await partitions_of(consumer, topics.REQUESTS)),
        *(await partitions_of(consumer, topics.USAGE)),
    ]
    health = await partitions_of(consumer, topics.CHANNEL_HEALTH)
    consumer.assign([*timed, *health])
    ends = await consumer.end_offsets([*timed, *health])
    begins = await consumer.beginning_offsets([*timed, *health])
    start_ms, began_ms = _ms(start), _ms(datetime.now(UTC))
    try:
        found = await consumer.offsets_for_times(dict.fromkeys(timed, start_ms))
    except Exception:  # noqa: BLE001 - a broker without a time index: read from the start
        log.info("whatif_time_lookup_unsupported")
        found = None
    cursors: dict[TopicPartition, _Cursor] = {}
    for tp in [*timed, *health]:
        if tp in health or found is None:
            offset = begins[tp]
        else:
            at = found.get(tp)
            if at is None:
                continue  # nothing stamped at or after the start
            offset = at.offset
        slack = REQUESTS_SLACK if tp.topic == topics.REQUESTS else USAGE_SLACK
        stop_ms = began_ms if tp in health else min(began_ms, _ms(end + slack))
        consumer.seek(tp, offset)
        cursors[tp] = _Cursor(offset, ends[tp], stop_ms, next_offset=offset)
    return cursors


async def read_period(
    bootstrap: str, start: datetime, end: datetime, progress: Progress | None = None
) -> LogRead:
    """The requests received in ``[start, end)``, the circuits and channels the log shows."""
    decoder = _Decoder(us_of(start), us_of(end))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
        fetch_max_wait_ms=50,
    )
    try:
        await consumer.start()
        cursors = await _cursors(consumer, start, end)
        total = sum(c.stop_offset - c.start_offset for c in cursors.values())
        await _drain(consumer, cursors, decoder, total, progress)
    finally:
        await consumer.stop()
    return LogRead(decoder.requests(), decoder.circuits, decoder.channels, decoder.unreadable)


async def _drain(
    consumer: AIOKafkaConsumer,
    cursors: dict[TopicPartition, _Cursor],
    decoder: _Decoder,
    total: int,
    progress: Progress | None,
) -> None:
    """Read every cursor's partition to its end.

    A partition ends at the first record stamped after its stop time (records written after
    the read began are never part of it), or once it reached the end offset the broker gave
    and the consumer then got nothing more for ``CAUGHT_UP_SECONDS`` (an embedded broker
    reports the end of its last batch, not of its last record). A log that gives nothing for
    ``STALL_SECONDS`` before that is an error, never a short read.
    """
    live = set(cursors)
    done, last_record = 0, time.monotonic()
    while live:
        batch = await consumer.getmany(*live, timeout_ms=100, max_records=50_000)
        now = time.monotonic()
        before = done
        for tp, messages in batch.items():
            done += _consume(cursors[tp], messages, decoder)
            last_record = now if messages else last_record
        quiet = now - last_record
        for tp in list(live):
            cursor = cursors[tp]
            if quiet > CAUGHT_UP_SECONDS:
                # The fetch position steps over offsets that hold no record (control records).
                cursor.next_offset = max(cursor.next_offset, await consumer.position(tp))
            if cursor.ended(quiet):
                live.discard(tp)
                consumer.pause(tp)
        if live and quiet > STALL_SECONDS:
            # Never a silently short read: the report would undercount the period.
            raise KafkaTimeoutError(f"the log gave nothing for {STALL_SECONDS:.0f} s")
        if progress is not None and done > before and live:
            # The broker's end offsets are a hint (see above): never report the end early.
            progress("read", done, max(total, done + 1))
    if progress is not None:
        progress("read", done, done)


def _consume(cursor: _Cursor, messages: list[Any], decoder: _Decoder) -> int:
    """Feed one partition's fetched records; how many belonged to the read."""
    taken = 0
    for m in messages:
        if cursor.stop_ms is not None and m.timestamp > cursor.stop_ms:
            cursor.past_end = True
            break
        taken += 1
        cursor.next_offset = m.offset + 1
        if m.value:
            decoder.feed(m.value)
    return taken


async def whatif(
    bootstrap: str,
    start: datetime,
    end: datetime,
    policy: Policy,
    progress: Progress | None = None,
) -> Report:
    """Read the period from the log and price it as served and under ``policy``."""
    read = await read_period(bootstrap, start, end, progress)
    return price_read(read, policy, start=start, end=end, progress=progress)


def price_read(
    read: LogRead,
    policy: Policy,
    *,
    start: datetime,
    end: datetime,
    progress: Progress | None = None,
) -> Report:
    """:func:`price_all` of what :func:`read_period` gave."""
    report = price_all(
        read.requests, read.circuits, read.channels, policy, start=start, end=end, progress=progress
    )
    report.unreadable = read.unreadable
    return report


def price_all(  # noqa: PLR0913 - the period, what the log gave, and the policy
    requests: list[LoggedRequest],
    circuits: Circuits,
    channels: Channels,
    policy: Policy,
    *,
    start: datetime,
    end: datetime,
    progress: Progress | None = None,
) -> Report:
    """Every request priced both ways, summed into a report (pure)."""
    report = Report(start.astimezone(UTC), end.astimezone(UTC), units=dict(policy.units))
    for i, request in enumerate(requests, 1):
        report.add(price_request(request, policy, circuits, channels))
        if progress is not None and i % 20_000 == 0 and i < len(requests):
            progress("price", i, len(requests))
    if progress is not None:
        progress("price", len(requests), len(requests))
    return report
