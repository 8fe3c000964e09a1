"""Topic names, partition counts and partition keys: the only place they are spelled.

gw.requests and gw.usage are keyed by billing account so that exactly one ledger consumer
decides for an account at a time (ARCHITECTURE invariant 3).
"""

from __future__ import annotations

from dataclasses import dataclass

REQUESTS = "gw.requests"
AUTHORIZED = "gw.authorized"
USAGE = "gw.usage"
CANCELS = "gw.cancels"
LEDGER_EVENTS = "ledger.events"
BREAKERS = "limits.breakers"
ALERTS = "limits.alerts"
CHANNEL_HEALTH = "router.health"
ROUTE_CONFIG = "router.config"
REPLIES_PREFIX = "gw.replies."
DLQ_SUFFIX = ".dlq"

# The price table's partition key on gw.requests (and its journal account on ledger.events): one
# partition, hence one ledger consumer, orders every price change and numbers its versions.
PRICE_TABLE_KEY = "system:prices"
# Imported invoice lines (gw.requests) and their revisions (ledger.events): one partition orders
# every import, so the ledger numbers a line's revisions the same way live and in a replay.
RECON_KEY = "system:recon"

FOREVER_MS = -1
SHORT_MS = 60 * 60 * 1000
THIRTY_DAYS_MS = 30 * 24 * 60 * 60 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How a topic is created: partitions, retention and compaction."""

    name: str
    partitions: int
    retention_ms: int = FOREVER_MS
    compacted: bool = False


def replies_topic(edge_id: str) -> str:
    """Each edge instance owns one reply topic."""
    return f"{REPLIES_PREFIX}{edge_id}"


def dlq_topic(topic: str) -> str:
    """Poison messages of ``topic`` go here with the reason."""
    return f"{topic}{DLQ_SUFFIX}"


def core_topics(partitions: int = 4) -> list[TopicSpec]:
    """The topics every deployment needs, with their dead-letter companions."""
    specs = [
        TopicSpec(REQUESTS, partitions),
        TopicSpec(AUTHORIZED, partitions),
        TopicSpec(USAGE, partitions),
        TopicSpec(CANCELS, 1, retention_ms=SHORT_MS),
        TopicSpec(LEDGER_EVENTS, partitions),
        TopicSpec(BREAKERS, partitions, compacted=True),
        TopicSpec(ALERTS, partitions, retention_ms=THIRTY_DAYS_MS),
        TopicSpec(CHANNEL_HEALTH, 1, compacted=True),
        TopicSpec(ROUTE_CONFIG, 1, retention_ms=SHORT_MS),
    ]
    dlqs = [
        TopicSpec(dlq_topic(s.name), 1) for s in specs if not s.compacted and s.name != ROUTE_CONFIG
    ]
    return specs + dlqs


def reply_topic_spec(edge_id: str, partitions: int = 1) -> TopicSpec:
    """The short-retention reply topic of one edge instance."""
    return TopicSpec(replies_topic(edge_id), partitions, retention_ms=SHORT_MS)
