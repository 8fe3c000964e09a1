"""The requests of a period, read from the log: gw.requests, gw.usage and router.health.

A raw consumer (no group, nothing committed, nothing written) seeks each partition of
gw.requests and gw.usage to the first record stamped at or after the period's start, reads up
to the end offsets it found when it began, and hands every record to
:class:`~tollway.whatif.decode.Decoder`, which keeps three event types: ``request.received``
(who, which model, the plan with every candidate's prices), ``request.finished`` (the served
channel, tokens, price, candidates skipped as ``circuit_open``) and
``router.channel_health_changed`` (router.health is read from its start: the circuit state the
period begins with). A request belongs to the period by its ``request.received`` time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError

from tollway.events import topics
from tollway.runtime.kafka import partitions_of
from tollway.whatif.decode import Decoder, LogRead, us_of
from tollway.whatif.engine import price_request
from tollway.whatif.report import Report

if TYPE_CHECKING:
    from tollway.whatif.engine import Channels, Circuits, LoggedRequest
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

Progress = Callable[[str, int, int], None]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


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
    decoder = Decoder(us_of(start), us_of(end))
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
    decoder: Decoder,
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


def _consume(cursor: _Cursor, messages: list[Any], decoder: Decoder) -> int:
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
