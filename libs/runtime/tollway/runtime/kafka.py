"""Kafka adapters: idempotent topic creation and a producer that speaks envelopes."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tollway.events.envelope import Envelope, encode

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tollway.events.topics import TopicSpec

log = structlog.get_logger(__name__)

FETCH_WAIT_ENV = "TOLLWAY_KAFKA_FETCH_WAIT_MS"


def fetch_wait_ms() -> int:
    """How long a fetch may wait at the broker for records (``TOLLWAY_KAFKA_FETCH_WAIT_MS``).

    Apache Kafka answers a waiting fetch as soon as a record arrives, so a long wait costs no
    latency; it only bounds how often an idle consumer asks again. 5 s by default: an idle
    stack then costs the broker and every consumer a fetch per consumer every 5 s instead of
    every 500 ms. It is not longer because a broker answers one connection's requests in order:
    an offset lookup queued behind a waiting fetch (a seek to the beginning after a rebalance)
    waits for it. A broker that always waits out the full time (the embedded Tansu does) needs a
    short one instead, and the dev stack sets 5 ms for it.
    """
    return int(os.environ.get(FETCH_WAIT_ENV, "5000"))


# How long a consumer loop blocks in ``getmany`` when it has nothing else to do. Records wake it
# at once; the timeout only bounds an idle loop's turns, so it is long.
IDLE_POLL_MS = 30_000


def consumer_options() -> dict[str, int]:
    """Waiting settings every consumer shares: block at the broker, do not spin in between.

    aiokafka's background fetcher also wakes every ``consumer_timeout_ms`` (200 ms by default)
    to look for work even when nothing changed; records, seeks and (re)assignments wake it by
    themselves, so it waits as long as a fetch may.
    """
    wait = fetch_wait_ms()
    return {"fetch_max_wait_ms": wait, "consumer_timeout_ms": max(200, wait)}


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic``, asking the broker when the consumer does not know it yet.

    ``partitions_for_topic`` reads only metadata already fetched, and the bootstrap metadata
    may list no topic at all (Apache Kafka 4 answers aiokafka's bootstrap request with none), so
    on its own it can miss a topic that exists, or a reader could fall back to partition 0 only.
    Raises ``UnknownTopicOrPartitionError`` when the broker does not have the topic.
    """
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        # aiokafka has no public call that fetches one topic's metadata into the consumer.
        partitions = await consumer._client._wait_on_metadata(topic)  # noqa: SLF001
    return [TopicPartition(topic, p) for p in sorted(partitions)]


def _topic_config(spec: TopicSpec) -> dict[str, str]:
    if spec.compacted:
        return {"cleanup.policy": "compact"}
    return {"retention.ms": str(spec.retention_ms)}


async def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec]) -> None:
    """Create missing topics with their partition counts; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="tollway-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(s.name, s.partitions, 1, topic_configs=_topic_config(s))
            for s in specs
            if s.name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except Exception as exc:  # noqa: BLE001 - a racing creator is fine; verify below
                log.info("topic_create_raced", error=type(exc).__name__)
            log.info("topics_created", topics=[t.name for t in missing])
    finally:
        await admin.close()


def new_producer(bootstrap: str, client_id: str, **overrides: Any) -> AIOKafkaProducer:
    """A producer tuned for the money path: acks from all replicas, no linger.

    Every message on the request path is waited for by a client: a linger only adds its time
    (measured: 1 ms of linger cost 6.7 ms at c=1 over the path's hops). Messages sent while a
    request to the broker is in flight still leave together in the next batch.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "acks": "all",
        "linger_ms": 0,
        "max_batch_size": 256 * 1024,
        # A send that cannot complete fails within 5 s instead of aiokafka's 40 s default, so
        # the outbox relay's own retry takes over quickly (seen once per fresh embedded Tansu
        # broker: the first send to a topic created after the producer started can stall; not
        # seen on Apache Kafka, where the shorter timeout is harmless).
        "request_timeout_ms": 5000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def publish(
    producer: AIOKafkaProducer, topic: str, key: str, envelope: Envelope[Any]
) -> None:
    """Send one envelope and wait for the broker's acknowledgement."""
    await producer.send_and_wait(topic, value=encode(envelope), key=key.encode())
